import Crypto
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import ServiceLifecycle
import Testing
@testable import ShroudNet
import ShroudRelayCore
import ShroudWire

/// A deterministic Ed25519 client identity.
struct SessionClientIdentity {
    let signingKey: Curve25519.Signing.PrivateKey
    let key: IdentityKey

    init(seed: UInt8) throws {
        signingKey = try Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: seed, count: 32))
        key = try IdentityKey(Array(signingKey.publicKey.rawRepresentation))
    }

    func answer(_ message: RelayMessage) throws -> RelayMessage {
        guard case let .challenge(nonce, deadline, binding) = message else { throw WireError.invalid(field: "challenge", reason: "\(message)") }
        let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: key)
        return .authenticate(identity: key, signature: try Ed25519Signature(Array(signingKey.signature(for: transcript))))
    }
}

private func testLimits() -> RelayLimits {
    var limits = RelayLimits(maximumConnections: 100, maximumConnectionsPerIP: 100, messageTTLMilliseconds: 60_000)
    // Other tests in the process may block the concurrency pool for seconds; the deadline itself
    // is tested in ShroudRelayCoreTests on a virtual clock.
    limits.authenticationTimeoutMilliseconds = 120_000
    return limits
}

/// The session handler on an `EmbeddedChannel`, byte for byte.
@Suite struct WebSocketSessionHandlerTests {
    private func makeChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let relay = Relay(store: InMemoryRelayStore(), relayBinding: "wss://relay.test/ws", limits: testLimits(),
                          random: SystemRandomNumberGenerator())
        let driver = RelaySessionDriver(relay: relay, loop: channel.embeddedEventLoop, logger: Logger(label: "test"),
                                        clock: { 1_700_000_000_000 })
        try channel.pipeline.syncOperations.addHandler(WebSocketSessionHandler(driver: driver))
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40000)).wait()
        channel.embeddedEventLoop.run()
        return channel
    }

    private func binary(_ channel: EmbeddedChannel, _ bytes: [UInt8]) throws {
        try channel.writeInbound(WebSocketFrame(fin: true, opcode: .binary, data: channel.allocator.buffer(bytes: bytes)))
        channel.embeddedEventLoop.run()
    }

    private func nextSessionFrame(_ channel: EmbeddedChannel) throws -> SessionFrame {
        let frame = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(frame.opcode == .binary && frame.fin && frame.maskKey == nil)
        return try SessionFrame(parsing: Array(frame.data.readableBytesView))
    }

    private func expectClose(_ channel: EmbeddedChannel, code: WebSocketErrorCode) throws {
        let frame = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(frame.opcode == .connectionClose)
        var data = frame.data
        #expect(data.readWebSocketErrorCode() == code)
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    @Test func challengeAnswerAndRequestsAsBinaryFrames() throws {
        let channel = try makeChannel()
        let challenge = try nextSessionFrame(channel)
        let alice = try SessionClientIdentity(seed: 1)
        try binary(channel, SessionFrame(requestID: 1, try alice.answer(challenge.message)).serialize())
        #expect(try nextSessionFrame(channel) == SessionFrame(requestID: 1, .ok))
        try binary(channel, SessionFrame(requestID: 2, .countPrekeys).serialize())
        #expect(try nextSessionFrame(channel) == SessionFrame(requestID: 2, .prekeyCount(0)))
        #expect(channel.isActive)
    }

    @Test func garbageGetsAnErrorAndACloseFrame() throws {
        let channel = try makeChannel()
        _ = try nextSessionFrame(channel)
        try binary(channel, [1, 2, 3])
        #expect(try nextSessionFrame(channel).message.type == .error)
        try expectClose(channel, code: .policyViolation)
    }

    @Test func textFramesAreRefused() throws {
        let channel = try makeChannel()
        _ = try nextSessionFrame(channel)
        try channel.writeInbound(WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(string: "hello")))
        try expectClose(channel, code: .unacceptableData)
    }

    @Test func pingIsAnsweredAndASilentClientIsPingedThenDropped() throws {
        let channel = try makeChannel()
        _ = try nextSessionFrame(channel)
        try channel.writeInbound(WebSocketFrame(fin: true, opcode: .ping, data: channel.allocator.buffer(bytes: [7, 7])))
        let pong = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(pong.opcode == .pong && Array(pong.data.readableBytesView) == [7, 7])
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        let ping = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(ping.opcode == .ping)
        #expect(channel.isActive)
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    /// A message of exactly the maximum size, in two fragments, reaches the relay core (which
    /// answers it); one byte more is refused by the transport and the connection closed.
    @Test func messageSizeLimitAtAndPast() throws {
        for extra in [0, 1] {
            let channel = EmbeddedChannel()
            let relay = Relay(store: InMemoryRelayStore(), relayBinding: "wss://relay.test/ws", limits: testLimits(),
                              random: SystemRandomNumberGenerator())
            let driver = RelaySessionDriver(relay: relay, loop: channel.embeddedEventLoop, logger: Logger(label: "test"), clock: { 1 })
            try channel.pipeline.syncOperations.addSessionHandlers(driver: driver)
            try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40000)).wait()
            channel.embeddedEventLoop.run()
            _ = try channel.readOutbound(as: WebSocketFrame.self) // the challenge
            let total = SessionTransportLimits.maximumMessageSize + extra
            let first = total / 2
            var bytes = [UInt8](repeating: 0, count: total)
            bytes[0] = SessionLimits.protocolVersion
            bytes[1] = RelayMessageType.authenticate.rawValue
            do {
                try channel.writeInbound(WebSocketFrame(fin: false, opcode: .binary, data: channel.allocator.buffer(bytes: bytes[..<first])))
                try channel.writeInbound(WebSocketFrame(fin: true, opcode: .continuation, data: channel.allocator.buffer(bytes: bytes[first...])))
            } catch {
                #expect(extra == 1, "only the oversized message is refused: \(error)")
            }
            channel.embeddedEventLoop.run()
            let reply = try channel.readOutbound(as: WebSocketFrame.self)
            if extra == 0 {
                // Reached the core: it did not parse as an answer, so an error frame came back.
                let frame = try #require(reply)
                #expect(frame.opcode == .binary)
                #expect(try RelayMessageType.error == SessionFrame(parsing: Array(frame.data.readableBytesView)).message.type)
            } else {
                #expect(reply == nil || reply?.opcode == .connectionClose)
                #expect(!channel.isActive)
            }
            _ = try? channel.finish()
        }
    }

    @Test func closingTheChannelDisconnectsTheSession() throws {
        let channel = EmbeddedChannel()
        let relay = Relay(store: InMemoryRelayStore(), relayBinding: "wss://relay.test/ws", limits: testLimits(),
                          random: SystemRandomNumberGenerator())
        let driver = RelaySessionDriver(relay: relay, loop: channel.embeddedEventLoop, logger: Logger(label: "test"), clock: { 1 })
        try channel.pipeline.syncOperations.addHandler(WebSocketSessionHandler(driver: driver))
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40000)).wait()
        channel.embeddedEventLoop.run()
        #expect(relay.connectionCount == 1)
        _ = try channel.finish()
        channel.embeddedEventLoop.run()
        #expect(relay.connectionCount == 0)
    }
}

extension SessionClientConnection {
    /// Connects and authenticates.
    static func login(_ identity: SessionClientIdentity, port: Int, group: EventLoopGroup) async throws -> SessionClientConnection {
        let client = try await connect(host: "127.0.0.1", port: port, group: group)
        let challenge = try await client.next()
        try await client.send(SessionFrame(requestID: 1, try identity.answer(challenge.message)))
        #expect(try await client.next() == SessionFrame(requestID: 1, .ok))
        return client
    }
}

/// The real server on a loopback port with a real WebSocket client: authentication, a sealed
/// message sent, delivered and acknowledged; /health still answers on the same port.
@Suite struct WebSocketLoopbackTests {
    @Test(.timeLimit(.minutes(1))) func authenticateSendDeliverAcknowledge() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let config = try RelayConfiguration.resolve(flags: [.port: "0", .adminToken: "admin-secret"], environment: [:], dotEnv: nil)
        let relay = Relay(store: InMemoryRelayStore(), relayBinding: "wss://relay.test/ws", limits: testLimits(),
                          random: SystemRandomNumberGenerator())
        let driver = RelaySessionDriver(relay: relay, loop: group.next(), logger: Logger(label: "test"))
        let (bound, boundContinuation) = AsyncStream<Int>.makeStream()
        let server = HTTPEndpointServer(host: "127.0.0.1", port: 0, routes: HTTPRoutes(version: "t", configuration: config, metricsText: RelayMetricsExporter().render),
                                        group: group, logger: Logger(label: "test"), sessions: driver,
                                        onBound: { boundContinuation.yield($0.port ?? 0) })
        let serviceGroup = ServiceGroup(services: [server], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await serviceGroup.run() }
            var ports = bound.makeAsyncIterator()
            let port = try #require(await ports.next())

            let alice = try SessionClientIdentity(seed: 1)
            let bob = try SessionClientIdentity(seed: 2)
            let a = try await SessionClientConnection.login(alice, port: port, group: group)
            let b = try await SessionClientConnection.login(bob, port: port, group: group)
            let sealed = [UInt8](repeating: 0xAB, count: 512)
            try await a.send(SessionFrame(requestID: 2, .sendDirect(recipient: bob.key, blob: sealed)))
            #expect(try await a.next() == SessionFrame(requestID: 2, .ok))
            let delivery = try await b.next()
            guard case let .directDelivery(id, _, blob) = delivery.message else { Issue.record("expected a delivery, got \(delivery)"); return }
            #expect(blob == sealed)
            try await b.send(SessionFrame(requestID: 2, .acknowledgeDirect([id])))
            #expect(try await b.next() == SessionFrame(requestID: 2, .ok))
            #expect(try await driver.withRelay { $0.authenticatedCount }.get() == 2)

            // Garbage on one connection closes only that one.
            try await a.sendRaw([1, 0x20])
            #expect(try await a.next().message.type == .error)
            try await a.channel.closeFuture.get()
            try await b.send(SessionFrame(requestID: 3, .countPrekeys))
            #expect(try await b.next() == SessionFrame(requestID: 3, .prekeyCount(0)))

            await b.close()

            // The admin statistics on the same port, with the token, count what happened.
            let stats = try await httpExchange("GET /admin/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-secret\r\nConnection: close\r\n\r\n",
                                               port: port, group: group)
            #expect(stats.hasPrefix("HTTP/1.1 200"))
            #expect(stats.contains(#""direct_messages_accepted_total":1"#))
            let refused = try await httpExchange("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n",
                                                 port: port, group: group)
            #expect(refused.hasPrefix("HTTP/1.1 401"))
            await serviceGroup.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        try await group.shutdownGracefully()
    }
}

/// Sends raw request bytes and returns everything the server writes until it closes.
func httpExchange(_ request: String, port: Int, group: EventLoopGroup) async throws -> String {
    let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port) { channel in
        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
    }
    return try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: request))
        var text = ""
        for try await var chunk in inbound { text += chunk.readString(length: chunk.readableBytes) ?? "" }
        return text
    }
}
