import Foundation
import ShroudMedia
import ShroudTestSupport

/// The real `shroud screen share` / `shroud screen watch` commands on loopback (issue 6, benchmark):
/// a relay, two fresh profiles in a private channel, a private 1920×1080 Xvfb.
///
///     shroud-bench screenshare [--seconds N]
///
/// - **Glass-to-glass**: a thread paints a `ScreenMarker` holding the wall clock in milliseconds
///   onto the shared screen every 100–134 ms (random phase against the capture ticks); the watcher
///   (`--read-marker`) reads it from every decoded picture and prints the wall clock when it did.
///   Each marker value's first sighting minus the value is one delay sample: capture wait (0–33 ms)
///   + conversion + encode + seal + relay + reassembly + open + decode (not the drawing of a
///   window). Same machine, same clock.
/// - **Sender CPU**: user + system time of the `screen share` process from /proc/PID/stat between
///   the 2nd second and the end, as % of one core.
/// - **Bitrate**: the sharer's own per-layer `statistics` lines, averaged from the 3rd second on,
///   for a still text screen and for the code screen scrolling 8 lines per frame.
func benchScreenShare(_ arguments: [String]) throws {
    var seconds = 10
    if arguments.count == 2, arguments[0] == "--seconds", let n = Int(arguments[1]), n >= 5 { seconds = n }
    else if !arguments.isEmpty { throw BenchError.failed("usage: shroud-bench screenshare [--seconds N≥5]") }
    let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
    for name in ["shroud", "shroud-relay"] where !FileManager.default.isExecutableFile(atPath: bin + "/" + name) {
        throw BenchError.notBuilt("\(bin)/\(name) (./tools/bench screenshare builds it)")
    }
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("shroud-bench-screen-\(getpid())").path
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: work) }
    let environment = ProcessInfo.processInfo.environment.merging(["SHROUD_PASSPHRASE": "screen bench"]) { $1 }

    func launch(_ executable: String, _ args: [String], out: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bin + "/" + executable)
        process.arguments = args
        process.environment = environment
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: out)
        process.standardError = FileHandle(forWritingAtPath: out + ".err")
        try runWithSignalsUnblocked(process)
        return process
    }
    func runToEnd(_ args: [String]) throws -> String {
        let out = work + "/cmd-\(UUID().uuidString)"
        let process = try launch("shroud", args, out: out)
        process.waitUntilExit()
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard process.terminationStatus == 0 else {
            throw BenchError.failed("shroud \(args.joined(separator: " ")): \((try? String(contentsOfFile: out + ".err", encoding: .utf8)) ?? "")")
        }
        return text
    }

    // Relay and profiles.
    _ = FileManager.default.createFile(atPath: work + "/relay.log", contents: nil)
    let relay = Process()
    relay.executableURL = URL(fileURLWithPath: bin + "/shroud-relay")
    relay.arguments = ["--host", "127.0.0.1", "--port", "0"]
    relay.currentDirectoryURL = URL(fileURLWithPath: work)
    relay.standardOutput = FileHandle(forWritingAtPath: work + "/relay.log")
    relay.standardError = FileHandle(forWritingAtPath: work + "/relay.log")
    try runWithSignalsUnblocked(relay)
    defer { relay.terminate(); relay.waitUntilExit() }
    var port: String?
    for _ in 0 ..< 100 where port == nil {
        usleep(100_000)
        let log = (try? String(contentsOfFile: work + "/relay.log", encoding: .utf8)) ?? ""
        port = log.split(separator: " ").first { $0.hasPrefix("port=") }.map { String($0.dropFirst(5)) }
    }
    guard let port else { throw BenchError.failed("the relay did not start") }
    let alice = work + "/alice", bob = work + "/bob"
    let server = ["--server", "ws://127.0.0.1:\(port)"]
    for home in [alice, bob] { _ = try runToEnd(["--home", home, "id", "new", "--json"]) }
    _ = try runToEnd(["--home", alice] + server + ["channel", "create", "bench", "--private"])
    let inviteLine = try runToEnd(["--home", alice] + server + ["--json", "channel", "invite", "bench", "--uses", "1"])
    guard let invite = (try? JSONSerialization.jsonObject(with: Data(inviteLine.utf8)) as? [String: Any])?["invite"] as? String else {
        throw BenchError.failed("no invite in \(inviteLine)")
    }
    _ = try runToEnd(["--home", bob] + server + ["channel", "join", invite])

    // The screen.
    let xvfb = try XvfbServer(width: 1920, height: 1080)
    defer { xvfb.stop() }
    let painter = try XPainter(xvfb.displayName)
    let raw = { (name: String) in try Fixtures.run(["-v", "error", "-i", Fixtures.path("\(name).png"), "-f", "rawvideo", "-pix_fmt", "bgra", "-"]) }
    let text = Array(try raw("screen-text")), code = Array(try raw("screen-code"))
    let tall = code + code
    let rowBytes = 1920 * 4

    func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the name: state is field 3, utime 14, stime 15.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    struct Outcome { var cpu: Double; var bitrates: [String: Double]; var delays: [Double] }

    /// One share of `seconds` with `paint(frame)` driving the screen at 30 Hz (nil: still) and an
    /// optional marker painter; a watcher at 1080p reading markers.
    func share(quality: String, paintScreen: ((Int) -> Void)?, marker: Bool) throws -> Outcome {
        painter.put(text, width: 1920, height: 1080, on: painter.root)
        let shareOut = work + "/share.out", watchOut = work + "/watch.out"
        let sharer = try launch("shroud", ["--home", alice] + server + ["--json", "screen", "share", "bench", "--display", xvfb.displayName,
                                                                      "--quality", quality, "--duration", "\(seconds)"], out: shareOut)
        let watcher = try launch("shroud", ["--home", bob] + server + ["--json", "screen", "watch", "bench", "--quality", quality,
                                                                     "--duration", "\(seconds - 1)"] + (marker ? ["--read-marker"] : []),
                                 out: watchOut)
        let stop = LockedFlag()
        let origin = ScreenMarker.origin(screenHeight: 1080)
        let job = PaintJob(painter: painter, paintScreen: paintScreen)
        let paintThread = Thread {
            let painter = job.painter, paintScreen = job.paintScreen
            var frame = 0
            var nextFrame = Date(), nextMarker = Date()
            while !stop.isSet {
                if marker, Date() >= nextMarker {
                    // A new value at a random phase against the 30 fps capture, so each sample
                    // includes the wait for the next capture (0–33 ms), as a real screen change does.
                    nextMarker = Date().addingTimeInterval(0.1 + Double.random(in: 0 ..< 0.034))
                    let now = UInt32(truncatingIfNeeded: Int64(Date().timeIntervalSince1970 * 1000))
                    let image = ScreenMarker.bgraImage(value: now, screenHeight: 1080)
                    painter.put(image.pixels, width: image.size.width, height: image.size.height, on: painter.root, x: origin.x, y: origin.y)
                }
                if let paintScreen, Date() >= nextFrame {
                    paintScreen(frame)
                    frame += 1
                    nextFrame = nextFrame.addingTimeInterval(1.0 / 30)
                }
                usleep(2_000)
            }
        }
        paintThread.start()
        // Wait for the sharer's start (profile unlock), then measure from the 2nd second of media.
        var started = Date()
        for _ in 0 ..< 200 {
            if ((try? String(contentsOfFile: shareOut, encoding: .utf8)) ?? "").contains("\"sharing\"") { started = Date(); break }
            usleep(50_000)
        }
        usleep(2_000_000)
        let cpuStart = cpuSeconds(sharer.processIdentifier), wallStart = Date()
        while Date().timeIntervalSince(started) < Double(seconds) - 0.5, sharer.isRunning { usleep(50_000) }
        let cpu = (cpuSeconds(sharer.processIdentifier) - cpuStart) / Date().timeIntervalSince(wallStart)
        sharer.waitUntilExit()
        watcher.waitUntilExit()
        stop.set()
        while paintThread.isExecuting { usleep(1_000) }

        func lines(_ path: String) -> [[String: Any]] {
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
        }
        var bitrates: [String: [Double]] = [:]
        for (index, line) in lines(shareOut).filter({ $0["event"] as? String == "statistics" && $0["final"] as? Bool == false }).enumerated()
        where index >= 2 {
            for layer in line["layers"] as? [[String: Any]] ?? [] {
                if let name = layer["quality"] as? String, let bits = layer["bitrate"] as? Int { bitrates[name, default: []].append(Double(bits)) }
            }
        }
        var firstSeen: [Int: Double] = [:]
        for line in lines(watchOut) where line["event"] as? String == "marker" {
            if let value = line["value"] as? Int, let at = line["at_ms"] as? Double, firstSeen[value] == nil { firstSeen[value] = at }
        }
        let delays = firstSeen.map { value, at in
            Double(UInt32(truncatingIfNeeded: Int64(at)) &- UInt32(value))
        }.filter { $0 < 10_000 }.sorted()
        return Outcome(cpu: cpu, bitrates: bitrates.mapValues { $0.reduce(0, +) / Double($0.count) }, delays: delays)
    }

    let scrolling: (Int) -> Void = { frame in
        let offset = (frame * 8) % 1080
        painter.put(Array(tall[offset * rowBytes ..< (offset + 1080) * rowBytes]), width: 1920, height: 1080, on: painter.root)
    }

    let glass = try share(quality: "1080p", paintScreen: nil, marker: true)
    func percentile(_ values: [Double], _ p: Double) -> Double {
        values.isEmpty ? .nan : values[min(values.count - 1, Int(Double(values.count - 1) * p))]
    }
    var delayTable = Table("share", "marker values read", "median ms", "p95 ms", "min ms", "max ms")
    delayTable.add("1080p30, text screen + marker", "\(glass.delays.count)", String(format: "%.0f", percentile(glass.delays, 0.5)),
                   String(format: "%.0f", percentile(glass.delays, 0.95)), String(format: "%.0f", glass.delays.first ?? .nan),
                   String(format: "%.0f", glass.delays.last ?? .nan))
    delayTable.print(title: "Glass-to-glass, \(seconds) s share on loopback (UDP)")

    var table = Table("share", "screen", "sender CPU (% of a core)", "top layer kbit/s", "360p layer kbit/s")
    for (quality, screenName, paint) in [("1080p", "still text", nil), ("1080p", "scrolling code", scrolling),
                                         ("360p", "still text", nil), ("360p", "scrolling code", scrolling)] as [(String, String, ((Int) -> Void)?)] {
        let outcome = try share(quality: quality, paintScreen: paint, marker: false)
        let top = quality == "360p" ? "-" : String(format: "%.0f", (outcome.bitrates[quality] ?? 0) / 1000)
        table.add("\(quality)30", screenName, String(format: "%.1f", outcome.cpu * 100), top,
                  String(format: "%.0f", (outcome.bitrates["360p"] ?? 0) / 1000))
    }
    table.print(title: "Sender CPU and bitrate, `screen share` process, \(seconds) s each, watched by one `screen watch`")
}

/// The painter and screen animation, handed to the painting thread (the only user while it runs).
private final class PaintJob: @unchecked Sendable {
    let painter: XPainter
    let paintScreen: ((Int) -> Void)?
    init(painter: XPainter, paintScreen: ((Int) -> Void)?) { self.painter = painter; self.paintScreen = paintScreen }
}

private final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
