import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Testing
@testable import ShroudNet
import ShroudRelayCore

/// Runs the real server on a loopback port and talks to it over TCP.
@Suite struct HTTPEndpointServerTests {
    /// Sends raw request bytes and returns everything the server writes until it closes.
    private func exchange(_ request: String, port: Int, group: EventLoopGroup) async throws -> String {
        let channel = try await ClientBootstrap(group: group)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            var text = ""
            for try await var chunk in inbound { text += chunk.readString(length: chunk.readableBytes) ?? "" }
            return text
        }
    }

    @Test(.timeLimit(.minutes(1))) func servesHealthInfoAndStopsOnShutdown() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let config = try RelayConfiguration.resolve(flags: [.port: "0"], environment: [:], dotEnv: nil)
        let (bound, boundContinuation) = AsyncStream<Int>.makeStream()
        let server = HTTPEndpointServer(host: "127.0.0.1", port: 0, routes: HTTPRoutes(version: "t", configuration: config, metricsText: RelayMetricsExporter().render),
                                        group: group, logger: Logger(label: "test"),
                                        onBound: { boundContinuation.yield($0.port ?? 0) })
        let serviceGroup = ServiceGroup(services: [server], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await serviceGroup.run() }
            var iterator = bound.makeAsyncIterator()
            let port = try #require(await iterator.next())

            let health = try await exchange("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", port: port, group: group)
            #expect(health.hasPrefix("HTTP/1.1 200 OK"))
            #expect(health.hasSuffix(#"{"status":"ok"}"#))

            let missing = try await exchange("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", port: port, group: group)
            #expect(missing.hasPrefix("HTTP/1.1 404"))

            // Garbage is answered with 400 and the connection closed; the server keeps serving.
            let garbage = try await exchange("\u{1}\u{2}NOT HTTP\r\n\r\n", port: port, group: group)
            #expect(garbage.hasPrefix("HTTP/1.1 400"))
            let again = try await exchange("GET /info HTTP/1.0\r\n\r\n", port: port, group: group)
            #expect(again.contains(#""name":"shroud-relay""#))

            await serviceGroup.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        try await group.shutdownGracefully()
    }
}
