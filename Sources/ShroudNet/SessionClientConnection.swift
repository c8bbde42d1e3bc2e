import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ShroudWire

/// The client end of a session WebSocket (`ws://`, or `wss://` when given a TLS context): connects, upgrades on
/// `/ws`, sends session frames (masked, as RFC 6455 requires of clients) and yields the binary
/// frames the relay sends. Used by tests and available to the client program.
///
/// Frames can be read with the async `next()` or the blocking `nextBlocking(timeout:)`; the
/// blocking form never waits on the Swift concurrency pool, which matters to tests running next to
/// others that block that pool.
public struct SessionClientConnection: Sendable {
    public let channel: Channel
    private let inbox: FrameInbox
    /// Writes frames this side masked itself, below NIO's encoder (`sendMaskedWithoutWaiting`).
    private let preencoded: WriterSlot

    public static func connect(host: String, port: Int, group: EventLoopGroup, tls: NIOSSLContext? = nil) async throws -> SessionClientConnection {
        try await bootstrap(host: host, port: port, group: group, tls: tls).get()
    }

    /// Connects and upgrades, blocking the calling thread (never call it on an event loop).
    /// With `tls`, the relay's certificate is verified for `host` (by name; an IP address is
    /// checked against the certificate's IP addresses) before anything else is sent.
    public static func connectBlocking(host: String, port: Int, group: EventLoopGroup, tls: NIOSSLContext? = nil) throws -> SessionClientConnection {
        try bootstrap(host: host, port: port, group: group, tls: tls).wait()
    }

    private init(channel: Channel, inbox: FrameInbox, preencoded: WriterSlot) {
        self.channel = channel
        self.inbox = inbox
        self.preencoded = preencoded
    }

    private static func bootstrap(host: String, port: Int, group: EventLoopGroup, tls: NIOSSLContext?) -> EventLoopFuture<SessionClientConnection> {
        let inbox = FrameInbox()
        let writers = WriterSlot()
        let upgraded = group.next().makePromise(of: Void.self)
        let connected = ClientBootstrap(group: group).channelInitializer { channel in
            let requester = UpgradeRequester(host: "\(host):\(port)")
            let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: SessionTransportLimits.maximumMessageSize,
                                                      upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    // Between NIO's frame encoder and the socket (or TLS): what it receives is already a frame.
                    let encoder = try channel.pipeline.syncOperations.handler(type: WebSocketFrameEncoder.self)
                    let writer = PreencodedFrameWriter()
                    try channel.pipeline.syncOperations.addHandler(writer, position: .before(encoder))
                    try channel.pipeline.syncOperations.addHandler(FrameCollector(inbox))
                    writers.set(writer)
                    upgraded.succeed()
                }
            })
            let upgrade: NIOHTTPClientUpgradeSendableConfiguration = (upgraders: [upgrader], completionHandler: { context in
                context.pipeline.removeHandler(requester, promise: nil)
            })
            // A failed TLS handshake closes the channel; its reason must reach the caller.
            let failures = FailureRecorder(upgraded)
            let secured = channel.eventLoop.makeCompletedFuture {
                if let tls {
                    // SNI carries names only; an IP address literal is verified without it.
                    let name = isIPAddress(host) ? nil : host
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: name))
                }
            }
            // The relay's challenge can arrive in the same read as the 101 response: those bytes
            // must go on to the WebSocket decoder, not be dropped with the HTTP decoder.
            return secured.flatMap { channel.pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, withClientUpgrade: upgrade) }
                .flatMap { channel.pipeline.addHandler(requester) }
                .flatMap { channel.pipeline.addHandler(failures) }
        }.connect(host: host, port: port)
        // A refused or failed connection never reaches the upgrade: fail its promise too, or NIO
        // reports it as leaked (a crash in debug builds).
        connected.whenFailure { upgraded.fail($0) }
        return connected.flatMap { channel in
            channel.closeFuture.whenComplete { _ in
                inbox.finish()
                upgraded.fail(ChannelError.ioOnClosedChannel)
            }
            return upgraded.futureResult.map { SessionClientConnection(channel: channel, inbox: inbox, preencoded: writers) }
        }
    }

    public func send(_ frame: SessionFrame) async throws {
        try await sendRaw(frame.serialize())
    }

    /// Sends bytes as one binary message, whether or not they are a valid frame (for tests).
    public func sendRaw(_ bytes: [UInt8]) async throws {
        let data = channel.allocator.buffer(bytes: bytes)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: data)).get()
    }

    public func sendBlocking(_ frame: SessionFrame) throws {
        let data = channel.allocator.buffer(bytes: frame.serialize())
        try channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: data)).wait()
    }

    /// Queues a frame without waiting for the write: for streams whose caller bounds what is in
    /// flight itself (the file transfer's relay pipe window). A failed write closes the channel,
    /// which the next read reports.
    public func sendWithoutWaiting(_ frame: SessionFrame) {
        let data = channel.allocator.buffer(bytes: frame.serialize())
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: data), promise: nil)
    }

    /// Sends the concatenation of `parts` as one binary message without waiting for the write, like
    /// `sendWithoutWaiting`, but masks it here, eight bytes at a time, while copying it into the
    /// outgoing buffer: NIO's encoder masks byte by byte, which took a quarter of a file sender's
    /// CPU on the relay pipe. Ordered with the other sends made from the same thread.
    public func sendMaskedWithoutWaiting(_ parts: [UnsafeRawBufferPointer]) {
        let key = WebSocketMaskingKey.random()
        let buffer = WebSocketClientFraming.maskedBinaryFrame(parts, key: Array(key), allocator: channel.allocator)
        let preencoded = self.preencoded
        channel.eventLoop.execute { preencoded.get()?.write(buffer) }
    }

    /// The next session frame; throws when the connection closed first or the frame is malformed.
    public func next() async throws -> SessionFrame {
        let inbox = self.inbox
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try inbox.nextSessionFrame(timeout: .infinity) }) }
        }
    }

    /// The next session frame, blocking the calling thread for at most `timeout` seconds.
    public func nextBlocking(timeout: Double = 30) throws -> SessionFrame {
        try inbox.nextSessionFrame(timeout: timeout)
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Binary frames received and not yet read, guarded by a condition variable so readers can block
/// on any thread.
private final class FrameInbox: @unchecked Sendable {
    private let condition = NSCondition()
    private var frames: [[UInt8]] = []
    private var finished = false

    func push(_ bytes: [UInt8]) {
        condition.lock(); frames.append(bytes); condition.signal(); condition.unlock()
    }

    func finish() {
        condition.lock(); finished = true; condition.broadcast(); condition.unlock()
    }

    func nextSessionFrame(timeout: Double) throws -> SessionFrame {
        // An infinite wait uses wait() itself: on Linux, wait(until: .distantFuture) traps.
        let deadline = timeout.isFinite ? Date().addingTimeInterval(timeout) : nil
        condition.lock()
        defer { condition.unlock() }
        while frames.isEmpty && !finished {
            if let deadline {
                if !condition.wait(until: deadline) { throw ChannelError.connectTimeout(.seconds(Int64(timeout))) }
            } else {
                condition.wait()
            }
        }
        guard !frames.isEmpty else { throw ChannelError.eof }
        return try SessionFrame(parsing: frames.removeFirst())
    }
}

/// Hands the binary frames a client receives to its inbox.
private final class FrameCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    let inbox: FrameInbox
    init(_ inbox: FrameInbox) { self.inbox = inbox }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            inbox.push(Array(frame.data.readableBytesView))
        case .ping:
            // The relay pings a client silent for 30 s and drops it if the ping goes unanswered, so a
            // client that only listens (`shroud listen`) must answer (RFC 6455 §5.5.3: same payload).
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(),
                                                                 data: frame.unmaskedData)), promise: nil)
        default:
            break
        }
    }
    func channelInactive(context: ChannelHandlerContext) {
        inbox.finish()
        context.fireChannelInactive()
    }
}

/// Sends the HTTP upgrade request once connected; the upgrade handler adds the WebSocket headers.
/// Public so that other WebSocket clients of the relay (the load generator) send the same request.
public final class UpgradeRequester: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    public typealias InboundIn = HTTPClientResponsePart
    public typealias OutboundOut = HTTPClientRequestPart
    let host: String
    public init(host: String) { self.host = host }
    public func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Length", value: "0")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: sessionWebSocketPath, headers: headers))),
                      promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }
}

/// Fails the connection's upgrade promise with the first error in the pipeline (a failed TLS
/// handshake, say), so that the caller hears why rather than only that the channel closed.
private final class FailureRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let promise: EventLoopPromise<Void>
    init(_ promise: EventLoopPromise<Void>) { self.promise = promise }
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

private func isIPAddress(_ host: String) -> Bool {
    (try? SocketAddress(ipAddress: host, port: 0)) != nil
}

/// Holds the writer added during the upgrade; the writer itself is used only on the channel's
/// event loop (the slot is set before the connection exists, under a lock).
private final class WriterSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var writer: PreencodedFrameWriter?
    func set(_ w: PreencodedFrameWriter) { lock.lock(); writer = w; lock.unlock() }
    func get() -> PreencodedFrameWriter? { lock.lock(); defer { lock.unlock() }; return writer }
}

/// Sits between NIO's WebSocket frame encoder and the socket: passes the encoder's output on, and
/// writes whole frames encoded (and masked) by `WebSocketClientFraming` from its own position.
final class PreencodedFrameWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// On the event loop.
    func write(_ frame: ByteBuffer) {
        context?.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }
}

/// RFC 6455 §5.2 framing of a client's binary message.
public enum WebSocketClientFraming {
    /// One final binary frame: header, the 4-byte masking key, then the payload (the parts, in
    /// order) XORed with the key, eight bytes at a time. NIO's decoder reads it as a masked frame.
    public static func maskedBinaryFrame(_ parts: [UnsafeRawBufferPointer], key: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        let length = parts.reduce(0) { $0 + $1.count }
        var buffer = allocator.buffer(capacity: 14 + length)
        buffer.writeInteger(UInt8(0x82))  // FIN, binary
        if length < 126 {
            buffer.writeInteger(UInt8(0x80 | length))
        } else if length <= 0xFFFF {
            buffer.writeInteger(UInt8(0x80 | 126))
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(UInt8(0x80 | 127))
            buffer.writeInteger(UInt64(length))
        }
        let k = key.count == 4 ? key : [0, 0, 0, 0]
        buffer.writeBytes(k)
        // The key repeated twice: one 64-bit word covers two periods, from a payload offset ≡ 0 (mod 4).
        let word = (k + k).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
            var position = 0
            for part in parts {
                var i = 0
                while i < part.count, position % 4 != 0 {
                    out[position] = part[i] ^ k[position % 4]
                    i += 1; position += 1
                }
                while i + 8 <= part.count {
                    out.storeBytes(of: part.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ word, toByteOffset: position, as: UInt64.self)
                    i += 8; position += 8
                }
                while i < part.count {
                    out[position] = part[i] ^ k[position % 4]
                    i += 1; position += 1
                }
            }
            return position
        }
        return buffer
    }
}
