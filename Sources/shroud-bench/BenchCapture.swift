import ShroudMedia

/// One step applied to every captured frame after capture (colour conversion, VP8 encode, …),
/// timed separately. The capture benchmark runs the stages in order on the borrowed frame.
struct CaptureStage {
    let name: String
    let process: (BorrowedScreenFrame) throws -> Void
}

/// The screen sizes the share offers (`--quality`).
private let captureSizes: [(label: String, size: PixelSize)] = [
    ("360p", PixelSize(width: 640, height: 360)),
    ("720p", PixelSize(width: 1280, height: 720)),
    ("1080p", PixelSize(width: 1920, height: 1080)),
]

/// X11 capture ms/frame and fps, MIT-SHM and the XGetImage fallback, per screen size.
///
///     shroud-bench capture [--display :N] [--sizes 360p,720p,1080p] [--seconds S]
///
/// Without `--display` it starts its own `Xvfb` for each size; with it, it measures that display
/// at its own size.
func benchCapture(_ arguments: [String]) throws {
    var display: String?
    var seconds = 2.0
    var labels = captureSizes.map(\.label)
    var index = 0
    while index < arguments.count {
        let option = arguments[index]
        guard index + 1 < arguments.count else { throw BenchError.failed("\(option) needs a value") }
        let value = arguments[index + 1]
        switch option {
        case "--display": display = value
        case "--seconds":
            guard let s = Double(value), s > 0 else { throw BenchError.failed("bad --seconds \(value)") }
            seconds = s
        case "--sizes": labels = value.split(separator: ",").map(String.init)
        default: throw BenchError.failed("unknown option \(option)")
        }
        index += 2
    }
    // Stages run after capture on each frame; empty today, conversion and encode plug in here.
    let stages: [CaptureStage] = []

    var table = Table("screen", "method", "frames", "capture ms/frame",
                      "stages ms/frame", "total ms/frame", "fps")
    func measure(_ name: String, label: String) throws {
        let x = try X11Display(name: name)
        for sharedMemory in [true, false] {
            let capturer = try ScreenCapturer(display: x, allowSharedMemory: sharedMemory)
            if sharedMemory && capturer.method != .sharedMemory {
                FileHandle.standardError.write(Data("\(name): no MIT-SHM, measuring XGetImage only\n".utf8))
                continue
            }
            let result = try runCapture(capturer, stages: stages, seconds: seconds)
            table.add(label, capturer.method.rawValue, "\(result.frames)", fmt(result.captureMs, 3),
                      stages.isEmpty ? "–" : result.stageMs.map { fmt($0, 3) }.joined(separator: " + "),
                      fmt(result.totalMs, 3), fmt(1000 / result.totalMs, 0))
        }
    }
    if let display {
        let size = try X11Display(name: display).screenSize()
        try measure(display, label: "\(display) \(size)")
    } else {
        for label in labels {
            guard let entry = captureSizes.first(where: { $0.label == label }) else {
                throw BenchError.failed("unknown size \(label) (360p, 720p, 1080p)")
            }
            let server = try BenchXvfb(size: entry.size)
            defer { server.stop() }
            try measure(server.displayName, label: "\(label) (\(entry.size))")
        }
    }
    table.print(title: "X11 capture, one thread (Xvfb, \(fmt(seconds, 1)) s per row)")
    Swift.print("\nstages: " + (stages.isEmpty ? "none (capture only)" : stages.map(\.name).joined(separator: ", ")))
}

private struct CaptureResult {
    var frames: Int
    var captureMs: Double
    var stageMs: [Double]
    var totalMs: Double
}

/// Captures (and runs the stages) as fast as possible for `seconds`, after a short warm-up.
private func runCapture(_ capturer: ScreenCapturer, stages: [CaptureStage], seconds: Double) throws -> CaptureResult {
    for _ in 0..<5 { try capturer.withNextFrame { frame in for stage in stages { try stage.process(frame) } } }
    var captureTime = 0.0
    var stageTimes = [Double](repeating: 0, count: stages.count)
    var frames = 0
    let start = now()
    while now() - start < seconds {
        let before = now()
        var afterCapture = before
        try capturer.withNextFrame { frame in
            afterCapture = now()
            var mark = afterCapture
            for (i, stage) in stages.enumerated() {
                try stage.process(frame)
                let t = now()
                stageTimes[i] += t - mark
                mark = t
            }
        }
        captureTime += afterCapture - before
        frames += 1
    }
    let total = now() - start
    return CaptureResult(frames: frames, captureMs: captureTime * 1000 / Double(frames),
                         stageMs: stageTimes.map { $0 * 1000 / Double(frames) },
                         totalMs: total * 1000 / Double(frames))
}

/// An Xvfb started for one measurement on a display number it picks itself (`-displayfd`).
private final class BenchXvfb {
    let displayName: String
    private let process = Process()

    init(size: PixelSize) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/Xvfb")
        process.arguments = ["-displayfd", "1", "-screen", "0", "\(size.width)x\(size.height)x24", "-nolisten", "tcp"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var line = Data()
        let reader = output.fileHandleForReading
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = reader.availableData  // EOF (empty) when Xvfb exits
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let number = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            process.waitUntilExit()
            throw BenchError.failed("Xvfb did not start")
        }
        displayName = ":\(number)"
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}
