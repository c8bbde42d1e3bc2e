import ShroudTestSupport
import Foundation
import Testing
@testable import ShroudMedia

@Suite("Ogg Opus")
struct OggOpusTests {
    /// Speech encoded at 20 ms, written to Ogg with the original length as the end of stream.
    static func speechFile() throws -> (writer: OggOpusWriter, packets: [[UInt8]], samples: Int, preSkip: Int) {
        let speech = try Fixtures.speech()
        let encoder = try OpusEncoder(channels: 1, bitrate: 32_000)
        let packets = try encodeFrames(speech.samples, with: encoder)
        let writer = try OggOpusWriter(channels: 1, preSkip: encoder.lookahead, serialNumber: 0x5348_524F)
        for p in packets { try writer.write(p) }
        try writer.finish(sampleCount: speech.samples.count)
        return (writer, packets, speech.samples.count, encoder.lookahead)
    }

    @Test func roundTrip() throws {
        let (writer, packets, samples, preSkip) = try Self.speechFile()
        let reader = try OggOpusReader(parsing: writer.bytes)
        #expect(reader.head == OpusHead(channels: 1, preSkip: preSkip))
        #expect(reader.vendor == "Shroud" && reader.comments.isEmpty)
        #expect(reader.packets == packets)
        #expect(reader.sampleCount == samples)
        #expect(reader.finalGranule == Int64(preSkip + samples))
    }

    /// Pages follow RFC 7845: OpusHead alone on a first page, OpusTags on the second, audio pages
    /// of at most one second, the last one flagged end-of-stream, every CRC valid.
    @Test func pageLayout() throws {
        let bytes = try Self.speechFile().writer.bytes
        var pages: [(flags: UInt8, granule: Int64, segments: Int)] = []
        var offset = 0
        while offset < bytes.count {
            var r = FileBytes(format: "test", bytes: bytes, offset: offset)
            _ = try r.take(5, "")
            let flags = try r.u8("")
            let granule = Int64(bitPattern: try r.u64(""))
            try r.skip(12, "")
            let n = Int(try r.u8(""))
            let size = try r.take(n, "").reduce(0) { $0 + Int($1) }
            pages.append((flags, granule, n))
            offset = r.offset + size
        }
        #expect(pages[0].flags == 0x02 && pages[0].granule == 0 && pages[0].segments == 1)
        #expect(pages[1].flags == 0x00 && pages[1].granule == 0)
        #expect(pages.last?.flags == 0x04)
        #expect(pages.dropFirst(2).dropLast().allSatisfy { $0.flags == 0 })
        let granules = pages.dropFirst(2).map(\.granule)
        #expect(zip(granules, granules.dropFirst()).allSatisfy { $1 - $0 <= Int64(OggOpus.maxPageDurationSamples) })
        #expect(pages.count == 2 + 5)   // 4.96 s of audio in pages of at most 1 s
    }

    @Test func crcMatchesTheOggSpecification() {
        // Pin the polynomial and bit order: CRC-32/MPEG-2 without the initial/final inversion
        // ("CRC-32/BZIP2" unreflected, init 0): "123456789" → 0x89A1897F.
        #expect(OggOpus.crc(Array("123456789".utf8)) == 0x89A1_897F)
    }

    @Test func truncatedAndMalformed() throws {
        let writer = try OggOpusWriter(channels: 2, preSkip: 312, serialNumber: 1)
        let encoder = try OpusEncoder(channels: 2)
        for _ in 0 ..< 60 { try writer.write(try encoder.encode([Int16](repeating: 0, count: 1920))) }
        try writer.finish()
        let good = writer.bytes
        _ = try OggOpusReader(parsing: good)
        expectEveryTruncationFails(good, cuts: [0, 4, 26, 30, 47, 60, 100, good.count / 2, good.count - 1]) { _ = try OggOpusReader(parsing: $0) }
        #expect(reason { try OggOpusReader(parsing: Array(good.dropLast())) }.hasPrefix("Ogg Opus: truncated in page data (needs "))
        var flipped = good; flipped[good.count - 5] ^= 0x40
        #expect(reason { try OggOpusReader(parsing: flipped) }.hasPrefix("Ogg Opus: CRC mismatch on page"))
        var notOgg = good; notOgg[0] = UInt8(ascii: "X")
        #expect(throws: MediaError.file("Ogg Opus: missing OggS capture pattern at offset 0")) { try OggOpusReader(parsing: notOgg) }
    }

    /// Dropping a whole page (a hole in the sequence numbers) is detected, not papered over.
    @Test func missingPageIsDetected() throws {
        let bytes = try Self.speechFile().writer.bytes
        // Page boundaries: find the third "OggS" (first audio page) and the fourth.
        var starts: [Int] = []
        for i in 0 ..< bytes.count - 4 where bytes[i ..< i + 4].elementsEqual("OggS".utf8) { starts.append(i) }
        let holed = Array(bytes[..<starts[2]]) + Array(bytes[starts[3]...])
        #expect(throws: MediaError.file("Ogg Opus: page 2 is missing (found 3)")) { try OggOpusReader(parsing: holed) }
    }

    /// Builds Ogg pages by hand (any lacing, any flags) for the reader's continuation paths.
    static func rawPages(_ packets: [[UInt8]], firstSequence: UInt32 = 0, serial: UInt32 = 5, flagsOfFirst: UInt8 = 0, last: Bool = false, granule: Int64 = 0) -> [UInt8] {
        // Lace all packets, then cut the lacing into pages of at most 255 values.
        var lacing: [UInt8] = [], data: [UInt8] = []
        for p in packets {
            lacing += [UInt8](repeating: 255, count: p.count / 255) + [UInt8(p.count % 255)]
            data += p
        }
        var out: [UInt8] = [], sequence = firstSequence, index = 0, offset = 0
        var continued = false
        while index < lacing.count {
            let values = Array(lacing[index ..< min(lacing.count, index + 255)])
            let size = values.reduce(0) { $0 + Int($1) }
            var flags: UInt8 = continued ? 0x01 : 0
            if index == 0 { flags |= flagsOfFirst }
            let isLast = index + values.count == lacing.count
            if isLast && last { flags |= 0x04 }
            var page: [UInt8] = Array("OggS".utf8) + [0, flags]
            page.appendLE(isLast ? granule : -1); page.appendLE(serial); page.appendLE(sequence); page.appendLE(UInt32(0))
            page.append(UInt8(values.count)); page += values; page += data[offset ..< offset + size]
            page.storeLE(OggOpus.crc(page), at: 22)
            out += page
            continued = values.last == 255
            sequence += 1; index += values.count; offset += size
        }
        return out
    }

    /// A file whose OpusTags packet is `tagsSize` bytes, spread over as many pages as it needs.
    static func fileWithTags(ofSize tagsSize: Int) throws -> [UInt8] {
        var tags = OggOpus.tagsMagic
        tags.appendLE(UInt32(tagsSize - 16))
        tags += [UInt8](repeating: UInt8(ascii: "v"), count: tagsSize - 16)
        tags.appendLE(UInt32(0))
        let head = rawPages([OpusHead(channels: 1, preSkip: 312).serialized()], flagsOfFirst: 0x02)
        let tagPages = rawPages([tags], firstSequence: 1)
        let pageCount = UInt32((tags.count / 255 + 1 + 254) / 255)
        let packet = try OpusEncoder().encode([Int16](repeating: 0, count: 960))
        let audio = rawPages([packet], firstSequence: 1 + pageCount, last: true, granule: 960)
        return head + tagPages + audio
    }

    /// Packets continue across pages (flag 0x01), up to the OpusTags limit and not one byte past it.
    @Test func packetsSpanningPagesAndTheTagsLimit() throws {
        let atLimit = try OggOpusReader(parsing: try Self.fileWithTags(ofSize: OggOpus.maxTagsBytes))
        #expect(atLimit.vendor.count == OggOpus.maxTagsBytes - 16)
        #expect(atLimit.packets.count == 1 && atLimit.sampleCount == 960 - 312)
        #expect(throws: MediaError.file("Ogg Opus: packet larger than 1048576 bytes")) {
            try OggOpusReader(parsing: try Self.fileWithTags(ofSize: OggOpus.maxTagsBytes + 1))
        }
    }

    /// The writer starts a new page before a page would exceed 255 lacing values.
    @Test func pagesStayWithin255Segments() throws {
        let encoder = try OpusEncoder(channels: 2, frameDuration: .ms10, bitrate: 510_000, application: .audio)
        let writer = try OggOpusWriter(channels: 2, preSkip: encoder.lookahead, serialNumber: 3)
        var random = SeededBytes(seed: 5)
        var packets: [[UInt8]] = []
        for _ in 0 ..< 150 {
            let noise = random.next(960).map { Int16(Int8(bitPattern: $0)) * 64 }
            packets.append(try encoder.encode(noise))
            try writer.write(packets.last ?? [])
        }
        try writer.finish()
        #expect(packets.allSatisfy { $0.count > 510 })   // three lacing values each
        let bytes = writer.bytes
        var offset = 0, segmentCounts: [Int] = []
        while offset < bytes.count {
            let n = Int(bytes[offset + 26])
            segmentCounts.append(n)
            offset += 27 + n + bytes[offset + 27 ..< offset + 27 + n].reduce(0) { $0 + Int($1) }
        }
        #expect(segmentCounts.allSatisfy { $0 <= OggOpus.maxSegmentsPerPage })
        #expect(segmentCounts.dropFirst(2).first == 255)   // 85 packets × 3 values fill the first audio page
        #expect(try OggOpusReader(parsing: bytes).packets == packets)
    }

    @Test func headerValidation() throws {
        #expect(throws: MediaError.self) { try OggOpusWriter(channels: 3, preSkip: 0, serialNumber: 0) }
        #expect(throws: MediaError.self) { try OggOpusWriter(channels: 1, preSkip: 65_536, serialNumber: 0) }
        _ = try OggOpusWriter(channels: 1, preSkip: 65_535, serialNumber: 0)
        var head = OpusHead(channels: 2, preSkip: 312).serialized()
        #expect(try OpusHead(parsing: head) == OpusHead(channels: 2, preSkip: 312))
        head[18] = 1
        #expect(throws: MediaError.file("Ogg Opus: channel mapping family 1 is not supported (mono/stereo only)")) { try OpusHead(parsing: head) }
        head[18] = 0; head[8] = 0x10
        #expect(throws: MediaError.file("Ogg Opus: OpusHead version 16 is not supported")) { try OpusHead(parsing: head) }
        let writer = try OggOpusWriter(channels: 1, preSkip: 312, serialNumber: 0)
        #expect(throws: MediaError.self) { try writer.write([]) }
        try writer.write(try OpusEncoder().encode([Int16](repeating: 0, count: 960)))
        #expect(throws: MediaError.file("Ogg Opus: sample count 961 does not fall within the last page")) { try writer.finish(sampleCount: 961) }
    }
}

/// ffmpeg, an independent implementation, opens what Shroud writes and decodes the same content.
@Suite("ffmpeg interoperability")
struct FFmpegInteropTests {
    /// ffmpeg's native VP8 decoder is bit-exact with libvpx: its pictures from our IVF equal ours.
    @Test func ffmpegDecodesOurIVFIdentically() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-code"), width: 640, height: 360)
        let encoder = try VP8Encoder(width: 640, height: 360, bitrate: 600_000)
        let decoder = try VP8Decoder()
        let path = Fixtures.temporaryPath("clip.ivf")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try IVFWriter(path: path, width: 640, height: 360, fps: 30)
        var ours: [UInt8] = []
        for i in 0 ..< 12 {
            // Scroll the picture a little each frame so inter frames carry real motion.
            let shift = i * 4 * 640
            var moving = picture
            moving.y = Array(picture.y[shift...] + picture.y[..<shift])
            for packet in try encoder.encode(moving, forceKeyframe: i == 8) {
                try writer.write(packet)
                for frame in try decoder.decode(packet.data) { ours += frame.packedBytes }
            }
        }
        try writer.finish()
        var reader = try IVFReader(path: path)
        #expect(try reader.readAll().count == 12)
        let theirs = try Fixtures.run(["-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        #expect(theirs.count == ours.count)
        #expect(theirs == ours)
    }

    /// ffmpeg honours pre-skip and the end-of-stream granule: it decodes exactly the original
    /// length with both of its decoders. Through libopus (the same decoder as ours) the samples are
    /// identical; through ffmpeg's own Opus decoder, an independent implementation that resamples
    /// SILK differently, the audio still correlates above 0.9 at lag 0 (0.960 measured), so
    /// timing and content agree.
    @Test func ffmpegDecodesOurOggOpus() throws {
        let (writer, packets, samples, preSkip) = try OggOpusTests.speechFile()
        let path = Fixtures.temporaryPath("speech.opus")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(writer.bytes)))
        let decoder = try OpusDecoder()
        var ours: [Int16] = []
        for p in packets { ours += try decoder.decode(p) }
        let trimmed = Array(ours[preSkip ..< preSkip + samples])
        for (codec, threshold) in [("opus", 0.9), ("libopus", 0.999)] {
            let raw = try Fixtures.run(["-v", "error", "-c:a", codec, "-i", path, "-f", "s16le", "-ar", "48000", "-ac", "1", "-"])
            let theirs = stride(from: 0, to: raw.count - 1, by: 2).map { Int16(bitPattern: UInt16(raw[$0]) | UInt16(raw[$0 + 1]) << 8) }
            #expect(theirs.count == samples, "\(codec)")
            let correlation = AudioQuality.maxCorrelation(trimmed, theirs, maxLag: 0)
            print("ffmpeg \(codec) decoder vs ours: correlation \(correlation.value) at lag 0")
            #expect(correlation.value > threshold, "\(codec): \(correlation.value)")
            if codec == "libopus" {
                let differing = zip(trimmed, theirs).filter { $0 != $1 }.count
                print("ffmpeg libopus decoder vs ours: \(differing) of \(samples) samples differ")
                #expect(differing == 0)
            }
        }
    }

    /// The other direction: Shroud reads the Ogg Opus and IVF files ffmpeg writes (with libopus and
    /// libvpx) and decodes them to the right length and size.
    @Test func weReadFFmpegFiles() throws {
        let opusPath = Fixtures.temporaryPath("ff.opus"), ivfPath = Fixtures.temporaryPath("ff.ivf")
        defer {
            try? FileManager.default.removeItem(atPath: opusPath)
            try? FileManager.default.removeItem(atPath: ivfPath)
        }
        try Fixtures.run(["-v", "error", "-i", Fixtures.path("speech-48k-mono.wav"), "-c:a", "libopus", "-b:a", "32k", opusPath])
        let ogg = try OggOpusReader(path: opusPath)
        let speech = try Fixtures.speech()
        #expect(ogg.head.channels == 1 && ogg.sampleCount == speech.samples.count)
        #expect(ogg.vendor.hasPrefix("Lavf") && !ogg.comments.isEmpty)
        let decoder = try OpusDecoder()
        var decoded = 0
        for packet in ogg.packets { decoded += try decoder.decode(packet).count }
        #expect(decoded >= ogg.sampleCount + ogg.head.preSkip)

        try Fixtures.run(["-v", "error", "-i", Fixtures.path("screen-ui.png"), "-vf", "scale=320:180,loop=9:1:0",
                          "-pix_fmt", "yuv420p", "-c:v", "libvpx", "-b:v", "300k", "-f", "ivf", ivfPath])
        var ivf = try IVFReader(path: ivfPath)
        #expect(ivf.width == 320 && ivf.height == 180)
        let frames = try ivf.readAll()
        #expect(frames.count == 10 && frames[0].isKeyframe)
        let vp8 = try VP8Decoder()
        for frame in frames { #expect(try vp8.decode(frame.data).first?.width == 320) }
    }

    /// A file-based writer produces the same bytes as the in-memory one, and ffprobe-level
    /// metadata (channels, duration) is what we declared.
    @Test func ffmpegReadsStereoOggOpusFile() throws {
        let path = Fixtures.temporaryPath("stereo.opus")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let encoder = try OpusEncoder(channels: 2, frameDuration: .ms60, bitrate: 64_000)
        let writer = try OggOpusWriter(path: path, channels: 2, preSkip: encoder.lookahead, serialNumber: 99)
        let speech = try Fixtures.speech().samples.prefix(48_000 * 2)
        for p in try encodeFrames(speech.flatMap { [$0, 0] }, with: encoder) { try writer.write(p) }
        try writer.finish(sampleCount: speech.count)
        let raw = try Fixtures.run(["-v", "error", "-i", path, "-f", "s16le", "-"])
        #expect(raw.count == speech.count * 2 * 2)
        #expect(try OggOpusReader(path: path).head.channels == 2)
    }
}
