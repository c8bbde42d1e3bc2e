import ShroudTestSupport
import Foundation
import Testing
@testable import ShroudMedia

/// Encodes a still screen for `frames` frames (a second at 30 fps: what a viewer sees after the
/// screen stops changing) and returns every decoded picture and the encoded stream.
func encodeStill(_ picture: I420Frame, bitrate: Int, frames: Int = 30, cpuUsed: Int = -6) throws -> (decoded: [I420Frame], encoded: [EncodedVideoFrame]) {
    let encoder = try VP8Encoder(width: picture.width, height: picture.height, bitrate: bitrate, fps: 30, cpuUsed: cpuUsed)
    let decoder = try VP8Decoder()
    var decoded: [I420Frame] = [], encoded: [EncodedVideoFrame] = []
    for _ in 0 ..< frames {
        for packet in try encoder.encode(picture) {
            encoded.append(packet)
            decoded += try decoder.decode(packet.data)
        }
    }
    return (decoded, encoded)
}

@Suite("VP8")
struct VP8Tests {
    /// The 1080p screen fixtures at 2.5 Mbit/s: after one second of a still screen the decoded
    /// picture is at least 35 dB luma PSNR (text readable without visible ringing).
    @Test(arguments: ["screen-text", "screen-code", "screen-ui"])
    func screen1080pAt2_5Mbps(fixture: String) throws {
        let picture = try Fixtures.screen(fixture)
        let (decoded, encoded) = try encodeStill(picture, bitrate: 2_500_000)
        #expect(decoded.count == 30)
        #expect(encoded.first?.isKeyframe == true)
        let last = try #require(decoded.last)
        let quality = try PictureQuality(reference: picture, reconstruction: last)
        print("VP8 1080p \(fixture) at 2.5 Mbit/s: Y PSNR \(quality.lumaPSNR) dB, overall \(quality.overallPSNR) dB")
        #expect(quality.lumaPSNR >= 35, "\(fixture): Y PSNR \(quality.lumaPSNR) dB, overall \(quality.overallPSNR) dB")
        // CBR: one second of frames stays near the target (keyframe overshoot included).
        let bits = encoded.reduce(0) { $0 + $1.data.count * 8 }
        #expect(bits < 2 * 2_500_000, "\(bits) bits in 1 s")
    }

    /// Lower layers, scaled from each 1080p fixture with libyuv: 720p at 1.2 Mbit/s, 360p at
    /// 0.5 Mbit/s, also at least 35 dB (dense text at 720p is the tightest case, ≈ 35.8 dB).
    @Test(arguments: ["screen-text", "screen-code", "screen-ui"], [(1280, 720, 1_200_000), (640, 360, 500_000)])
    func scaledLayers(fixture: String, layer: (width: Int, height: Int, bitrate: Int)) throws {
        let (width, height, bitrate) = layer
        let picture = try ColorConversion.scale(try Fixtures.screen(fixture), width: width, height: height)
        let (decoded, _) = try encodeStill(picture, bitrate: bitrate)
        let quality = try PictureQuality(reference: picture, reconstruction: try #require(decoded.last))
        print("VP8 \(width)x\(height) \(fixture) at \(bitrate / 1000) kbit/s: Y PSNR \(quality.lumaPSNR) dB")
        #expect(quality.lumaPSNR >= 35, "\(width)x\(height): Y PSNR \(quality.lumaPSNR) dB")
    }

    @Test func keyframeOnDemand() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-ui"), width: 640, height: 360)
        let encoder = try VP8Encoder(width: 640, height: 360, bitrate: 500_000)
        var flags: [Bool] = [], pts: [Int64] = []
        for i in 0 ..< 10 {
            for packet in try encoder.encode(picture, forceKeyframe: i == 6) {
                flags.append(packet.isKeyframe)
                pts.append(packet.pts)
                #expect(EncodedVideoFrame.isVP8Keyframe(packet.data) == packet.isKeyframe)
            }
        }
        #expect(flags == [true, false, false, false, false, false, true, false, false, false])
        #expect(pts == Array(0 ..< 10))
    }

    /// Rate control follows `setBitrate` between frames; explicit pts must keep increasing.
    @Test func bitrateChangesAndExplicitTimestamps() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-code"), width: 640, height: 360)
        let encoder = try VP8Encoder(width: 640, height: 360, bitrate: 200_000)
        func scrolledBytes(_ frames: Range<Int>) throws -> Int {
            var total = 0
            for i in frames {
                var moving = picture
                let shift = (i * 2 % 360) * 640
                moving.y = Array(picture.y[shift...] + picture.y[..<shift])
                total += try encoder.encode(moving).reduce(0) { $0 + $1.data.count }
            }
            return total
        }
        _ = try scrolledBytes(0 ..< 30)
        let low = try scrolledBytes(30 ..< 60)
        try encoder.setBitrate(1_000_000)
        _ = try scrolledBytes(60 ..< 75)
        let high = try scrolledBytes(75 ..< 105)
        #expect(Double(high) > 3 * Double(low), "\(low) → \(high) bytes per second")
        #expect(throws: MediaError.self) { try encoder.setBitrate(VP8Encoder.bitrateRange.upperBound + 1) }
        #expect(try encoder.encode(picture, pts: 200).first?.pts == 200)
        #expect(try encoder.encode(picture).first?.pts == 201)
        #expect(throws: MediaError.codec("VP8 pts 150 is not after the previous frame's 201")) { try encoder.encode(picture, pts: 150) }
    }

    /// Two threads (token partitions on) decode to the same quality class as one.
    @Test func twoThreads() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-ui"), width: 1280, height: 720)
        let encoder = try VP8Encoder(width: 1280, height: 720, bitrate: 1_200_000, threads: 2)
        let decoder = try VP8Decoder(threads: 2)
        var last: I420Frame?
        for _ in 0 ..< 30 { for p in try encoder.encode(picture) { last = try decoder.decode(p.data).last } }
        #expect(try PictureQuality(reference: picture, reconstruction: try #require(last)).lumaPSNR >= 35)
        #expect(throws: MediaError.self) { try VP8Decoder(threads: VP8Encoder.threadRange.upperBound + 1) }
    }

    @Test func oddSizesRoundTrip() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-code"), width: 333, height: 191)
        let (decoded, _) = try encodeStill(picture, bitrate: 400_000, frames: 5)
        #expect(decoded.last?.width == 333 && decoded.last?.height == 191)
        #expect(try PictureQuality(reference: picture, reconstruction: try #require(decoded.last)).lumaPSNR > 25)
    }

    @Test func encoderLimitsAndWrongSizes() throws {
        #expect(throws: MediaError.self) { try VP8Encoder(width: 0, height: 10, bitrate: 500_000) }
        #expect(throws: MediaError.self) { try VP8Encoder(width: I420Frame.maxDimension + 1, height: 16, bitrate: 500_000) }
        #expect(throws: MediaError.self) { try VP8Encoder(width: 64, height: 64, bitrate: VP8Encoder.bitrateRange.lowerBound - 1) }
        #expect(throws: MediaError.self) { try VP8Encoder(width: 64, height: 64, bitrate: 500_000, cpuUsed: 17) }
        _ = try VP8Encoder(width: 64, height: 64, bitrate: 500_000, fps: VP8Encoder.fpsRange.upperBound)
        #expect(throws: MediaError.codec("VP8 fps 121 is outside 1...120")) { try VP8Encoder(width: 64, height: 64, bitrate: 500_000, fps: 121) }
        #expect(throws: MediaError.self) { try VP8Encoder(width: 64, height: 64, bitrate: 500_000, fps: 0) }
        _ = try VP8Encoder(width: 64, height: 64, bitrate: VP8Encoder.bitrateRange.upperBound)
        _ = try VP8Encoder(width: 64, height: 64, bitrate: VP8Encoder.bitrateRange.lowerBound, cpuUsed: -16)
        let encoder = try VP8Encoder(width: 64, height: 64, bitrate: 500_000)
        #expect(throws: MediaError.codec("VP8 encoder is 64x64, frame is 32x32")) {
            try encoder.encode(try I420Frame(width: 32, height: 32))
        }
    }

    /// Planes are editable, but a plane of the wrong length never reaches C.
    @Test func editedPlanesOfTheWrongSizeAreRejected() throws {
        var frame = try I420Frame(width: 64, height: 64)
        frame.y.removeLast()
        let reason = "I420 planes for 64x64 must be 4096/1024/1024 bytes, got 4095/1024/1024"
        #expect(throws: MediaError.codec(reason)) { try VP8Encoder(width: 64, height: 64, bitrate: 500_000).encode(frame) }
        #expect(throws: MediaError.codec(reason)) { try ColorConversion.scale(frame, width: 32, height: 32) }
        #expect(throws: MediaError.codec(reason)) { try ColorConversion.i420ToBGRA(frame) }
        #expect(throws: MediaError.codec(reason)) { try Y4MWriter(width: 64, height: 64, fps: 30).write(frame) }
    }

    /// Corrupt or truncated frames from the network give an error, never a crash.
    @Test func corruptFramesAreErrors() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-text"), width: 640, height: 360)
        let (_, encoded) = try encodeStill(picture, bitrate: 500_000, frames: 2)
        let keyframe = try #require(encoded.first).data
        #expect(throws: MediaError.self) { try VP8Decoder().decode([]) }
        #expect(throws: MediaError.self) { try VP8Decoder().decode(Array(keyframe.prefix(8))) }
        // An inter frame with no keyframe before it cannot be decoded.
        #expect(throws: MediaError.self) { try VP8Decoder().decode(encoded[1].data) }
        var garbage = SeededBytes(seed: 7)
        let decoder = try VP8Decoder()
        for length in [1, 3, 10, 100, 5_000] {
            // Random bytes: libvpx either rejects them or decodes noise; both are fine, a crash is not.
            _ = try? decoder.decode(garbage.next(length))
        }
    }
}

/// Deterministic pseudo-random bytes for malformed-input tests (xorshift64).
struct SeededBytes {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next(_ count: Int) -> [UInt8] {
        (0 ..< count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }
}

@Suite("Colour conversion")
struct ColorConversionTests {
    /// BT.601 limited-range values for pure colours, stored as X11 stores pixels (B, G, R, X).
    @Test func knownColoursConvert() throws {
        let colours: [(bgra: [UInt8], y: UInt8, u: UInt8, v: UInt8)] = [
            ([0, 0, 0, 255], 16, 128, 128),
            ([255, 255, 255, 255], 235, 128, 128),
            ([0, 0, 255, 0], 82, 90, 240),      // red (the X byte is ignored)
            ([255, 0, 0, 0], 41, 240, 110),     // blue
        ]
        for c in colours {
            let pixels = Array([[UInt8]](repeating: c.bgra, count: 16 * 8).joined())
            let frame = try ColorConversion.bgraToI420(pixels, width: 16, height: 8)
            #expect(abs(Int(frame.y[0]) - Int(c.y)) <= 1 && abs(Int(frame.u[0]) - Int(c.u)) <= 1 && abs(Int(frame.v[0]) - Int(c.v)) <= 1,
                    "\(c.bgra) → \(frame.y[0]) \(frame.u[0]) \(frame.v[0])")
            #expect(Set(frame.y).count == 1)
        }
    }

    @Test func paddedStrideAndRoundTripThroughBGRA() throws {
        let picture = try ColorConversion.scale(try Fixtures.screen("screen-ui"), width: 320, height: 180)
        let bgra = try ColorConversion.i420ToBGRA(picture)
        #expect(bgra.count == 320 * 180 * 4)
        // Rows padded to 1536 bytes, as X11 may hand them out.
        var padded = [UInt8](repeating: 0xEE, count: 1536 * 180)
        for row in 0 ..< 180 { padded.replaceSubrange(row * 1536 ..< row * 1536 + 1280, with: bgra[row * 1280 ..< (row + 1) * 1280]) }
        let back = try ColorConversion.bgraToI420(padded, width: 320, height: 180, stride: 1536)
        #expect(try PictureQuality(reference: picture, reconstruction: back).lumaPSNR > 40)
    }

    @Test func scaleDownKeepsUniformColour() throws {
        let grey = try I420Frame(width: 1920, height: 1080, luma: 120, cb: 100, cr: 150)
        let small = try ColorConversion.scale(grey, width: 640, height: 360)
        #expect(small.width == 640 && small.height == 360 && small.y.count == 640 * 360 && small.u.count == 320 * 180)
        // Box filtering may round a uniform plane by one step.
        #expect(small.y.allSatisfy { abs(Int($0) - 120) <= 1 } && small.u.allSatisfy { abs(Int($0) - 100) <= 1 }
            && small.v.allSatisfy { abs(Int($0) - 150) <= 1 }, "\(Set(small.y)) \(Set(small.u)) \(Set(small.v))")
    }

    @Test func badBuffersAreErrors() throws {
        #expect(throws: MediaError.self) { try ColorConversion.bgraToI420([UInt8](repeating: 0, count: 63), width: 4, height: 4) }
        _ = try ColorConversion.bgraToI420([UInt8](repeating: 0, count: 64), width: 4, height: 4)
        #expect(throws: MediaError.self) { try ColorConversion.bgraToI420([UInt8](repeating: 0, count: 64), width: 4, height: 4, stride: 15) }
        #expect(throws: MediaError.self) { try ColorConversion.scale(try I420Frame(width: 4, height: 4), width: 0, height: 4) }
        #expect(throws: MediaError.self) { try I420Frame(width: 4, height: 4, y: [], u: [], v: []) }
        _ = try I420Frame(width: I420Frame.maxDimension, height: 1)
        #expect(throws: MediaError.self) { try I420Frame(width: I420Frame.maxDimension + 1, height: 1) }
    }
}
