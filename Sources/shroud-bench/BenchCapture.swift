import ShroudMedia
import ShroudTestSupport

/// One step applied to every captured frame after capture (colour conversion, VP8 encode, …),
/// timed separately. The capture benchmark runs the stages in order on the borrowed frame.
struct CaptureStage {
    let name: String
    let process: (BorrowedScreenFrame) throws -> Void
}

/// The screen sizes the share offers (`--quality`).
private let captureSizes: [(quality: VideoQuality, size: PixelSize)] = [
    (.p360, PixelSize(width: 640, height: 360)),
    (.p720, PixelSize(width: 1280, height: 720)),
    (.p1080, PixelSize(width: 1920, height: 1080)),
]

/// The screen-sharing pipeline on one thread, per screen size: X11 capture (MIT-SHM and the
/// XGetImage fallback), libyuv BGRX→I420, VP8 encode at the quality's bitrate.
///
///     shroud-bench capture [--sizes 360p,720p,1080p] [--seconds S] [--capture-only]
///
/// Each size gets its own Xvfb showing the code fixture, scrolled by 8 lines before every frame
/// (painting is not timed), so the encoder sees a screen that changes like a scrolling editor
/// rather than a still one.
func benchCapture(_ arguments: [String]) throws {
    var seconds = 2.0
    var labels = captureSizes.map(\.quality.rawValue)
    var captureOnly = false
    var index = 0
    while index < arguments.count {
        let option = arguments[index]
        if option == "--capture-only" { captureOnly = true; index += 1; continue }
        guard index + 1 < arguments.count else { throw BenchError.failed("\(option) needs a value") }
        let value = arguments[index + 1]
        switch option {
        case "--seconds":
            guard let s = Double(value), s > 0 else { throw BenchError.failed("bad --seconds \(value)") }
            seconds = s
        case "--sizes": labels = value.split(separator: ",").map(String.init)
        default: throw BenchError.failed("unknown option \(option)")
        }
        index += 2
    }

    var table = Table("screen", "method", "frames", "capture ms", "convert ms", "VP8 encode ms", "total ms/frame", "fps")
    for label in labels {
        guard let entry = captureSizes.first(where: { $0.quality.rawValue == label }) else {
            throw BenchError.failed("unknown size \(label) (360p, 720p, 1080p)")
        }
        let (width, height) = (entry.size.width, entry.size.height)
        let server = try XvfbServer(width: width, height: height)
        defer { server.stop() }
        // The fixture at this size, stacked twice so any 8-line scroll offset is a full screen.
        let screen = try Fixtures.run(["-v", "error", "-i", Fixtures.path("screen-code.png"), "-vf", "scale=\(width):\(height)",
                                       "-f", "rawvideo", "-pix_fmt", "bgra", "-"])
        let tall = screen + screen
        let painter = try XPainter(server.displayName)
        let rowBytes = width * 4
        let scroll: (Int) -> Void = { frame in
            let offset = (frame * 8) % height
            painter.put(Array(tall[offset * rowBytes..<(offset + height) * rowBytes]), width: width, height: height, on: painter.root)
        }

        let x = try X11Display(name: server.displayName)
        for sharedMemory in [true, false] {
            let capturer = try ScreenCapturer(display: x, allowSharedMemory: sharedMemory)
            var stages: [CaptureStage] = []
            if !captureOnly {
                let converter = ScreenPictureConverter(quality: entry.quality)
                let encoder = try VP8Encoder(width: width, height: height, bitrate: entry.quality.defaultBitrate, fps: 30)
                var picture: I420Frame?
                var pts: Int64 = 0
                stages = [
                    CaptureStage(name: "convert") { picture = try converter.picture(from: $0) },
                    CaptureStage(name: "VP8 encode") { _ in
                        guard let picture else { return }
                        pts += 1
                        _ = try encoder.encode(picture, pts: pts)
                    },
                ]
            }
            let result = try runCapture(capturer, stages: stages, seconds: seconds, beforeFrame: scroll)
            table.add("\(label) (\(entry.size))", capturer.method.rawValue, "\(result.frames)", fmt(result.captureMs, 2),
                      result.stageMs.count > 0 ? fmt(result.stageMs[0], 2) : "–",
                      result.stageMs.count > 1 ? fmt(result.stageMs[1], 2) : "–",
                      fmt(result.totalMs, 2), fmt(1000 / result.totalMs, 0))
        }
    }
    table.print(title: "Screen pipeline, one thread, scrolling code screen (\(fmt(seconds, 1)) s per row)")
}

private struct CaptureResult {
    var frames: Int
    var captureMs: Double
    var stageMs: [Double]
    /// Capture plus stages; the untimed repaint between frames is left out.
    var totalMs: Double
}

/// Captures (and runs the stages) for `seconds` of measured time, after a short warm-up.
private func runCapture(_ capturer: ScreenCapturer, stages: [CaptureStage], seconds: Double,
                        beforeFrame: (Int) -> Void) throws -> CaptureResult {
    for i in 0..<5 {
        beforeFrame(i)
        try capturer.withNextFrame { frame in for stage in stages { try stage.process(frame) } }
    }
    var captureTime = 0.0
    var stageTimes = [Double](repeating: 0, count: stages.count)
    var frames = 0
    while captureTime + stageTimes.reduce(0, +) < seconds {
        beforeFrame(frames + 5)
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
    let perFrame = { (t: Double) in t * 1000 / Double(frames) }
    return CaptureResult(frames: frames, captureMs: perFrame(captureTime), stageMs: stageTimes.map(perFrame),
                         totalMs: perFrame(captureTime + stageTimes.reduce(0, +)))
}
