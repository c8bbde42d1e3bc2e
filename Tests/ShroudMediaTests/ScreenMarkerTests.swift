import Testing
import ShroudTestSupport
@testable import ShroudMedia

@Suite("Glass-to-glass screen marker")
struct ScreenMarkerTests {
    @Test func layoutOfTheCells() {
        let cells = ScreenMarker.cells(for: 0x8000_0001)
        #expect(cells.count == ScreenMarker.columns * ScreenMarker.rows)
        #expect(Array(cells[0 ..< 8]) == [true, false, true, false, true, false, true, false])
        #expect(cells[8] && !cells[9] && cells[39] && !cells[38])
        // CRC-8/SMBUS (poly 0x07, init 0) of 00 00 00 00 is 0; of "1234" (31 32 33 34) it is 0xC2
        // (computed independently with a bitwise CRC-8/SMBUS whose "123456789" check value is 0xF4).
        #expect(ScreenMarker.crc8(0) == 0)
        #expect(ScreenMarker.crc8(0x3132_3334) == 0xC2)
        #expect(ScreenMarker.size(screenHeight: 1080) == PixelSize(width: 393, height: 295))
    }

    @Test(arguments: [(1920, 1080), (1280, 720), (640, 360)])
    func paintedValuesReadBackExactly(size: (width: Int, height: Int)) throws {
        for value: UInt32 in [0, 1, 0xFFFF_FFFF, 0xDEAD_BEEF, 0x5555_AAAA] {
            var picture = try textLikePicture(width: size.width, height: size.height)
            try ScreenMarker.paint(value, into: &picture)
            #expect(ScreenMarker.read(picture) == value)
        }
    }

    @Test func noMarkerOrADamagedOneReadsAsNothing() throws {
        #expect(ScreenMarker.read(try textLikePicture()) == nil)
        #expect(ScreenMarker.read(try I420Frame(width: 640, height: 360, luma: 128)) == nil)
        var picture = try textLikePicture()
        try ScreenMarker.paint(0x1234_5678, into: &picture)
        // Flip one value cell: the CRC catches it.
        let rect = ScreenMarker.cellRect(column: 3, row: 2, pictureHeight: 1080)
        let wasWhite = picture.y[rect.y0 * 1920 + rect.x0] > 128
        for y in rect.y0 ..< rect.y1 { for x in rect.x0 ..< rect.x1 { picture.y[y * 1920 + x] = wasWhite ? 16 : 235 } }
        #expect(ScreenMarker.read(picture) == nil)
        // Too small for the marker: painting is an error, reading is nothing.
        var tiny = try I420Frame(width: 64, height: 360)
        #expect(throws: MediaError.self) { try ScreenMarker.paint(1, into: &tiny) }
        #expect(ScreenMarker.read(tiny) == nil)
    }

    @Test func syncContrastAtTheLimitAndOneBelow() throws {
        for (white, readable) in [(UInt8(16 + ScreenMarker.minimumContrast), true), (UInt8(15 + ScreenMarker.minimumContrast), false)] {
            var picture = try I420Frame(width: 640, height: 360, luma: 128)
            try ScreenMarker.paint(0xC0FF_EE00, into: &picture)
            // A washed-out marker: white cells only `white − 16` levels above black.
            for index in picture.y.indices where picture.y[index] == 235 { picture.y[index] = white }
            #expect((ScreenMarker.read(picture) == 0xC0FF_EE00) == readable, "white \(white)")
        }
    }

    /// A scrolling text screen whose marker changes every frame, through the simulcast encoder at
    /// the layers' start bitrates: every decoded frame of both layers (1080p and 360p) shows the
    /// value painted on its capture, from the keyframe on.
    @Test func survivesVP8At1080pAnd360p() throws {
        let encoder = try SimulcastEncoder(top: .p1080, streamID: { UInt32($0) })
        let decoders = [try VP8Decoder(), try VP8Decoder()]
        var read = [0, 0]
        for index in 0 ..< 45 {
            var picture = try textLikePicture(offset: index * 4)
            let value = UInt32(1_000_003 &* UInt32(index + 1))
            try ScreenMarker.paint(value, into: &picture)
            for (slot, layerFrame) in try encoder.encode(picture).enumerated() {
                let decoded = try #require(try decoders[slot].decode(layerFrame.frame.data).first)
                #expect(ScreenMarker.read(decoded) == value, "frame \(index) layer \(layerFrame.layer)")
                if ScreenMarker.read(decoded) == value { read[slot] += 1 }
            }
        }
        #expect(read == [45, 45])
    }

    /// The same at the lowest bitrate the 360p layer may be pushed to by loss.
    @Test func survivesThe360pMinimumBitrate() throws {
        let bitrate = VideoQuality.p360.bitrateBounds.minimum
        let encoder = try VP8Encoder(width: 640, height: 360, bitrate: bitrate)
        let decoder = try VP8Decoder()
        for index in 0 ..< 30 {
            var picture = try textLikePicture(width: 640, height: 360, offset: index * 2)
            try ScreenMarker.paint(UInt32(index * 33), into: &picture)
            for frame in try encoder.encode(picture) {
                #expect(ScreenMarker.read(try #require(try decoder.decode(frame.data).first)) == UInt32(index * 33))
            }
        }
    }
}
