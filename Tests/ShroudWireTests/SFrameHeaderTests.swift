import Testing
@testable import ShroudWire

/// Header vectors from RFC 9605 Appendix C.1 live in ShroudCryptoTests (which holds the JSON);
/// these cover the parser's edges and malformed input.
@Suite struct SFrameHeaderTests {
    @Test func packedAndExtendedFields() throws {
        #expect(SFrameHeader(keyID: 0, counter: 0).serialized() == [0x00])
        #expect(SFrameHeader(keyID: 7, counter: 7).serialized() == [0x77])
        #expect(SFrameHeader(keyID: 8, counter: 0).serialized() == [0x80, 0x08])
        #expect(SFrameHeader(keyID: 0, counter: 8).serialized() == [0x08, 0x08])
        #expect(SFrameHeader(keyID: 0x123, counter: 0x4567).serialized() == [0x99, 0x01, 0x23, 0x45, 0x67])
        let largest = SFrameHeader(keyID: .max, counter: .max)
        #expect(largest.encodedLength == SFrameHeader.maximumEncodedLength)
        #expect(try SFrameHeader(parsing: largest.serialized()) == largest)
    }

    @Test func roundTripAcrossLengths() throws {
        for shiftK in 0..<64 { for shiftC in stride(from: 0, to: 64, by: 7) {
            let h = SFrameHeader(keyID: (1 << UInt64(shiftK)) | 5, counter: (1 << UInt64(shiftC)) - 1)
            var reader = ByteReader(h.serialized() + [1, 2, 3])
            #expect(try SFrameHeader(from: &reader) == h)
            #expect(reader.offset == h.encodedLength && reader.remaining == 3)
        } }
    }

    @Test func malformedHeaders() {
        #expect(throws: WireError.self) { try SFrameHeader(parsing: []) }
        #expect(throws: WireError.self) { try SFrameHeader(parsing: [0x80]) }                    // KID length 1, missing
        #expect(throws: WireError.self) { try SFrameHeader(parsing: [0xf0, 1, 2, 3, 4, 5, 6, 7]) } // KID 8 bytes, 7 present
        #expect(throws: WireError.self) { try SFrameHeader(parsing: [0x0f, 1, 2, 3, 4, 5, 6, 7]) } // CTR 8 bytes, 7 present
        #expect(throws: WireError.self) { try SFrameHeader(parsing: [0x99, 0x01, 0x23, 0x45]) }  // CTR cut short
        // Longer forms than necessary are refused: one encoding per header.
        #expect(throws: WireError.self) { try SFrameHeader(parsing: [0x80, 0x05]) }   // KID 5 must be packed
        #expect(throws: WireError.self) { try SFrameHeader(parsing: [0x90, 0x00, 0x09]) } // leading zero
        #expect(throws: WireError.self) { try SFrameHeader(parsing: [0x08, 0x07]) }   // CTR 7 must be packed
    }

    @Test func randomBytesNeverCrash() {
        var state: UInt64 = 0x9e3779b97f4a7c15
        func next() -> UInt8 { state = state &* 6364136223846793005 &+ 1442695040888963407; return UInt8(truncatingIfNeeded: state >> 33) }
        for _ in 0..<20_000 {
            let bytes = (0..<Int(next() % 20)).map { _ in next() }
            if let h = try? SFrameHeader(parsing: bytes) {
                #expect(h.serialized() == Array(bytes.prefix(h.encodedLength)))
            }
        }
    }
}
