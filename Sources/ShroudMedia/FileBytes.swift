import Foundation

/// Bounds-checked little-endian reading of a media file held in memory. Every read names what it
/// was reading, so a truncated file fails with a one-line reason such as
/// "WAV: truncated in the fmt chunk (needs 16 bytes at offset 20, file has 30)".
struct FileBytes {
    let format: String
    let bytes: [UInt8]
    private(set) var offset: Int

    init(format: String, bytes: [UInt8], offset: Int = 0) {
        self.format = format
        self.bytes = bytes
        self.offset = offset
    }

    var remaining: Int { bytes.count - offset }
    var isAtEnd: Bool { offset >= bytes.count }

    func error(_ reason: String) -> MediaError { .file("\(format): \(reason)") }

    mutating func take(_ count: Int, _ what: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw error("truncated in \(what) (needs \(count) bytes at offset \(offset), file has \(bytes.count))")
        }
        defer { offset += count }
        return bytes[offset ..< offset + count]
    }

    mutating func skip(_ count: Int, _ what: String) throws { _ = try take(count, what) }

    mutating func u8(_ what: String) throws -> UInt8 { try take(1, what).first ?? 0 }

    mutating func u16(_ what: String) throws -> UInt16 { UInt16(truncatingIfNeeded: try uint(2, what)) }
    mutating func u32(_ what: String) throws -> UInt32 { UInt32(truncatingIfNeeded: try uint(4, what)) }
    mutating func u64(_ what: String) throws -> UInt64 { try uint(8, what) }

    private mutating func uint(_ size: Int, _ what: String) throws -> UInt64 {
        var value: UInt64 = 0
        for (i, byte) in try take(size, what).enumerated() { value |= UInt64(byte) << (8 * UInt64(i)) }
        return value
    }

    /// Four ASCII bytes, for chunk and codec tags.
    mutating func tag(_ what: String) throws -> String {
        String(decoding: try take(4, what), as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        Swift.withUnsafeBytes(of: &v) { append(contentsOf: $0) }
    }

    mutating func appendASCII(_ text: String) { append(contentsOf: Array(text.utf8)) }

    mutating func storeLE<T: FixedWidthInteger>(_ value: T, at index: Int) {
        var v = value.littleEndian
        Swift.withUnsafeBytes(of: &v) { raw in
            for (i, byte) in raw.enumerated() { self[index + i] = byte }
        }
    }
}

/// Where a writer puts its bytes: a file (written as it goes, so a long recording does not sit in
/// memory) or an in-memory buffer (for tests and for callers that encrypt or send the result).
final class ByteSink {
    private let handle: FileHandle?
    private(set) var memory: [UInt8] = []
    private(set) var written: Int = 0

    init() { handle = nil }

    init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let h = FileHandle(forWritingAtPath: path) else {
            throw MediaError.file("cannot create \(path)")
        }
        handle = h
    }

    deinit { try? handle?.close() }

    func write(_ bytes: [UInt8]) throws {
        written += bytes.count
        guard let handle else { memory.append(contentsOf: bytes); return }
        do { try handle.write(contentsOf: bytes) } catch {
            throw MediaError.file("write failed: \(error.localizedDescription)")
        }
    }

    /// Overwrites bytes already written (header fields whose value is known only at the end).
    func patch(_ bytes: [UInt8], at offset: Int) throws {
        guard let handle else {
            memory.replaceSubrange(offset ..< offset + bytes.count, with: bytes)
            return
        }
        do {
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: bytes)
            try handle.seekToEnd()
        } catch {
            throw MediaError.file("write failed: \(error.localizedDescription)")
        }
    }

    func close() throws {
        do { try handle?.synchronize(); try handle?.close() } catch {
            throw MediaError.file("close failed: \(error.localizedDescription)")
        }
    }
}

func readWholeFile(_ path: String, format: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw MediaError.file("\(format): cannot read \(path)")
    }
    return [UInt8](data)
}
