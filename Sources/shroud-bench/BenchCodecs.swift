import ShroudMedia

// Codec benchmark: per resolution, one thread, libyuv BGRA→I420 and VP8 encode/decode on a
// scrolling screen (the hard case for a screen share: every frame changes), then Opus encode and
// decode of the speech fixture in × real time. Options: --cpu-used N, --frames N.

/// Loads a fixture PNG as 1080p BGRA through ffmpeg (the same path the tests take).
private func loadScreenBGRA(_ name: String) throws -> [UInt8] {
    let candidates = ["media-fixtures/\(name).png",
                      URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                          .deletingLastPathComponent().appendingPathComponent("media-fixtures/\(name).png").path]
    guard let path = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
        throw BenchError.failed("fixture \(name).png not found (run from the repository root)")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
    process.arguments = ["-nostdin", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "bgra", "-"]
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0, data.count == 1920 * 1080 * 4 else { throw BenchError.failed("ffmpeg could not decode \(path)") }
    return [UInt8](data)
}

/// `count` BGRA frames of the picture scrolled upward by `step` rows per frame (wrapping).
private func scrolledFrames(_ bgra: [UInt8], width: Int, height: Int, count: Int, step: Int) -> [[UInt8]] {
    let row = width * 4
    return (0 ..< count).map { i in
        let shift = (i * step % height) * row
        return Array(bgra[shift...] + bgra[..<shift])
    }
}

private func option(_ arguments: [String], _ name: String, default value: Int) -> Int {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count, let v = Int(arguments[i + 1]) else { return value }
    return v
}

func benchCodecs(_ arguments: [String]) throws {
    let cpuUsed = option(arguments, "--cpu-used", default: -6)
    let framesOption = option(arguments, "--frames", default: 0)
    let source = try ColorConversion.bgraToI420(try loadScreenBGRA("screen-code"), width: 1920, height: 1080)

    var video = Table("resolution", "bitrate", "BGRA→I420 ms", "VP8 encode ms", "convert+encode fps", "VP8 decode ms", "mean Y PSNR dB", "kbit/s out")
    let layers: [(name: String, width: Int, height: Int, bitrate: Int, frames: Int)] = [
        ("360p", 640, 360, 500_000, 600),
        ("720p", 1280, 720, 1_200_000, 300),
        ("1080p", 1920, 1080, 2_500_000, 150),
    ]
    for layer in layers {
        let frames = framesOption > 0 ? framesOption : layer.frames
        let picture = try ColorConversion.scale(source, width: layer.width, height: layer.height)
        let bgra = try ColorConversion.i420ToBGRA(picture)
        // 4 rows per frame at 1080p (scaled for smaller layers): a steady scroll at 30 fps.
        let inputs = scrolledFrames(bgra, width: layer.width, height: layer.height, count: 60, step: max(1, layer.height / 270))
        let encoder = try VP8Encoder(width: layer.width, height: layer.height, bitrate: layer.bitrate, fps: 30, threads: 1, cpuUsed: cpuUsed)
        let decoder = try VP8Decoder()
        var convertTime = 0.0, encodeTime = 0.0, decodeTime = 0.0, psnrSum = 0.0, psnrCount = 0, bytes = 0
        for i in 0 ..< frames {
            let t0 = now()
            let frame = try ColorConversion.bgraToI420(inputs[i % inputs.count], width: layer.width, height: layer.height)
            let t1 = now()
            let packets = try encoder.encode(frame)
            let t2 = now()
            convertTime += t1 - t0
            encodeTime += t2 - t1
            for packet in packets {
                bytes += packet.data.count
                let t3 = now()
                let decoded = try decoder.decode(packet.data)
                decodeTime += now() - t3
                if i % 10 == 9, let last = decoded.last {
                    psnrSum += try PictureQuality(reference: frame, reconstruction: last).lumaPSNR
                    psnrCount += 1
                }
            }
        }
        let n = Double(frames)
        video.add(layer.name, "\(layer.bitrate / 1000) kbit/s", fmt(convertTime / n * 1000, 2), fmt(encodeTime / n * 1000, 2),
                  fmt(n / (convertTime + encodeTime), 0), fmt(decodeTime / n * 1000, 2),
                  fmt(psnrSum / Double(max(1, psnrCount)), 1), fmt(Double(bytes * 8) / (n / 30) / 1000, 0))
    }
    video.print(title: "VP8 + libyuv, one thread, scrolling 1080p code screen (cpu-used \(cpuUsed), CBR, 30 fps timeline)")

    // Still screens: the quality the tests hold at ≥ 35 dB, after 1 s (30 frames) of a still screen.
    var still = Table("fixture", "resolution", "bitrate", "keyframe Y PSNR dB", "after 1 s Y PSNR dB", "keyframe bytes")
    for name in ["screen-text", "screen-code", "screen-ui"] {
        let full = try ColorConversion.bgraToI420(try loadScreenBGRA(name), width: 1920, height: 1080)
        for (width, height, bitrate) in [(1920, 1080, 2_500_000), (1280, 720, 1_200_000), (640, 360, 500_000)] {
            let picture = try ColorConversion.scale(full, width: width, height: height)
            let encoder = try VP8Encoder(width: width, height: height, bitrate: bitrate, fps: 30, cpuUsed: cpuUsed)
            let decoder = try VP8Decoder()
            var first = 0.0, last = 0.0, keyBytes = 0
            for i in 0 ..< 30 {
                for packet in try encoder.encode(picture) {
                    guard let decoded = try decoder.decode(packet.data).last else { continue }
                    let psnr = try PictureQuality(reference: picture, reconstruction: decoded).lumaPSNR
                    if i == 0 { first = psnr; keyBytes = packet.data.count }
                    last = psnr
                }
            }
            still.add(name, "\(height)p", "\(bitrate / 1000) kbit/s", fmt(first, 1), fmt(last, 1), "\(keyBytes)")
        }
    }
    still.print(title: "VP8 still-screen quality (cpu-used \(cpuUsed))")

    // Opus: the speech fixture repeated to 60 s.
    let speechPath = FileManager.default.fileExists(atPath: "media-fixtures/speech-48k-mono.wav") ? "media-fixtures/speech-48k-mono.wav"
        : URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("media-fixtures/speech-48k-mono.wav").path
    let speech = try WAVReader(path: speechPath).samples
    var audio = Table("channels", "frame", "bitrate", "rate control", "complexity", "encode × real time", "decode × real time")
    let settings = [(1, 32_000, true, 10), (1, 32_000, false, 10), (1, 32_000, true, 5), (1, 32_000, true, 1),
                    (1, 32_000, true, 0), (2, 64_000, true, 10), (2, 64_000, true, 0)]
    for (channels, bitrate, cbr, complexity) in settings {
        let encoder = try OpusEncoder(channels: channels, frameDuration: .ms20, bitrate: bitrate, constantBitrate: cbr, complexity: complexity)
        let decoder = try OpusDecoder(channels: channels)
        let frame = encoder.samplesPerFrame
        let input = channels == 1 ? speech : speech.flatMap { [$0, $0] }
        let frameCount = 3000   // 60 s
        let frames = (0 ..< frameCount).map { i -> [Int16] in
            let start = (i * frame) % (input.count - frame)
            return Array(input[start ..< start + frame])
        }
        var packets: [[UInt8]] = []
        packets.reserveCapacity(frameCount)
        let t0 = now()
        for f in frames { packets.append(try encoder.encode(f)) }
        let t1 = now()
        for p in packets { _ = try decoder.decode(p) }
        let t2 = now()
        let seconds = Double(frameCount) * 0.02
        audio.add("\(channels)", "20 ms", "\(bitrate / 1000) kbit/s", cbr ? "CBR" : "VBR", "\(complexity)", fmt(seconds / (t1 - t0), 0), fmt(seconds / (t2 - t1), 0))
    }
    audio.print(title: "Opus (FEC on, expected loss 10 %, voice, 60 s of speech, one thread)")
}
