import Testing
@testable import ShroudWire

@Suite struct ByteReaderTests {
    @Test func readsBigEndianFieldsAndStopsAtTheEnd() throws {
        var reader = ByteReader([0x01, 0x02, 0x03, 0x04, 0x05])
        #expect(try reader.readUInt16("a") == 0x0102)
        #expect(try reader.readBigEndian(3, "b") == 0x030405)
        #expect(reader.isAtEnd)
        #expect(throws: WireError.truncated(field: "c", offset: 5, needed: 1)) { try reader.readUInt8("c") }
    }

    @Test func writerRoundTripsThroughReader() throws {
        var writer = ByteWriter()
        writer.write(UInt8(7)); writer.write(UInt16(0xBEEF)); writer.write(UInt32(0xDEADBEEF)); writer.write(UInt64.max)
        writer.write(bytes: [9, 9])
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readUInt8("a") == 7)
        #expect(try reader.readUInt16("b") == 0xBEEF)
        #expect(try reader.readUInt32("c") == 0xDEADBEEF)
        #expect(try reader.readUInt64("d") == UInt64.max)
        #expect(try reader.readBytes(2, "e") == [9, 9])
        #expect(throws: WireError.self) { try reader.readBytes(1, "f") }
    }

    @Test func rejectsNegativeLengthsAndBadWidths() {
        var reader = ByteReader([1, 2, 3])
        #expect(throws: WireError.self) { try reader.readBytes(-1, "x") }
        #expect(throws: WireError.self) { try reader.readBigEndian(9, "x") }
    }
}
