import CX11
import Foundation
import ShroudMedia
import ShroudTestSupport
import Testing

/// `shroud devices` and `shroud media …` as a new user runs them, checked with an independent
/// decoder (ffmpeg): the issue's "Done when" for the media layer.
@Suite(.serialized) struct MediaEndToEndTests {
    let shroud = Binaries.path("shroud")

    /// Shows a 1920x1080 fixture screen on a fresh Xvfb and returns the server with the picture
    /// as the reference I420 frame (converted exactly as a capture is).
    private func screenShowing(_ fixture: String) throws -> (XvfbServer, I420Frame, [UInt8]) {
        let server = try XvfbServer(width: 1920, height: 1080)
        let bgra = try Fixtures.run(["-v", "error", "-i", Fixtures.path("\(fixture).png"), "-f", "rawvideo", "-pix_fmt", "bgra", "-"])
        let painter = try XPainter(server.displayName)
        painter.put(bgra, width: 1920, height: 1080, on: painter.root)
        return (server, try ColorConversion.bgraToI420(bgra, width: 1920, height: 1080), bgra)
    }

    /// Decodes `path` with ffmpeg into I420 frames of `width`×`height`.
    private func ffmpegFrames(_ path: String, width: Int, height: Int) throws -> [I420Frame] {
        let raw = try Fixtures.run(["-v", "error", "-i", path, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        let size = width * height + 2 * ((width + 1) / 2) * ((height + 1) / 2)
        return try stride(from: 0, to: raw.count - size + 1, by: size).map {
            try I420Frame(width: width, height: height, packed: raw[$0..<$0 + size])
        }
    }

    @Test(.timeLimit(.minutes(3))) func recordsA1080pScreenThatFFmpegDecodesAt35dB() throws {
        let (server, reference, _) = try screenShowing("screen-code")
        defer { server.stop() }
        let dir = TemporaryDirectory()
        let out = dir.path + "/screen.ivf"
        let result = try run(shroud, ["media", "record-screen", "--display", server.displayName, "--quality", "1080p",
                                      "--fps", "30", "--duration", "3", "--out", out, "--json"], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try #require(result.jsonLines.first)
        #expect(summary["method"] as? String == "shm")

        let frames = try ffmpegFrames(out, width: 1920, height: 1080)
        // Every frame the recorder reports is decodable, and every 1/30 s slot of the 3 s is either a
        // frame or a slot the pacer skipped because the (shared, loaded) CPU fell behind: real-time
        // capture drops frames rather than drifting, so the count alone depends on the machine's load.
        let recorded = try #require(summary["frames"] as? Int)
        let skipped = try #require(summary["skipped"] as? Int)
        #expect(frames.count == recorded, "ffmpeg decoded \(frames.count) of \(recorded) frames")
        #expect(recorded + skipped >= 75, "\(recorded) frames + \(skipped) skipped slots in 3 s at 30 fps")
        #expect(recorded >= 45, "only \(recorded) frames in 3 s")
        // The first frames build up quality from the keyframe; the issue asks for the steady picture.
        let psnr = try frames.dropFirst(30).map { try PictureQuality(reference: reference, reconstruction: $0).lumaPSNR }
        let worst = try #require(psnr.min())
        print("record-screen 1080p30: \(frames.count) frames, worst luma PSNR after 1 s \(String(format: "%.1f", worst)) dB")
        #expect(worst >= 35)
    }

    @Test(.timeLimit(.minutes(2))) func recordsScaledY4MAndOneWindow() throws {
        let (server, reference, _) = try screenShowing("screen-ui")
        defer { server.stop() }
        let dir = TemporaryDirectory()
        let out = dir.path + "/small.y4m"
        let result = try run(shroud, ["media", "record-screen", "--display", server.displayName, "--quality", "360p",
                                      "--fps", "10", "--duration", "1", "--out", out], timeout: 60)
        #expect(result.status == 0, "\(result.stderr)")
        var reader = try Y4MReader(path: out)
        #expect(reader.width == 640 && reader.height == 360)
        let frames = try reader.readAll()
        #expect(frames.count >= 8)
        let expected = try ColorConversion.scale(reference, width: 640, height: 360, filter: .box)
        #expect(try PictureQuality(reference: expected, reconstruction: try #require(frames.last)).lumaPSNR > 50,
                "an uncompressed recording is the screen, scaled")

        let painter = try XPainter(server.displayName)
        let window = painter.createWindow(x: 100, y: 50, width: 320, height: 240)
        let pattern = testPattern(width: 320, height: 240, seed: 5)
        painter.put(pattern, width: 320, height: 240, on: window)
        let windowOut = dir.path + "/window.y4m"
        let windowRun = try run(shroud, ["media", "record-screen", "--display", server.displayName, "--window", "0x" + String(window, radix: 16),
                                         "--fps", "5", "--duration", "0.5", "--out", windowOut], timeout: 60)
        #expect(windowRun.status == 0, "\(windowRun.stderr)")
        var windowReader = try Y4MReader(path: windowOut)
        #expect(windowReader.width == 320 && windowReader.height == 240)
        let windowFrame = try #require(try windowReader.readFrame())
        let patternI420 = try ColorConversion.bgraToI420(pattern, width: 320, height: 240)
        #expect(windowFrame == patternI420, "the window's pixels, exactly")
    }

    @Test(.timeLimit(.minutes(2))) func recordsSpeechToOggOpusThatFFmpegDecodesBackToTheSpeech() throws {
        let dir = TemporaryDirectory()
        let out = dir.path + "/speech.ogg"
        let speech = try Fixtures.speech()
        let result = try run(shroud, ["media", "record-audio", "--input", Fixtures.path("speech-48k-mono.wav"), "--out", out, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let decoded = try Fixtures.run(["-v", "error", "-i", out, "-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        let samples = decoded.withUnsafeBytes { Array($0.bindMemory(to: Int16.self)) }
        #expect(abs(samples.count - speech.samples.count) <= 960, "ffmpeg decodes the original length (\(samples.count) vs \(speech.samples.count))")
        // ffmpeg applies the pre-skip, so the speech lines up near lag 0; CBR 32 kbit/s voice keeps
        // the waveform (the Opus unit test measures 0.92 for the same material).
        let (correlation, lag) = AudioQuality.maxCorrelation(speech.samples, samples, maxLag: 960)
        print("record-audio: correlation \(String(format: "%.3f", correlation)) at lag \(lag)")
        #expect(correlation > 0.85)
        #expect(lag < 480)
    }

    @Test(.timeLimit(.minutes(2))) func recordsFromAnALSADevice() throws {
        let dir = TemporaryDirectory()
        let speech = try Fixtures.speech()
        let raw = dir.path + "/speech.raw"
        try Data(speech.samples.withUnsafeBytes { Array($0) }).write(to: URL(fileURLWithPath: raw))
        let config = dir.path + "/asound.conf"
        try """
            pcm.speechfile { type plug slave { pcm { type file file "/dev/null" infile "\(raw)" format "raw" slave.pcm null }
                             format S16_LE rate 48000 channels 1 } }
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let out = dir.path + "/device.ogg"
        // Two seconds: the file plugin returns the file's bytes, then leftovers (see docs/MEDIA.md).
        let result = try run(shroud, ["media", "record-audio", "--input", "speechfile", "--alsa-config", config,
                                      "--duration", "2", "--out", out])
        #expect(result.status == 0, "\(result.stderr)")
        let decoded = try Fixtures.run(["-v", "error", "-i", out, "-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        let samples = decoded.withUnsafeBytes { Array($0.bindMemory(to: Int16.self)) }
        #expect(abs(samples.count - 96_000) <= 960)
        let (correlation, _) = AudioQuality.maxCorrelation(Array(speech.samples.prefix(96_000)), samples, maxLag: 960)
        #expect(correlation > 0.85, "correlation \(correlation)")
    }

    @Test func badInputIsAOneLineErrorNeverACrash() throws {
        let dir = TemporaryDirectory()
        // A WAV cut in the middle of its header.
        let truncated = dir.path + "/cut.wav"
        let whole = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("speech-48k-mono.wav")))
        try whole.prefix(30).write(to: URL(fileURLWithPath: truncated))
        let cases: [([String], Int32, String)] = [
            (["media", "record-screen", "--display", ":87", "--duration", "1", "--out", dir.path + "/x.ivf"], 1, "X display"),
            (["media", "record-audio", "--input", "nosuchdevice", "--duration", "1", "--out", dir.path + "/x.ogg"], 1, "nosuchdevice"),
            (["media", "record-audio", "--input", truncated, "--out", dir.path + "/x.ogg"], 1, "WAV"),
            (["media", "record-audio", "--input", dir.path + "/missing.wav", "--out", dir.path + "/x.ogg"], 1, "missing.wav"),
            (["media", "record-screen", "--out", dir.path + "/x.mp4"], 2, ".ivf"),
            (["media", "record-screen", "--fps", "0", "--out", dir.path + "/x.ivf"], 2, "--fps"),
            (["media", "record-audio", "--bitrate", "1", "--out", dir.path + "/x.ogg"], 2, "--bitrate"),
            (["media", "record-screen", "--quality", "4k", "--out", dir.path + "/x.ivf"], 2, "quality"),
        ]
        for (arguments, status, mention) in cases {
            let result = try run(shroud, arguments, timeout: 30)
            #expect(result.status == status, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(mention), "\(arguments): \(result.stderr)")
            if status == 1 {
                #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
            }
        }
    }

    @Test(.timeLimit(.minutes(1))) func devicesListsARunningDisplay() throws {
        let server = try XvfbServer(width: 800, height: 600)
        defer { server.stop() }
        let result = try run(shroud, ["devices", "--json"])
        #expect(result.status == 0)
        let display = result.jsonLines.first { $0["kind"] as? String == "display" && $0["name"] as? String == server.displayName }
        #expect(display?["width"] as? Int == 800)
        #expect(result.jsonLines.contains { $0["kind"] as? String == "audio" && $0["name"] as? String == "null" })
    }
}
