import ShroudTestSupport
import Foundation
import Testing
@testable import ShroudMedia

/// Every prefix of a valid file (cut at a few points) must throw a MediaError whose reason is one line.
func expectEveryTruncationFails(_ bytes: [UInt8], cuts: [Int], parse: ([UInt8]) throws -> Void) {
    for cut in cuts where cut < bytes.count {
        do {
            try parse(Array(bytes.prefix(cut)))
            Issue.record("prefix of \(cut) of \(bytes.count) bytes parsed")
        } catch let error as MediaError {
            #expect(!error.description.contains("\n") && !error.description.isEmpty)
        } catch {
            Issue.record("unexpected error type \(error)")
        }
    }
}

/// The one-line reason of the MediaError `body` throws ("no error" when it does not throw).
func reason(_ body: () throws -> Any) -> String {
    do { _ = try body(); return "no error" } catch { return "\(error)" }
}

@Suite("WAV")
struct WAVTests {
    @Test func roundTrip() throws {
        let samples: [Int16] = [0, 1, -1, .max, .min, 1234, -4321, 7]
        let writer = try WAVWriter(sampleRate: 48_000, channels: 2)
        try writer.write(samples)
        try writer.finish()
        #expect(writer.bytes.count == 44 + 16)
        let reader = try WAVReader(parsing: writer.bytes)
        #expect(reader.sampleRate == 48_000 && reader.channels == 2 && reader.samples == samples)
    }

    @Test func fileRoundTripAndFixture() throws {
        let speech = try Fixtures.speech()
        #expect(speech.duration > 3 && speech.duration < 6)
        let path = Fixtures.temporaryPath("speech.wav")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try WAVWriter(path: path, sampleRate: 48_000, channels: 1)
        try writer.write(Array(speech.samples.prefix(1000)))
        try writer.write(Array(speech.samples.dropFirst(1000)))
        try writer.finish()
        #expect(try WAVReader(path: path).samples == speech.samples)
        // sox/ffmpeg agree: ffmpeg reads our file back to the same samples.
        let raw = try Fixtures.run(["-v", "error", "-i", path, "-f", "s16le", "-"])
        #expect(raw.count == speech.samples.count * 2)
    }

    @Test func truncatedAndMalformed() throws {
        let writer = try WAVWriter(sampleRate: 8_000, channels: 1)
        try writer.write([Int16](repeating: 100, count: 50))
        try writer.finish()
        let good = writer.bytes
        expectEveryTruncationFails(good, cuts: [0, 3, 11, 20, 35, 43, 44, 100, good.count - 1]) { _ = try WAVReader(parsing: $0) }
        #expect(throws: MediaError.file("WAV: truncated: data chunk declares 100 bytes but 99 remain")) {
            try WAVReader(parsing: Array(good.dropLast()))
        }
        var notPCM = good; notPCM[20] = 3   // IEEE float
        #expect(throws: MediaError.file("WAV: format tag 3 is not PCM")) { try WAVReader(parsing: notPCM) }
        var eightBit = good; eightBit[34] = 8
        #expect(throws: MediaError.file("WAV: 8-bit samples are not supported (16-bit only)")) { try WAVReader(parsing: eightBit) }
        #expect(throws: MediaError.file("WAV: not a RIFF file")) { try WAVReader(parsing: Array("RIFX".utf8) + good.dropFirst(4)) }
    }

    @Test func channelAndRateLimits() throws {
        _ = try WAVWriter(sampleRate: WAV.maxSampleRate, channels: WAV.maxChannels)
        #expect(throws: MediaError.self) { try WAVWriter(sampleRate: WAV.maxSampleRate + 1, channels: 1) }
        #expect(throws: MediaError.self) { try WAVWriter(sampleRate: 48_000, channels: WAV.maxChannels + 1) }
        func header(channels: Int, rate: Int) throws -> [UInt8] {
            let w = try WAVWriter(sampleRate: 48_000, channels: 1)
            try w.finish()
            var b = w.bytes
            b.storeLE(UInt16(channels), at: 22); b.storeLE(UInt32(rate), at: 24); b.storeLE(UInt16(channels * 2), at: 32)
            return b
        }
        _ = try WAVReader(parsing: try header(channels: WAV.maxChannels, rate: WAV.maxSampleRate))
        #expect(throws: MediaError.file("WAV: 9 channels is outside 1...8")) { try WAVReader(parsing: try header(channels: 9, rate: 48_000)) }
        #expect(throws: MediaError.file("WAV: sample rate 384001 is outside 1...384000")) {
            try WAVReader(parsing: try header(channels: 1, rate: WAV.maxSampleRate + 1))
        }
    }
}

@Suite("Y4M")
struct Y4MTests {
    static func picture(_ width: Int, _ height: Int, seed: UInt64) throws -> I420Frame {
        var random = SeededBytes(seed: seed)
        let sizes = I420Frame.planeSizes(width: width, height: height)
        return try I420Frame(width: width, height: height, y: random.next(sizes.luma), u: random.next(sizes.chroma), v: random.next(sizes.chroma))
    }

    @Test func roundTripAndFFmpegReadsIt() throws {
        let frames = try (0 ..< 3).map { try Self.picture(33, 17, seed: UInt64($0 + 1)) }
        let path = Fixtures.temporaryPath("clip.y4m")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try Y4MWriter(path: path, width: 33, height: 17, fps: 30)
        for f in frames { try writer.write(f) }
        try writer.finish()
        var reader = try Y4MReader(path: path)
        #expect(reader.width == 33 && reader.height == 17 && reader.frameRate == (30, 1))
        #expect(try reader.readAll() == frames)
        let raw = try Fixtures.run(["-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        #expect(raw == frames.flatMap(\.packedBytes))
    }

    /// ffmpeg writes Y4M too; Shroud reads what it writes.
    @Test func readsFFmpegOutput() throws {
        let y4m = try Fixtures.run(["-v", "error", "-i", Fixtures.path("screen-ui.png"), "-vf", "scale=320:180", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "-"])
        var reader = try Y4MReader(parsing: y4m)
        let frames = try reader.readAll()
        #expect(frames.count == 1 && frames[0].width == 320 && frames[0].height == 180)
    }

    @Test func truncatedAndMalformed() throws {
        let writer = try Y4MWriter(width: 8, height: 4, fps: 25)
        try writer.write(try Self.picture(8, 4, seed: 3))
        try writer.finish()
        let good = writer.bytes
        expectEveryTruncationFails(good, cuts: [1, 10, 40, good.count - 48, good.count - 1]) { bytes in
            var r = try Y4MReader(parsing: bytes)
            _ = try r.readAll()
        }
        let bad: [(String, String)] = [
            ("YUV4MPEG2 W8 H4 F25:1 C444\n", "Y4M: colour space C444 is not supported (8-bit 4:2:0 only)"),
            ("YUV4MPEG2 W8 F25:1\n", "Y4M: header lacks W or H"),
            ("YUV4MPEG2 W0 H4\n", "Y4M: picture size 0x4 is invalid"),
            ("YUV4MPEG2 W99999 H4\n", "Y4M: picture size 99999x4 is invalid"),
            ("YUV4MPEG2 W8 H4 F0:1\n", "Y4M: bad frame rate '0:1'"),
            ("YUV4MPEG W8 H4\n", "Y4M: missing YUV4MPEG2 signature"),
        ]
        for (header, reason) in bad {
            #expect(throws: MediaError.file(reason)) { try Y4MReader(parsing: Array(header.utf8)) }
        }
        var wrongMarker = try Y4MReader(parsing: Array("YUV4MPEG2 W8 H4\nFRAMX\n".utf8) + [UInt8](repeating: 0, count: 48))
        #expect(throws: MediaError.file("Y4M: expected FRAME, found 'FRAMX'")) { try wrongMarker.readFrame() }
    }

    @Test func headerLineLimit() throws {
        func header(length: Int) -> [UInt8] {
            let base = "YUV4MPEG2 W8 H4 X"
            return Array((base + String(repeating: "x", count: length - base.count) + "\n").utf8)
        }
        _ = try Y4MReader(parsing: header(length: Y4M.maxLineLength))
        #expect(throws: MediaError.file("Y4M: header line longer than 1024 bytes")) { try Y4MReader(parsing: header(length: Y4M.maxLineLength + 1)) }
    }
}

@Suite("IVF")
struct IVFTests {
    static func frames() -> [EncodedVideoFrame] {
        var random = SeededBytes(seed: 11)
        return (0 ..< 4).map { i in
            var data = random.next(10 + i * 7)
            data[0] = i == 0 ? 0x10 : 0x11   // keyframe bit (bit 0 clear) on the first only
            return EncodedVideoFrame(data: data, isKeyframe: i == 0, pts: Int64(i))
        }
    }

    @Test func roundTrip() throws {
        let writer = try IVFWriter(width: 640, height: 360, fps: 30)
        for f in Self.frames() { try writer.write(f) }
        try writer.finish()
        var reader = try IVFReader(parsing: writer.bytes)
        #expect(reader.width == 640 && reader.height == 360 && reader.timeBase == (1, 30) && reader.declaredFrameCount == 4)
        #expect(try reader.readAll() == Self.frames())
    }

    @Test func truncatedAndMalformed() throws {
        let writer = try IVFWriter(width: 64, height: 48, fps: 30)
        for f in Self.frames() { try writer.write(f) }
        try writer.finish()
        let good = writer.bytes
        expectEveryTruncationFails(good, cuts: [0, 4, 31, 33, 43, 50, good.count - 1]) { bytes in
            var r = try IVFReader(parsing: bytes)
            _ = try r.readAll()
        }
        var vp9 = good; vp9.replaceSubrange(8 ..< 12, with: Array("VP90".utf8))
        #expect(throws: MediaError.file("IVF: codec 'VP90' is not VP8")) { try IVFReader(parsing: vp9) }
        var noSize = good; noSize.replaceSubrange(12 ..< 14, with: [0, 0])
        #expect(throws: MediaError.file("IVF: picture size 0x48 is invalid")) { try IVFReader(parsing: noSize) }
        #expect(throws: MediaError.file("IVF: missing DKIF signature")) { try IVFReader(parsing: [UInt8](repeating: 0, count: 32)) }
    }

    /// A frame header may declare at most IVF.maxFrameBytes.
    @Test func frameSizeLimit() throws {
        let writer = try IVFWriter(width: 64, height: 48, fps: 30)
        try writer.finish()
        func file(declaring size: Int, carrying: Int) -> [UInt8] {
            var bytes = writer.bytes
            bytes.appendLE(UInt32(size)); bytes.appendLE(UInt64(0))
            bytes += [UInt8](repeating: 0x10, count: carrying)
            return bytes
        }
        var atLimit = try IVFReader(parsing: file(declaring: IVF.maxFrameBytes, carrying: IVF.maxFrameBytes))
        #expect(try atLimit.readFrame()?.data.count == IVF.maxFrameBytes)
        var pastLimit = try IVFReader(parsing: file(declaring: IVF.maxFrameBytes + 1, carrying: 16))
        #expect(throws: MediaError.file("IVF: frame size 16777217 is outside 1...16777216")) { try pastLimit.readFrame() }
        #expect(throws: MediaError.self) { try IVFWriter(width: 64, height: 48, fps: 30).write(EncodedVideoFrame(data: [], isKeyframe: true, pts: 0)) }
    }
}
