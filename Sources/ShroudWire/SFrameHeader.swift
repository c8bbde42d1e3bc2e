/// The SFrame header (RFC 9605 §4.3): a key id and a counter, each either packed into the config
/// byte (values 0…7) or written as 1…8 big-endian bytes after it.
///
///      0 1 2 3 4 5 6 7
///     +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
///     |X|  K  |Y|  C  |   KID... (if X = 1)       |   CTR... (if Y = 1)       |
///     +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
///
/// X = 0: K is the KID; X = 1: K + 1 is the KID's length in bytes. Y and C likewise for the
/// counter. Shroud writes the shortest form and, so that every header has exactly one encoding
/// (parse → serialize gives back the same bytes), refuses longer forms when parsing: an extended
/// field whose value would fit in K/C, or whose first byte is zero.
public struct SFrameHeader: Hashable, Sendable {
    /// The longest header: config byte + 8-byte KID + 8-byte CTR.
    public static let maximumEncodedLength = 17

    public var keyID: UInt64
    public var counter: UInt64

    public init(keyID: UInt64, counter: UInt64) {
        self.keyID = keyID
        self.counter = counter
    }

    /// Parses a header from the start of `bytes`; the payload follows at `encodedLength`.
    public init(parsing bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        try self.init(from: &reader)
    }

    public init(from reader: inout ByteReader) throws {
        let config = try reader.readUInt8("SFrame config byte")
        keyID = try Self.readField(reader: &reader, extended: config & 0x80 != 0, packed: config >> 4 & 0x07, name: "SFrame KID")
        counter = try Self.readField(reader: &reader, extended: config & 0x08 != 0, packed: config & 0x07, name: "SFrame CTR")
    }

    private static func readField(reader: inout ByteReader, extended: Bool, packed: UInt8, name: String) throws -> UInt64 {
        guard extended else { return UInt64(packed) }
        let length = Int(packed) + 1
        let start = reader.offset
        let value = try reader.readBigEndian(length, name)
        guard reader.bytes[start] != 0 else { throw WireError.invalid(field: name, reason: "leading zero byte (not the shortest encoding)") }
        guard value > 7 else { throw WireError.invalid(field: name, reason: "value \(value) must be packed in the config byte") }
        return value
    }

    /// Bytes this header takes on the wire.
    public var encodedLength: Int { 1 + Self.fieldLength(keyID) + Self.fieldLength(counter) }

    public func serialize(into writer: inout ByteWriter) {
        let kidLength = Self.fieldLength(keyID)
        let ctrLength = Self.fieldLength(counter)
        let k: UInt8 = kidLength == 0 ? UInt8(keyID) : 0x08 | UInt8(kidLength - 1)
        let c: UInt8 = ctrLength == 0 ? UInt8(counter) : 0x08 | UInt8(ctrLength - 1)
        writer.write(k << 4 | c)
        if kidLength > 0 { writer.writeBigEndian(keyID, width: kidLength) }
        if ctrLength > 0 { writer.writeBigEndian(counter, width: ctrLength) }
    }

    public func serialized() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.maximumEncodedLength)
        serialize(into: &writer)
        return writer.bytes
    }

    /// Writes the header into raw memory (at least `encodedLength` bytes), for the frame-sealing
    /// hot path that builds the whole frame in one allocation.
    public func write(to buffer: UnsafeMutableRawBufferPointer) -> Int {
        let kidLength = Self.fieldLength(keyID)
        let ctrLength = Self.fieldLength(counter)
        let k: UInt8 = kidLength == 0 ? UInt8(keyID) : 0x08 | UInt8(kidLength - 1)
        let c: UInt8 = ctrLength == 0 ? UInt8(counter) : 0x08 | UInt8(ctrLength - 1)
        buffer[0] = k << 4 | c
        var offset = 1
        for i in stride(from: kidLength - 1, through: 0, by: -1) {
            buffer[offset] = UInt8(truncatingIfNeeded: keyID >> (UInt64(i) * 8)); offset += 1
        }
        for i in stride(from: ctrLength - 1, through: 0, by: -1) {
            buffer[offset] = UInt8(truncatingIfNeeded: counter >> (UInt64(i) * 8)); offset += 1
        }
        return offset
    }

    /// 0 when the value fits in the config byte, else its minimal big-endian byte count.
    static func fieldLength(_ value: UInt64) -> Int {
        value < 8 ? 0 : (64 - value.leadingZeroBitCount + 7) / 8
    }
}
