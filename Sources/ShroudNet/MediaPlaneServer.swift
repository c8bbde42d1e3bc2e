import CShroudIO
import Foundation
import ShroudRelayCore
import ShroudWire
import Synchronization

/// Sizes of the relay's UDP adapter.
public enum MediaSocketLimits {
    /// Datagrams taken per `recvmmsg` (and per hold of the room lock).
    public static let receiveBatch = 64
    /// Datagrams per `sendmmsg` call: the kernel's UIO_MAXIOV.
    public static let sendBatch = 1024
    /// Copy slots for datagrams that are not the one received (NACK answers, bind answers).
    public static let copySlots = 256
    /// SO_RCVBUF and SO_SNDBUF: a burst of 4 MiB ≈ 3,500 full-size datagrams.
    public static let socketBufferBytes = 4 << 20
    /// Receive slot size: one byte more than the largest valid datagram, so a larger one is seen
    /// as oversized (and dropped) rather than silently cut to a valid length.
    public static let slotBytes = MediaPlane.maxDatagramBytes + 1
    /// How long one wait for datagrams lasts, so `stop` is noticed.
    public static let pollMilliseconds: Int32 = 100
}

public struct MediaSocketError: Error, CustomStringConvertible {
    public let description: String
}

extension MediaAddress {
    init(_ c: shroud_addr) { self.init(high: c.high, low: c.low, port: c.port, family: c.family) }
    var c: shroud_addr { shroud_addr(high: high, low: low, port: port, family: family) }
}

/// The relay's UDP media socket (docs/PROTOCOL.md §4): a thin adapter around the sans-IO room
/// core. One thread reads batches with `recvmmsg`, runs them through `MediaRoomCore` under one
/// lock, and sends the fan-out with `sendmmsg`; forwarded datagrams are sent straight from the
/// receive buffers, so the hot path copies and allocates nothing.
public final class MediaPlaneServer: @unchecked Sendable {
    public let port: UInt16
    private let fd: Int32
    private let router: MediaRouter
    private let clock: @Sendable () -> UInt64
    private let deliverToSessions: @Sendable ([(ConnectionID, [UInt8])]) -> Void
    // Touched only by the receive thread.
    private let receiveBatch: OpaquePointer
    private let sendQueue: OpaquePointer
    private let running = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    /// Binds the UDP socket. `deliverToSessions` receives datagrams for participants on the
    /// WebSocket transport (called on the receive thread; it must hop to the session loop).
    public init(host: String, port: Int, router: MediaRouter, clock: @escaping @Sendable () -> UInt64 = systemMilliseconds,
                deliverToSessions: @escaping @Sendable ([(ConnectionID, [UInt8])]) -> Void) throws {
        var bound: UInt16 = 0
        let result = shroud_udp_open(host, UInt16(clamping: port), &bound, Int32(MediaSocketLimits.socketBufferBytes))
        guard result >= 0 else {
            throw MediaSocketError(description: "cannot bind UDP \(host):\(port): \(String(cString: strerror(-result)))")
        }
        guard let batch = shroud_recv_batch_create(Int32(MediaSocketLimits.receiveBatch), Int32(MediaSocketLimits.slotBytes)),
              let queue = shroud_send_queue_create(Int32(MediaSocketLimits.sendBatch), Int32(MediaSocketLimits.copySlots),
                                                   Int32(MediaPlane.maxDatagramBytes)) else {
            shroud_udp_close(result)
            throw MediaSocketError(description: "out of memory for the media socket buffers")
        }
        fd = result
        self.port = bound
        self.router = router
        self.clock = clock
        self.deliverToSessions = deliverToSessions
        receiveBatch = batch
        sendQueue = queue
    }

    deinit {
        shroud_recv_batch_destroy(receiveBatch)
        shroud_send_queue_destroy(sendQueue)
        shroud_udp_close(fd)
    }

    /// Starts the receive thread.
    public func start() {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in
            // Named in the kernel too, so `top -H` and the screen benchmark find it.
            _ = shroud_name_current_thread("shroud-media")
            run()
            finished.signal()
        }
        thread.name = "shroud-media"
        thread.start()
    }

    /// Stops the receive thread and waits for it (at most one poll interval).
    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
    }

    /// Sends one datagram (media from a WebSocket participant to a UDP one). Thread-safe: one
    /// `sendto` on the socket.
    public func send(_ datagram: [UInt8], to address: MediaAddress) {
        var destination = address.c
        _ = datagram.withUnsafeBytes { shroud_udp_sendto(fd, $0.baseAddress, $0.count, &destination) }
    }

    private func run() {
        var wait = MediaSocketLimits.pollMilliseconds
        while running.load(ordering: .acquiring) {
            let count = Int(shroud_recv_batch_receive(fd, receiveBatch, wait))
            let now = clock()
            var sink = BatchSink(queue: sendQueue, fd: fd)
            let deadline = router.withCore { core in
                for index in 0..<max(count, 0) {
                    let index = Int32(index)
                    let length = min(Int(shroud_recv_batch_length(receiveBatch, index)), MediaSocketLimits.slotBytes)
                    var source = shroud_addr()
                    shroud_recv_batch_source(receiveBatch, index, &source)
                    let datagram = UnsafeRawBufferPointer(start: shroud_recv_batch_data(receiveBatch, index), count: length)
                    sink.current = datagram
                    core.receive(datagram: datagram, from: MediaAddress(source), now: now, into: &sink)
                }
                // Screen rooms' held-back keyframe requests; the next wait ends at the earliest.
                core.poll(now: now, into: &sink)
                return core.nextDeadline
            }
            wait = deadline.map { Int32(clamping: min(UInt64(MediaSocketLimits.pollMilliseconds), $0 > now ? $0 - now : 1)) }
                ?? MediaSocketLimits.pollMilliseconds
            shroud_send_queue_flush(sendQueue, fd)
            if !sink.sessions.isEmpty { deliverToSessions(sink.sessions) }
        }
    }
}

/// Queues the room core's sends into the `sendmmsg` queue: forwarded datagrams by reference to the
/// receive buffer (valid until the flush after the batch), others by copy. Datagrams for
/// WebSocket participants are collected and handed to the session loop after the batch.
private struct BatchSink: MediaSink {
    let queue: OpaquePointer
    let fd: Int32
    var current = UnsafeRawBufferPointer(start: nil, count: 0)
    var sessions: [(ConnectionID, [UInt8])] = []

    init(queue: OpaquePointer, fd: Int32) {
        self.queue = queue
        self.fd = fd
    }

    mutating func forwardReceived(to address: MediaAddress) {
        var destination = address.c
        shroud_send_queue_add(queue, fd, current.baseAddress, current.count, &destination)
    }

    mutating func forwardReceived(toSession connection: ConnectionID) {
        sessions.append((connection, Array(current)))
    }

    mutating func send(copying datagram: UnsafeRawBufferPointer, to address: MediaAddress) {
        var destination = address.c
        shroud_send_queue_add_copy(queue, fd, datagram.baseAddress, datagram.count, &destination)
    }

    mutating func send(copying datagram: UnsafeRawBufferPointer, toSession connection: ConnectionID) {
        sessions.append((connection, Array(datagram)))
    }
}
