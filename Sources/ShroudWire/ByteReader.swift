/// Errors from parsing bytes that came from the network, a file or a user. Parsers throw these and
/// never trap (DESIGN.md §1.8).
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input ended before a field of `needed` bytes at `offset`.
    case truncated(field: String, offset: Int, needed: Int)
    /// A field holds a value the format does not allow.
    case invalid(field: String, reason: String)
    /// A length field or the input exceeds a named limit.
    case tooLarge(field: String, size: Int, limit: Int)

    public var description: String {
        switch self {
        case let .truncated(field, offset, needed):
            return "truncated input: \(field) needs \(needed) bytes at offset \(offset)"
        case let .invalid(field, reason):
            return "invalid \(field): \(reason)"
        case let .tooLarge(field, size, limit):
            return "\(field) too large: \(size) bytes, limit \(limit)"
        }
    }
}

/// A bounds-checked cursor over bytes. Every read checks the remaining length first and throws
/// `WireError.truncated` instead of reading past the end.
public struct ByteReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset >= bytes.count }

    public mutating func readUInt8(_ field: String) throws -> UInt8 {
        try need(1, field)
        defer { offset += 1 }
        return bytes[offset]
    }

    /// Reads an unsigned big-endian integer of `width` bytes (1...8).
    public mutating func readBigEndian(_ width: Int, _ field: String) throws -> UInt64 {
        guard (1...8).contains(width) else { throw WireError.invalid(field: field, reason: "width \(width)") }
        try need(width, field)
        var value: UInt64 = 0
        for i in 0..<width { value = value << 8 | UInt64(bytes[offset + i]) }
        offset += width
        return value
    }

    public mutating func readUInt16(_ field: String) throws -> UInt16 { UInt16(try readBigEndian(2, field)) }
    public mutating func readUInt32(_ field: String) throws -> UInt32 { UInt32(try readBigEndian(4, field)) }
    public mutating func readUInt64(_ field: String) throws -> UInt64 { try readBigEndian(8, field) }

    public mutating func readBytes(_ count: Int, _ field: String) throws -> [UInt8] {
        guard count >= 0 else { throw WireError.invalid(field: field, reason: "negative length") }
        try need(count, field)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    public mutating func readRest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[min(offset, bytes.count)...])
    }

    private func need(_ count: Int, _ field: String) throws {
        if count > remaining { throw WireError.truncated(field: field, offset: offset, needed: count) }
    }
}

/// Appends big-endian fields to a byte array.
public struct ByteWriter {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ value: UInt8) { bytes.append(value) }
    public mutating func write(_ value: UInt16) { writeBigEndian(UInt64(value), width: 2) }
    public mutating func write(_ value: UInt32) { writeBigEndian(UInt64(value), width: 4) }
    public mutating func write(_ value: UInt64) { writeBigEndian(value, width: 8) }
    public mutating func write<C: Collection>(bytes other: C) where C.Element == UInt8 { bytes.append(contentsOf: other) }

    /// Writes the low `width` bytes of `value`, most significant first.
    public mutating func writeBigEndian(_ value: UInt64, width: Int) {
        for i in stride(from: width - 1, through: 0, by: -1) { bytes.append(UInt8(truncatingIfNeeded: value >> (UInt64(i) * 8))) }
    }
}
