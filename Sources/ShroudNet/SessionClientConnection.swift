import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import ShroudWire

/// The client end of a session WebSocket (plain `ws://`; no TLS yet): connects, upgrades on
/// `/ws`, sends session frames (masked, as RFC 6455 requires of clients) and yields the binary
/// frames the relay sends. Used by tests and available to the client program.
public struct SessionClientConnection: Sendable {
    public let channel: Channel
    private let frames: AsyncStream<WebSocketFrame>

    public static func connect(host: String, port: Int, group: EventLoopGroup) async throws -> SessionClientConnection {
        let (stream, continuation) = AsyncStream<WebSocketFrame>.makeStream()
        let upgraded = group.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group).channelInitializer { channel in
            let requester = UpgradeRequester(host: "\(host):\(port)")
            let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: SessionTransportLimits.maximumMessageSize,
                                                      upgradePipelineHandler: { channel, _ in
                channel.pipeline.addHandler(FrameCollector(continuation)).map { upgraded.succeed() }
            })
            let upgrade: NIOHTTPClientUpgradeSendableConfiguration = (upgraders: [upgrader], completionHandler: { context in
                context.pipeline.removeHandler(requester, promise: nil)
            })
            // The relay's challenge can arrive in the same read as the 101 response: those bytes
            // must go on to the WebSocket decoder, not be dropped with the HTTP decoder.
            return channel.pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, withClientUpgrade: upgrade)
                .flatMap { channel.pipeline.addHandler(requester) }
        }.connect(host: host, port: port).get()
        channel.closeFuture.whenComplete { _ in
            continuation.finish()
            upgraded.fail(ChannelError.ioOnClosedChannel)
        }
        try await upgraded.futureResult.get()
        return SessionClientConnection(channel: channel, frames: stream)
    }

    public func send(_ frame: SessionFrame) async throws {
        try await sendRaw(frame.serialize())
    }

    /// Sends bytes as one binary message, whether or not they are a valid frame (for tests).
    public func sendRaw(_ bytes: [UInt8]) async throws {
        let data = channel.allocator.buffer(bytes: bytes)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: data)).get()
    }

    /// The next session frame; throws when the connection closed first or the frame is malformed.
    public func next() async throws -> SessionFrame {
        for await frame in frames where frame.opcode == .binary {
            return try SessionFrame(parsing: Array(frame.data.readableBytesView))
        }
        throw ChannelError.eof
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Hands the frames a client receives to an AsyncStream.
private final class FrameCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = WebSocketFrame
    let continuation: AsyncStream<WebSocketFrame>.Continuation
    init(_ continuation: AsyncStream<WebSocketFrame>.Continuation) { self.continuation = continuation }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { continuation.yield(unwrapInboundIn(data)) }
    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }
}

/// Sends the HTTP upgrade request once connected; the upgrade handler adds the WebSocket headers.
private final class UpgradeRequester: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let host: String
    init(host: String) { self.host = host }
    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Length", value: "0")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: sessionWebSocketPath, headers: headers))),
                      promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }
}
