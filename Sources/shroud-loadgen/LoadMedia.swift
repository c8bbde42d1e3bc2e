import CShroudIO
import Foundation
import ShroudNet
import ShroudRelayCore
import ShroudWire

// `shroud-loadgen media`: the relay's media plane (MediaPlaneServer: its UDP adapter on its own
// thread, with the MediaRoomCore it forwards through — the code shroud-relay runs) in this process,
// driven by simulated participants, each a UDP socket on loopback with its own address, bound with
// a real token. Speakers send Opus-sized packets (a valid routing header, then opaque bytes carrying
// the send time) at 50 per second; listeners count what arrives and its latency. The same run
// measures a plain C sendmmsg loop with the same packet size: the physical limit of this machine.

private struct MediaLoadError: Error, CustomStringConvertible {
    let description: String
}

private struct MediaLoadOptions {
    var seconds = 5.0
    var size = 120
    var listeners = [100, 250, 500, MediaLimits.maximumRoomSize - 2]
    var rooms = 3
    var roomListeners = MediaLimits.maximumRoomSize - 2

    init(_ arguments: [String]) throws {
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { throw MediaLoadError(description: "\(flag) needs a value") }
            switch flag {
            case "--seconds": guard let v = Double(value), v > 0 else { throw MediaLoadError(description: "bad --seconds") }; seconds = v
            case "--size":
                guard let v = Int(value), (24 ... MediaPlane.maxDatagramBytes).contains(v) else {
                    throw MediaLoadError(description: "--size must be 24...\(MediaPlane.maxDatagramBytes)")
                }
                size = v
            case "--listeners":
                let list = value.split(separator: ",").compactMap { Int($0) }
                guard !list.isEmpty, list.allSatisfy({ (1 ... MediaLimits.maximumRoomSize - 2).contains($0) }) else {
                    throw MediaLoadError(description: "--listeners: comma-separated counts of 1...\(MediaLimits.maximumRoomSize - 2)")
                }
                listeners = list
            case "--rooms": guard let v = Int(value), (1 ... 20).contains(v) else { throw MediaLoadError(description: "--rooms 1...20") }; rooms = v
            case "--room-listeners":
                guard let v = Int(value), (1 ... MediaLimits.maximumRoomSize - 2).contains(v) else { throw MediaLoadError(description: "bad --room-listeners") }
                roomListeners = v
            default: throw MediaLoadError(description: "unknown option \(flag)")
            }
        }
    }
}

/// One simulated participant: a bound UDP socket on loopback.
private final class SimulatedParticipant {
    let fd: Int32
    let port: UInt16
    var stream: UInt32 = 0
    init(bufferBytes: Int32 = 1 << 20) throws {
        var port: UInt16 = 0
        let fd = shroud_udp_open("127.0.0.1", 0, &port, bufferBytes)
        guard fd >= 0 else { throw MediaLoadError(description: "UDP socket: \(String(cString: strerror(-fd)))") }
        self.fd = fd
        self.port = port
    }
    deinit { shroud_udp_close(fd) }
}

private func raiseDescriptorLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

private struct LatencyHistogram {
    var buckets = [UInt64](repeating: 0, count: 10_000)   // 10 µs each, up to 100 ms
    func percentile(_ p: Double) -> Double {
        let total = buckets.reduce(0, +)
        guard total > 0 else { return .nan }
        let target = UInt64((Double(total) * p).rounded(.up))
        var seen: UInt64 = 0
        for (index, count) in buckets.enumerated() {
            seen += count
            if seen >= target { return Double(index + 1) * 0.01 }   // upper edge, milliseconds
        }
        return 100
    }
}

/// What a listening thread found; written by that thread, read after it signalled.
private final class ListenOutcome: @unchecked Sendable {
    var received: UInt64 = 0
    var histogram = [UInt64](repeating: 0, count: 10_000)
    let finished = DispatchSemaphore(value: 0)

    /// Drains `fds` on a new thread until `until` (monotonic ns).
    func start(_ fds: [Int32], until: UInt64, latency: Bool) {
        Thread { [self] in
            received = fds.withUnsafeBufferPointer { descriptors in
                histogram.withUnsafeMutableBufferPointer { buckets in
                    shroud_load_listen(descriptors.baseAddress, Int32(descriptors.count), until,
                                       latency ? buckets.baseAddress : nil, Int32(buckets.count))
                }
            }
            finished.signal()
        }.start()
    }
}

/// A room run: `rooms` rooms of 2 speakers and `listeners` listeners each, for `seconds`.
private struct RoomRun {
    var offered: UInt64 = 0       // datagrams the listeners should get
    var sent: UInt64 = 0          // datagrams the speakers sent
    var received: UInt64 = 0
    var histogram = LatencyHistogram()
    var seconds: Double = 0
    var loss: Double { offered == 0 ? 0 : max(0, Double(offered) - Double(received)) / Double(offered) }
}

private func runRooms(rooms: Int, listeners: Int, options: MediaLoadOptions) throws -> RoomRun {
    let router = MediaRouter()
    let server = try MediaPlaneServer(host: "127.0.0.1", port: 0, router: router, deliverToSessions: { _ in })
    server.start()
    defer { server.stop() }
    let relay = shroud_addr(high: 0, low: 0x7F00_0001, port: server.port, family: 4)
    var random = SystemRandomNumberGenerator()
    var speakers: [SimulatedParticipant] = [], audience: [SimulatedParticipant] = []
    var connection: UInt64 = 1
    for room in 0 ..< rooms {
        let channel = ChannelID(validated: (0 ..< 16).map { _ in UInt8(room) })
        for index in 0 ..< listeners + 2 {
            let participant = try SimulatedParticipant()
            let token = MediaToken(validated: (0 ..< 16).map { _ in UInt8.random(in: 0 ... 255, using: &random) })
            let grant = try router.withCore { core throws(MediaRoomCore.JoinRefusal) in
                try core.join(channel: channel, connection: ConnectionID(rawValue: connection), transport: .datagram, token: token, now: systemMilliseconds())
            }
            connection += 1
            participant.stream = grant.streamID
            var to = relay
            let bind = MediaBind(token: token).serialized()
            var answer = [UInt8](repeating: 0, count: 64)
            var bound = false
            for _ in 0 ..< 5 where !bound {
                _ = bind.withUnsafeBytes { shroud_udp_sendto(participant.fd, $0.baseAddress, $0.count, &to) }
                var from = shroud_addr()
                let n = answer.withUnsafeMutableBytes { shroud_udp_recvfrom(participant.fd, $0.baseAddress, $0.count, &from, 500) }
                bound = n == MediaBind.encodedBytes && answer[0] == MediaBind.boundByte
            }
            guard bound else { throw MediaLoadError(description: "participant \(connection) could not bind") }
            if index < 2 { speakers.append(participant) } else { audience.append(participant) }
        }
    }
    // Every speaker's packet goes to the other speaker and the listeners of its room.
    let interval: UInt64 = 20_000_000
    let start = shroud_monotonic_ns() + 50_000_000
    let until = start + UInt64(options.seconds * 1e9)
    var run = RoomRun()
    let outcome = ListenOutcome()
    // Listeners drain a little past the end, for packets still in flight.
    outcome.start((audience + speakers).map(\.fd), until: until + 200_000_000, latency: true)
    while shroud_monotonic_ns() < start { usleep(1000) }
    var to = relay
    let fds = speakers.map(\.fd), streams = speakers.map(\.stream)
    run.sent = shroud_load_speak(fds, streams, Int32(fds.count), &to, options.size, interval, until)
    outcome.finished.wait()
    run.received = outcome.received
    run.offered = run.sent * UInt64(listeners + 1)
    run.seconds = options.seconds
    run.histogram.buckets = outcome.histogram
    return run
}

/// The physical limit: a C sendmmsg loop (batch 32) to one socket drained with recvmmsg.
private func physicalLimit(options: MediaLoadOptions) throws -> (sent: Double, received: Double) {
    let sink = try SimulatedParticipant(bufferBytes: 4 << 20), source = try SimulatedParticipant()
    let until = shroud_monotonic_ns() + UInt64(options.seconds * 1e9)
    let outcome = ListenOutcome()
    outcome.start([sink.fd], until: until + 100_000_000, latency: false)
    var to = shroud_addr(high: 0, low: 0x7F00_0001, port: sink.port, family: 4)
    let sent = shroud_load_sendmmsg(source.fd, &to, options.size, 32, until)
    outcome.finished.wait()
    return (Double(sent) / options.seconds, Double(outcome.received) / options.seconds)
}

private func rate(_ value: Double) -> String { String(format: "%.0f", value) }

func loadMedia(_ arguments: [String]) throws {
    let options = try MediaLoadOptions(arguments)
    raiseDescriptorLimit()
    print("## Media plane (\(options.size)-byte datagrams, \(options.seconds) s per row, loopback)\n")

    let limit = try physicalLimit(options: options)
    let ratioRun = try runRooms(rooms: options.rooms, listeners: options.roomListeners, options: options)
    let forwarded = Double(ratioRun.received) / ratioRun.seconds
    print("| measurement | packets/s | ratio |")
    print("|---|---|---|")
    print("| C sendmmsg loop (batch 32), sent | \(rate(limit.sent)) | 1.00 |")
    print("| C sendmmsg loop, received by a recvmmsg sink | \(rate(limit.received)) | \(String(format: "%.2f", limit.received / limit.sent)) |")
    print("| relay forwarded, received by listeners (\(options.rooms) rooms × (2 speakers + \(options.roomListeners) listeners), 50 packets/s per speaker; loss \(String(format: "%.3f", ratioRun.loss * 100)) %) | \(rate(forwarded)) | \(String(format: "%.2f", forwarded / limit.sent)) |")
    print("")

    print("| listeners (2 speakers) | forwarded packets/s | loss % | p50 ms | p99 ms | max bucket ms |")
    print("|---|---|---|---|---|---|")
    var largest = 0
    for count in options.listeners {
        let run = try runRooms(rooms: 1, listeners: count, options: options)
        let p99 = run.histogram.percentile(0.99)
        let top = Double((run.histogram.buckets.lastIndex { $0 > 0 } ?? 0) + 1) * 0.01
        print("| \(count) | \(rate(Double(run.received) / run.seconds)) | \(String(format: "%.3f", run.loss * 100)) | \(String(format: "%.2f", run.histogram.percentile(0.5))) | \(String(format: "%.2f", p99)) | \(String(format: "%.2f", top)) |")
        if run.loss < 0.001 && p99 < 10 { largest = max(largest, count) }
    }
    print("\nLargest room with < 0.1 % loss and p99 < 10 ms: 2 speakers + \(largest) listeners (of those tried).")
}
