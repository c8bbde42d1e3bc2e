import CShroudIO
import Foundation
import ShroudNet
import ShroudRelayCore
import ShroudWire

// `shroud-loadgen screen`: relay CPU per watcher of one screen share. The relay's media plane
// (MediaPlaneServer and the MediaRoomCore it forwards through, as shroud-relay runs them) runs in
// this process; one simulated sharer sends a 1080p layer and a 360p layer at their default VP8
// bitrates (VideoQuality: 2.5 and 0.5 Mbit/s at 30 fps) in full-size packets with valid routing
// headers, answering the relay's keyframe requests with a keyframe three times the size; N
// watchers (uncapped unless --watcher-cap says otherwise, so each gets the 1080p layer) send a receiver report every 500 ms, as
// clients do. The relay thread's CPU time is read from /proc/self/task/<tid>/schedstat.

private struct ScreenLoadError: Error, CustomStringConvertible {
    let description: String
}

private struct ScreenLoadOptions {
    var seconds = 5.0
    var watchers = [0, 1, 10, 50, 100, 200, MediaLimits.maximumWatchers]
    var topBitrate = 2_500_000
    var lowBitrate = 500_000
    var fps = 30
    /// The watchers' layer cap (`joinRoom.maxLayer`): 7 = uncapped (1080p), 0 = 360p.
    var watcherCap: MediaLayer = MediaLayers.noCap

    init(_ arguments: [String]) throws {
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { throw ScreenLoadError(description: "\(flag) needs a value") }
            switch flag {
            case "--seconds": guard let v = Double(value), v > 0 else { throw ScreenLoadError(description: "bad --seconds") }; seconds = v
            case "--watchers":
                let list = value.split(separator: ",").compactMap { Int($0) }
                guard !list.isEmpty, list.allSatisfy({ (0 ... MediaLimits.maximumWatchers).contains($0) }) else {
                    throw ScreenLoadError(description: "--watchers: comma-separated counts of 0...\(MediaLimits.maximumWatchers)")
                }
                watchers = list
            case "--top-kbps": guard let v = Int(value), (100 ... 20_000).contains(v) else { throw ScreenLoadError(description: "--top-kbps 100...20000") }; topBitrate = v * 1000
            case "--low-kbps": guard let v = Int(value), (50 ... 5_000).contains(v) else { throw ScreenLoadError(description: "--low-kbps 50...5000") }; lowBitrate = v * 1000
            case "--watcher-cap": guard let v = MediaLayer(value), v <= MediaLayers.noCap else { throw ScreenLoadError(description: "--watcher-cap 0...7") }; watcherCap = v
            case "--fps": guard let v = Int(value), (1 ... 60).contains(v) else { throw ScreenLoadError(description: "--fps 1...60") }; fps = v
            default: throw ScreenLoadError(description: "unknown option \(flag)")
            }
        }
    }
}

/// One simulated participant: a UDP socket on loopback.
private final class ScreenParticipant {
    let fd: Int32
    var stream: UInt32 = 0
    init() throws {
        var port: UInt16 = 0
        let fd = shroud_udp_open("127.0.0.1", 0, &port, 1 << 20)
        guard fd >= 0 else { throw ScreenLoadError(description: "UDP socket: \(String(cString: strerror(-fd)))") }
        self.fd = fd
    }
    deinit { shroud_udp_close(fd) }

    func send(_ bytes: [UInt8], to relay: shroud_addr) {
        var to = relay
        _ = bytes.withUnsafeBytes { shroud_udp_sendto(fd, $0.baseAddress, $0.count, &to) }
    }

    /// Binds with the token (five tries, 500 ms each).
    func bind(_ token: MediaToken, relay: shroud_addr) throws {
        var answer = [UInt8](repeating: 0, count: 64)
        for _ in 0 ..< 5 {
            send(MediaBind(token: token).serialized(), to: relay)
            var from = shroud_addr()
            let n = answer.withUnsafeMutableBytes { shroud_udp_recvfrom(fd, $0.baseAddress, $0.count, &from, 500) }
            if n == MediaBind.encodedBytes && answer[0] == MediaBind.boundByte { return }
        }
        throw ScreenLoadError(description: "a participant could not bind")
    }
}

/// CPU time of this process's thread named `name`, in nanoseconds (the first schedstat field).
private func threadCPUNanoseconds(named name: String) -> UInt64? {
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return nil }
    for task in tasks {
        guard let comm = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8),
              comm.trimmingCharacters(in: .whitespacesAndNewlines) == name,
              let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/schedstat", encoding: .utf8),
              let first = stat.split(separator: " ").first else { continue }
        return UInt64(first)
    }
    return nil
}

/// What one row measured.
private struct ScreenRun {
    var sharerPackets: UInt64 = 0
    var received: UInt64 = 0
    var offered: UInt64 = 0
    var keyframeRequests = 0
    var cpuSeconds = 0.0
    var seconds = 0.0
    var loss: Double { offered == 0 ? 0 : max(0, Double(offered) - Double(received)) / Double(offered) }
    var cpuPercent: Double { cpuSeconds / seconds * 100 }
}

private func runShare(watchers count: Int, options: ScreenLoadOptions) throws -> ScreenRun {
    let router = MediaRouter()
    let server = try MediaPlaneServer(host: "127.0.0.1", port: 0, router: router, deliverToSessions: { _ in })
    server.start()
    defer { server.stop() }
    let relay = shroud_addr(high: 0, low: 0x7F00_0001, port: server.port, family: 4)
    let channel = ChannelID(validated: [UInt8](repeating: 0x5C, count: 16))
    var random = SystemRandomNumberGenerator()
    func join(_ participant: ScreenParticipant, _ purpose: RoomPurpose, connection: UInt64, cap: MediaLayer = MediaLayers.noCap) throws {
        let token = MediaToken(validated: (0 ..< 16).map { _ in UInt8.random(in: 0 ... 255, using: &random) })
        let grant = try router.withCore { core throws(MediaRoomCore.JoinRefusal) in
            try core.join(channel: channel, purpose: purpose, maximumLayer: cap, connection: ConnectionID(rawValue: connection),
                          transport: .datagram, token: token, now: systemMilliseconds())
        }
        participant.stream = grant.streamID
        try participant.bind(token, relay: relay)
    }
    let sharer = try ScreenParticipant()
    try join(sharer, .screenShare, connection: 1)
    var watchers: [ScreenParticipant] = []
    for index in 0 ..< count {
        let watcher = try ScreenParticipant()
        try join(watcher, .screenWatch, connection: UInt64(index + 2), cap: options.watcherCap)
        watchers.append(watcher)
    }
    // Each layer's frame at its bitrate, in as few packets as fit, of equal size.
    func split(_ bitrate: Int) -> (packets: Int, size: Int) {
        let bytes = max(1, bitrate / 8 / options.fps)
        let packets = (bytes + MediaPacket.maxPayloadBytes - 1) / MediaPacket.maxPayloadBytes
        return (packets, bytes / packets)
    }
    // The watched layer first in each frame, so the watchers' first keyframe is of their layer
    // (no one-frame blip of the other layer at the start of the share).
    let watchedLayer: MediaLayer = options.watcherCap >= 2 ? 2 : 0
    let layers: [(layer: MediaLayer, packets: Int, size: Int)] = [
        (2, split(options.topBitrate).packets, split(options.topBitrate).size),
        (0, split(options.lowBitrate).packets, split(options.lowBitrate).size),
    ].sorted { a, _ in a.0 == watchedLayer }
    let keyframeFactor = 3
    let interval = UInt64(1e9 / Double(options.fps))
    let start = shroud_monotonic_ns() + 50_000_000
    let until = start + UInt64(options.seconds * 1e9)
    let outcome = ListenOutcomeScreen()
    outcome.start(watchers.map(\.fd), until: until + 200_000_000)
    while shroud_monotonic_ns() < start { usleep(1000) }
    guard let cpuBefore = threadCPUNanoseconds(named: "shroud-media") else {
        throw ScreenLoadError(description: "cannot find the relay's media thread in /proc/self/task")
    }
    var run = ScreenRun()
    var sequences = [UInt32](repeating: 0, count: 8)
    var keyframeWanted: Set<MediaLayer> = [0, 2]
    var frame: UInt32 = 0
    var nextFrame = start
    var nextReport = start
    var toWatched: UInt64 = 0
    var buffer = [UInt8](repeating: 0, count: 64)
    while shroud_monotonic_ns() < until {
        frame += 1
        for (layer, packets, size) in layers {
            let filler = [UInt8](repeating: 0xA5, count: size)
            let keyframe = keyframeWanted.remove(layer) != nil
            let fragments = keyframe ? packets * keyframeFactor : packets
            for index in 0 ..< fragments {
                sequences[Int(layer)] += 1
                let packet = try MediaPacket(streamID: sharer.stream + UInt32(layer), sequence: sequences[Int(layer)], frameNumber: frame,
                                             fragmentIndex: index, fragmentCount: fragments, isKeyframe: keyframe, layer: layer, payload: filler)
                sharer.send(packet.serialized(), to: relay)
                run.sharerPackets += 1
                if layer == watchedLayer { toWatched += 1 }
            }
        }
        // The relay's keyframe requests (non-blocking).
        while true {
            var from = shroud_addr()
            let n = buffer.withUnsafeMutableBytes { shroud_udp_recvfrom(sharer.fd, $0.baseAddress, $0.count, &from, 0) }
            guard n > 0 else { break }
            // Receiver reports forwarded to the sharer land here too; only requests count.
            if let request = try? KeyframeRequest(parsing: Array(buffer.prefix(Int(n)))) {
                keyframeWanted.insert(request.layer)
                run.keyframeRequests += 1
            }
        }
        let now = shroud_monotonic_ns()
        if now >= nextReport {
            nextReport += 500_000_000
            let report = ReceiverReport(streamID: sharer.stream + UInt32(watchedLayer), fractionLost: 0, highestSequence: sequences[Int(watchedLayer)],
                                        cumulativeLost: 0, jitterMicroseconds: 0).serialized()
            for watcher in watchers { watcher.send(report, to: relay) }
        }
        nextFrame += interval
        let after = shroud_monotonic_ns()
        if nextFrame > after { usleep(UInt32((nextFrame - after) / 1000)) }
    }
    guard let cpuAfter = threadCPUNanoseconds(named: "shroud-media") else {
        throw ScreenLoadError(description: "the relay's media thread went away")
    }
    outcome.finished.wait()
    run.received = outcome.received
    // Every watcher should get its whole layer from its first keyframe (the first frame).
    run.offered = toWatched * UInt64(count)
    run.cpuSeconds = Double(cpuAfter - cpuBefore) / 1e9
    run.seconds = options.seconds
    return run
}

/// Counts what the watchers received; written by its thread, read after it signalled.
private final class ListenOutcomeScreen: @unchecked Sendable {
    var received: UInt64 = 0
    let finished = DispatchSemaphore(value: 0)

    func start(_ fds: [Int32], until: UInt64) {
        Thread { [self] in
            received = fds.withUnsafeBufferPointer { shroud_load_listen($0.baseAddress, Int32($0.count), until, nil, 0) }
            finished.signal()
        }.start()
    }
}

func loadScreen(_ arguments: [String]) throws {
    let options = try ScreenLoadOptions(arguments)
    print("## Screen share through the relay (watchers capped at layer \(options.watcherCap); 1080p \(options.topBitrate / 1000) kbit/s + 360p \(options.lowBitrate / 1000) kbit/s at \(options.fps) fps, payloads of up to \(MediaPacket.maxPayloadBytes) bytes, \(options.seconds) s per row, loopback)\n")
    print("| watchers | sharer packets/s | forwarded packets/s | loss % | keyframe requests | relay thread CPU % | CPU per watcher (% of a core) |")
    print("|---|---|---|---|---|---|---|")
    var baseline: Double?
    for count in options.watchers {
        let run = try runShare(watchers: count, options: options)
        let perWatcher = count == 0 ? "—" : String(format: "%.3f", (run.cpuPercent - (baseline ?? 0)) / Double(count))
        if count == 0 { baseline = run.cpuPercent }
        print("| \(count) | \(String(format: "%.0f", Double(run.sharerPackets) / run.seconds)) | \(String(format: "%.0f", Double(run.received) / run.seconds)) | \(String(format: "%.3f", run.loss * 100)) | \(run.keyframeRequests) | \(String(format: "%.2f", run.cpuPercent)) | \(perWatcher) |")
    }
    print("\nCPU per watcher = (relay thread CPU % − the 0-watcher row's) / watchers.")
}
