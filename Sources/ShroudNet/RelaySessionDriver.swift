import Foundation
import Logging
import NIOCore
import NIOWebSocket
import ShroudRelayCore
import ShroudWire

/// The WebSocket path on the relay's HTTP port (DESIGN.md §3).
public let sessionWebSocketPath = "/ws"

/// WebSocket-level limits of the session transport.
public enum SessionTransportLimits {
    /// Largest WebSocket message, after reassembling fragments: one session frame.
    public static let maximumMessageSize = SessionLimits.maximumFrameSize
    /// A non-final fragment smaller than this is refused (defends against floods of tiny fragments).
    public static let minimumFragmentSize = 1024
    /// Fragments in one message.
    public static let maximumFragments = 4096
    /// Seconds without a frame from the client before the relay pings it; a second silent period
    /// with the ping unanswered closes the connection.
    public static let pingIntervalSeconds: Int64 = 30
}

/// Milliseconds since the Unix epoch from the system clock.
public func systemMilliseconds() -> UInt64 {
    UInt64(max(0, Date().timeIntervalSince1970 * 1000))
}

/// Runs the sans-IO `Relay` on one event loop and carries out its actions on the connections'
/// channels. Every call into the core happens on `loop`, so the core needs no locks; the
/// connections' own loops only hop onto it.
public final class RelaySessionDriver: @unchecked Sendable {
    // All mutable state below is touched only on `loop`.
    public let loop: EventLoop
    private let relay: Relay
    private let clock: @Sendable () -> UInt64
    private let logger: Logger
    private var channels: [ConnectionID: Channel] = [:]
    private var connectionOf: [ObjectIdentifier: ConnectionID] = [:]
    private var ticker: RepeatedTask?
    /// Frames received and not yet handed to the core, in arrival order, and whether a drain is
    /// scheduled. Frames that arrive while the core works on a batch wait here and then go to the
    /// core together, under one store commit (group commit).
    private var pendingFrames: [(ConnectionID, [UInt8])] = []
    private var drainScheduled = false
    /// The most frames one store transaction covers by default; more wait for the next one, so a
    /// burst never makes one commit (and the replies waiting on it) arbitrarily late.
    public static let defaultFramesPerCommit = 512
    /// This driver's limit (1 turns group commit off: one transaction per frame, for comparison).
    public let framesPerCommit: Int
    /// Sends datagrams for UDP participants that the session core produced (WebSocket media).
    private var datagramSender: (@Sendable (MediaAddress, [UInt8]) -> Void)?

    public init(relay: Relay, loop: EventLoop, logger: Logger, clock: @escaping @Sendable () -> UInt64 = systemMilliseconds,
                framesPerCommit: Int = defaultFramesPerCommit) {
        self.framesPerCommit = max(1, framesPerCommit)
        self.relay = relay
        self.loop = loop
        self.logger = logger
        self.clock = clock
    }

    /// Starts the once-a-second tick (authentication deadlines, expiry sweep).
    public func start() {
        loop.execute { [self] in
            guard ticker == nil else { return }
            ticker = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
                // An answer waiting in the batch is judged before its deadline is.
                drainPendingFrames()
                perform(relay.tick(now: clock()))
            }
        }
    }

    public func stop() {
        loop.execute { [self] in
            ticker?.cancel()
            ticker = nil
        }
    }

    /// Runs `body` with the core on its loop, for statistics and tests.
    public func withRelay<T: Sendable>(_ body: @escaping @Sendable (Relay) -> T) -> EventLoopFuture<T> {
        loop.submit { [self] in body(relay) }
    }

    /// Connects the UDP media socket: datagrams the core wants sent over UDP go to `sender`.
    public func setDatagramSender(_ sender: @escaping @Sendable (MediaAddress, [UInt8]) -> Void) {
        loop.execute { [self] in datagramSender = sender }
    }

    /// Datagrams from the UDP socket for participants on the WebSocket transport.
    public func deliverMedia(_ batch: [(ConnectionID, [UInt8])]) {
        loop.execute { [self] in
            for (id, datagram) in batch { perform(relay.deliverMedia(datagram, to: id)) }
        }
    }

    func opened(_ channel: Channel) {
        let address = channel.remoteAddress?.ipAddress ?? "unknown"
        loop.execute { [self] in
            let key = ObjectIdentifier(channel)
            guard connectionOf[key] == nil else { return }
            let (id, actions) = relay.connect(address: address, now: clock())
            channels[id] = channel
            connectionOf[key] = id
            perform(actions)
        }
    }

    func received(_ channel: Channel, _ bytes: [UInt8]) {
        loop.execute { [self] in
            guard let id = connectionOf[ObjectIdentifier(channel)] else { return }
            pendingFrames.append((id, bytes))
            guard !drainScheduled else { return }
            drainScheduled = true
            // Queued behind the hops already waiting on the loop, so their frames join this batch.
            loop.execute { [self] in
                drainScheduled = false
                drainPendingFrames()
            }
        }
    }

    /// Hands the waiting frames to the core in batches of at most `framesPerCommit`; the
    /// replies are written only after each batch committed.
    private func drainPendingFrames() {
        let frames = pendingFrames
        pendingFrames.removeAll(keepingCapacity: true)
        for batch in Self.commitBatches(frames, framesPerCommit: framesPerCommit) {
            perform(relay.receive(batch: batch, now: clock()))
        }
    }

    /// Splits waiting frames, in order, into batches of at most `framesPerCommit` (at least 1).
    static func commitBatches<Frame>(_ frames: [Frame], framesPerCommit: Int) -> [[Frame]] {
        let size = max(1, framesPerCommit)
        return stride(from: 0, to: frames.count, by: size).map { Array(frames[$0..<min($0 + size, frames.count)]) }
    }

    func closed(_ channel: Channel) {
        loop.execute { [self] in
            // Frames the connection sent before closing are handled first, as they arrived.
            drainPendingFrames()
            guard let id = connectionOf.removeValue(forKey: ObjectIdentifier(channel)) else { return }
            channels[id] = nil
            perform(relay.disconnected(id))
        }
    }

    /// Closes every session connection and completes once they are all closed, so that their
    /// last callbacks reach this loop before the event loops shut down.
    public func closeAllConnections() -> EventLoopFuture<Void> {
        loop.flatSubmit { [self] in
            let closing = channels.values.map { $0.close().flatMapErrorThrowing { _ in } }
            return EventLoopFuture.andAllComplete(closing, on: loop)
        }
    }

    private func perform(_ actions: [RelayAction]) {
        // Frames for one connection are written together and flushed once at the end: one
        // system call for a batch's replies and deliveries instead of one per frame.
        var written: [ObjectIdentifier: Channel] = [:]
        defer { for channel in written.values { channel.flush() } }
        for action in actions {
            switch action {
            case let .send(id, bytes):
                guard let channel = channels[id] else { continue }
                let count = bytes.count
                let frame = WebSocketFrame(fin: true, opcode: .binary, data: channel.allocator.buffer(bytes: bytes))
                written[ObjectIdentifier(channel)] = channel
                channel.write(frame).whenComplete { [self] _ in
                    // Reported even when the write failed: the core then simply forgets the bytes.
                    loop.execute { [self] in perform(relay.written(id, bytes: count)) }
                }
            case let .close(id):
                guard let channel = channels.removeValue(forKey: id) else { continue }
                connectionOf[ObjectIdentifier(channel)] = nil
                var payload = channel.allocator.buffer(capacity: 2)
                payload.write(webSocketErrorCode: .policyViolation)
                let close = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
                channel.writeAndFlush(close).whenComplete { _ in channel.close(promise: nil) }
            case let .sendDatagram(address, bytes):
                datagramSender?(address, bytes)
            }
        }
    }
}

/// Turns WebSocket frames into calls on the driver: binary frames are session frames; text frames
/// are refused; pings are answered; a silent client is pinged and then dropped.
final class WebSocketSessionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let driver: RelaySessionDriver
    private var awaitingPong = false
    private var closing = false

    init(driver: RelaySessionDriver) {
        self.driver = driver
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { driver.opened(context.channel) }
    }

    func channelActive(context: ChannelHandlerContext) {
        driver.opened(context.channel)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        driver.closed(context.channel)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        awaitingPong = false
        switch frame.opcode {
        case .binary:
            driver.received(context.channel, frame.unmaskedBytes)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            break
        case .connectionClose:
            // Echo the close and end the connection (RFC 6455 §5.5.1).
            close(context, code: .normalClosure)
        default:
            // Text (or an unknown opcode): the session protocol is binary only.
            close(context, code: .unacceptableData)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if awaitingPong {
            context.close(promise: nil)
        } else {
            awaitingPong = true
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))),
                                  promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func close(_ context: ChannelHandlerContext, code: WebSocketErrorCode) {
        guard !closing else { return }
        closing = true
        var payload = context.channel.allocator.buffer(capacity: 2)
        payload.write(webSocketErrorCode: code)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Adds the session handlers after a WebSocket upgrade: idle detection, fragment reassembly
    /// within the limits, and the session handler.
    func addSessionHandlers(driver: RelaySessionDriver) throws {
        try addHandler(IdleStateHandler(readTimeout: .seconds(SessionTransportLimits.pingIntervalSeconds)))
        try addHandler(NIOWebSocketFrameAggregator(minNonFinalFragmentSize: SessionTransportLimits.minimumFragmentSize,
                                                   maxAccumulatedFrameCount: SessionTransportLimits.maximumFragments,
                                                   maxAccumulatedFrameSize: SessionTransportLimits.maximumMessageSize))
        try addHandler(WebSocketSessionHandler(driver: driver))
    }
}
