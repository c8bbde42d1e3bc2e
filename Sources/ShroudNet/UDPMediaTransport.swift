import CShroudIO
import Foundation
import ShroudWire
import Synchronization

/// A client's UDP media socket to the relay (docs/PROTOCOL.md §4.7): binds the socket's address to
/// the room participant with the media token, repeats the bind every
/// `bindRefreshMilliseconds`, and hands every other datagram from the relay to `onDatagram` on its
/// receive thread. `isBound` turns true at the relay's first `bound` answer; a caller that sees no
/// answer falls back to the WebSocket transport.
public final class UDPMediaTransport: @unchecked Sendable {
    public static let bindRefreshMilliseconds: UInt64 = 5_000

    private let fd: Int32
    private var relay: shroud_addr
    private let bind: [UInt8]
    private let running = Atomic<Bool>(false)
    private let bound = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private let received = Atomic<Int>(0)
    /// Microseconds between the latest bind and its answer; 0 until one was answered.
    private let bindRoundTrip = Atomic<Int>(0)

    /// `relayHost` is an IPv4 or IPv6 literal.
    public init(relayHost: String, relayPort: UInt16, token: MediaToken, localHost: String? = nil) throws {
        var family: Int32 = AF_INET
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, relayHost, &v4) == 1 {
            relay = shroud_addr(high: 0, low: UInt64(UInt32(bigEndian: v4.s_addr)), port: relayPort, family: 4)
        } else if inet_pton(AF_INET6, relayHost, &v6) == 1 {
            family = AF_INET6
            let bytes = withUnsafeBytes(of: v6) { Array($0) }
            relay = shroud_addr(high: bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }, low: bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) },
                                port: relayPort, family: 6)
        } else {
            throw MediaSocketError(description: "the relay's media address must be an IP address, not \(relayHost)")
        }
        var port: UInt16 = 0
        let local = localHost ?? (family == AF_INET ? "0.0.0.0" : "::")
        let result = shroud_udp_open(local, 0, &port, 1 << 20)
        guard result >= 0 else { throw MediaSocketError(description: "cannot open a UDP socket: \(String(cString: strerror(-result)))") }
        fd = result
        bind = MediaBind(token: token).serialized()
    }

    deinit { shroud_udp_close(fd) }

    public var isBound: Bool { bound.load(ordering: .acquiring) }
    public var datagramsReceived: Int { received.load(ordering: .relaxed) }
    /// The round trip of the latest answered bind (the relay answers at once, so this is the
    /// network's round trip), or nil before the first answer.
    public var roundTrip: Duration? {
        let micros = bindRoundTrip.load(ordering: .relaxed)
        return micros > 0 ? .microseconds(micros) : nil
    }

    /// Starts the receive thread (which also repeats the bind).
    public func start(onDatagram: @escaping @Sendable ([UInt8]) -> Void) {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: MediaPlane.maxDatagramBytes + 1)
            var nextBind: UInt64 = 0
            var bindSent = ContinuousClock.now
            while running.load(ordering: .acquiring) {
                let now = systemMilliseconds()
                if now >= nextBind {
                    send(bind)
                    bindSent = ContinuousClock.now
                    // Until the relay answers, retry quickly; then at the refresh interval.
                    nextBind = now + (isBound ? Self.bindRefreshMilliseconds : 200)
                }
                var from = shroud_addr()
                let n = buffer.withUnsafeMutableBytes { shroud_udp_recvfrom(fd, $0.baseAddress, $0.count, &from, 50) }
                // Only the relay's address is listened to; anything longer than the limit is dropped.
                guard n > 0, n <= MediaPlane.maxDatagramBytes, from.low == relay.low, from.high == relay.high, from.port == relay.port else { continue }
                let datagram = Array(buffer[0..<n])
                if MediaBind.isBind(firstByte: datagram[0]) {
                    if datagram == [MediaBind.boundByte] + bind.dropFirst() {
                        let elapsed = ContinuousClock.now - bindSent
                        bindRoundTrip.store(max(1, Int(elapsed / .microseconds(1))), ordering: .relaxed)
                        bound.store(true, ordering: .releasing)
                    }
                    continue
                }
                received.add(1, ordering: .relaxed)
                onDatagram(datagram)
            }
            finished.signal()
        }.start()
    }

    /// Waits until the relay answered a bind, or the timeout passed.
    public func waitUntilBound(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !isBound && ContinuousClock.now < deadline { usleep(5_000) }
        return isBound
    }

    public func send(_ datagram: [UInt8]) {
        var to = relay
        _ = datagram.withUnsafeBytes { shroud_udp_sendto(fd, $0.baseAddress, $0.count, &to) }
    }

    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
    }
}
