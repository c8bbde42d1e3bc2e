import ShroudTestSupport
import Testing
@testable import ShroudMedia

/// Every reader meets thousands of randomly damaged versions of a valid file: flipped bytes,
/// overwritten length fields, cut tails. Each must parse or throw a one-line MediaError — a trap
/// would end the test process, so finishing the loop is the assertion.
@Suite("Mutated files")
struct MutationTests {
    static func mutations(of bytes: [UInt8], count: Int, seed: UInt64) -> [[UInt8]] {
        var random = SeededBytes(seed: seed)
        return (0 ..< count).map { _ in
            var copy = bytes
            let r = random.next(8)
            switch r[0] % 3 {
            case 0:   // flip a few bytes anywhere
                for k in 0 ..< Int(r[1] % 4) + 1 {
                    let i = (Int(r[2 + k]) << 8 | Int(r[3 + k])) % copy.count
                    copy[i] ^= r[6] | 1
                }
            case 1:   // a byte in the first 64 (headers, sizes) set to an extreme
                copy[Int(r[1]) % min(64, copy.count)] = r[2] & 1 == 0 ? 0xFF : 0x00
            default:  // cut the tail
                copy = Array(copy.prefix((Int(r[1]) << 8 | Int(r[2])) % copy.count))
            }
            return copy
        }
    }

    static func expectParsesOrFailsCleanly(_ files: [[UInt8]], _ parse: ([UInt8]) throws -> Void) {
        var failures = 0
        for file in files {
            do { try parse(file) } catch let error as MediaError {
                failures += 1
                #expect(!error.description.contains("\n"))
            } catch {
                Issue.record("non-media error \(error)")
            }
        }
        #expect(failures > 0)   // the mutations do damage; a reader that accepts everything is suspect
    }

    @Test func wav() throws {
        let writer = try WAVWriter(sampleRate: 48_000, channels: 2)
        try writer.write((0 ..< 400).map { Int16($0 * 37 % 2000) })
        try writer.finish()
        Self.expectParsesOrFailsCleanly(Self.mutations(of: writer.bytes, count: 2000, seed: 1)) { _ = try WAVReader(parsing: $0) }
    }

    @Test func y4m() throws {
        let writer = try Y4MWriter(width: 12, height: 6, fps: 30)
        for seed in 1 ... 3 { try writer.write(try Y4MTests.picture(12, 6, seed: UInt64(seed))) }
        try writer.finish()
        Self.expectParsesOrFailsCleanly(Self.mutations(of: writer.bytes, count: 2000, seed: 2)) {
            var reader = try Y4MReader(parsing: $0)
            _ = try reader.readAll()
        }
    }

    @Test func ivf() throws {
        let writer = try IVFWriter(width: 64, height: 48, fps: 30)
        for frame in IVFTests.frames() { try writer.write(frame) }
        try writer.finish()
        Self.expectParsesOrFailsCleanly(Self.mutations(of: writer.bytes, count: 2000, seed: 3)) {
            var reader = try IVFReader(parsing: $0)
            _ = try reader.readAll()
        }
    }

    @Test func oggOpus() throws {
        let encoder = try OpusEncoder()
        let writer = try OggOpusWriter(channels: 1, preSkip: encoder.lookahead, serialNumber: 8)
        for i in 0 ..< 20 { try writer.write(try encoder.encode((0 ..< 960).map { Int16(($0 * (i + 1)) % 3000) })) }
        try writer.finish()
        let decoder = try OpusDecoder()
        Self.expectParsesOrFailsCleanly(Self.mutations(of: writer.bytes, count: 2000, seed: 4)) {
            let reader = try OggOpusReader(parsing: $0)
            for packet in reader.packets { _ = try decoder.decode(packet) }
        }
    }

    /// Damaged VP8 frames go into a decoder that has seen a valid keyframe.
    @Test func vp8Frames() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-ui"), width: 160, height: 90)
        let (_, encoded) = try encodeStill(picture, bitrate: 200_000, frames: 3)
        let decoder = try VP8Decoder()
        _ = try decoder.decode(encoded[0].data)
        for (n, frame) in encoded.enumerated() {
            for damaged in Self.mutations(of: frame.data, count: 300, seed: UInt64(10 + n)) where !damaged.isEmpty {
                _ = try? decoder.decode(damaged)
            }
        }
    }
}
