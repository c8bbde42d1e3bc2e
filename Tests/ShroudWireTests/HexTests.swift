import Testing
import ShroudWire

@Suite struct HexTests {
    @Test func roundTripsAndRefusesNonHex() {
        let bytes: [UInt8] = [0x00, 0x0f, 0xa0, 0xff, 0x5c]
        #expect(Hex.encode(bytes) == "000fa0ff5c")
        #expect(Hex.decode("000fa0ff5c") == bytes)
        #expect(Hex.decode("000FA0FF5C") == bytes)
        #expect(Hex.decode("") == [])
        #expect(Hex.decode("abc") == nil, "odd length")
        #expect(Hex.decode("zz") == nil)
        #expect(Hex.decode("0g") == nil)
    }
}
