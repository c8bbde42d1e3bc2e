/// YUV4MPEG2 (Y4M) files of raw I420 pictures: what `screen watch --record FILE.y4m` writes and
/// what reference tools (ffmpeg, x264, vpxenc) read.
///
/// Layout: one ASCII header line `YUV4MPEG2 W<w> H<h> F<num>:<den> [I<p>] [A<n>:<d>] [C<space>] [X…]\n`,
/// then for every frame a line `FRAME[ params]\n` followed by the Y, U and V planes.
/// Only 8-bit 4:2:0 colour spaces (`C420`, `C420jpeg`, `C420paldv`, `C420mpeg2`, or no `C`) are read.
public enum Y4M {
    /// Longest header or frame line accepted (bytes before its newline).
    public static let maxLineLength = 1024
    static let magic = "YUV4MPEG2"
    static let supportedColourSpaces: Set<String> = ["420", "420jpeg", "420paldv", "420mpeg2"]
}

public struct Y4MReader: Sendable {
    public let width: Int
    public let height: Int
    /// Frame rate as a fraction (numerator, denominator).
    public let frameRate: (numerator: Int, denominator: Int)
    private var reader: FileBytes

    public init(path: String) throws {
        try self.init(parsing: try readWholeFile(path, format: "Y4M"))
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = FileBytes(format: "Y4M", bytes: bytes)
        let header = try Self.line(&r, "header")
        var tokens = header.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard tokens.first == Y4M.magic else { throw r.error("missing YUV4MPEG2 signature") }
        tokens.removeFirst()
        var width: Int?, height: Int?
        var rate = (numerator: 30, denominator: 1)
        for token in tokens {
            let key = token.first, value = String(token.dropFirst())
            switch key {
            case "W": width = Int(value)
                guard width != nil else { throw r.error("bad width '\(value)'") }
            case "H": height = Int(value)
                guard height != nil else { throw r.error("bad height '\(value)'") }
            case "F":
                let parts = value.split(separator: ":")
                guard parts.count == 2, let n = Int(parts[0]), let d = Int(parts[1]), n > 0, d > 0 else {
                    throw r.error("bad frame rate '\(value)'")
                }
                rate = (n, d)
            case "C":
                guard Y4M.supportedColourSpaces.contains(value) else {
                    throw r.error("colour space C\(value) is not supported (8-bit 4:2:0 only)")
                }
            case "I":
                guard value == "p" || value == "?" else { throw r.error("interlaced content (I\(value)) is not supported") }
            default:
                continue   // A (aspect), X (extensions) and unknown tags carry nothing we need
            }
        }
        guard let width, let height else { throw r.error("header lacks W or H") }
        do { try I420Frame.validate(width: width, height: height) } catch { throw r.error("picture size \(width)x\(height) is invalid") }
        self.width = width
        self.height = height
        self.frameRate = rate
        self.reader = r
    }

    private static func line(_ r: inout FileBytes, _ what: String) throws -> String {
        let limit = min(Y4M.maxLineLength + 1, r.remaining)
        var length = 0
        while length < limit, r.bytes[r.offset + length] != 0x0A { length += 1 }
        guard length < limit else {   // stopped on a newline, not on the limit
            if r.remaining <= Y4M.maxLineLength { throw r.error("truncated \(what) line") }
            throw r.error("\(what) line longer than \(Y4M.maxLineLength) bytes")
        }
        let text = String(decoding: try r.take(length, what), as: UTF8.self)
        try r.skip(1, what)
        return text
    }

    /// The next picture, or nil at the end of the file.
    public mutating func readFrame() throws -> I420Frame? {
        if reader.isAtEnd { return nil }
        let marker = try Self.line(&reader, "FRAME")
        guard marker == "FRAME" || marker.hasPrefix("FRAME ") else { throw reader.error("expected FRAME, found '\(marker.prefix(16))'") }
        let sizes = I420Frame.planeSizes(width: width, height: height)
        let planes = try reader.take(sizes.luma + 2 * sizes.chroma, "frame data")
        return try I420Frame(width: width, height: height, packed: planes)
    }

    /// Every remaining picture.
    public mutating func readAll() throws -> [I420Frame] {
        var frames: [I420Frame] = []
        while let frame = try readFrame() { frames.append(frame) }
        return frames
    }
}

/// Writes a Y4M file (progressive, square pixels, `C420jpeg`, the colour-space tag ffmpeg writes
/// for `yuv420p`).
public final class Y4MWriter {
    public let width: Int
    public let height: Int
    private let sink: ByteSink
    private var finished = false

    public convenience init(path: String, width: Int, height: Int, fps: Int) throws {
        try self.init(sink: try ByteSink(path: path), width: width, height: height, fps: fps)
    }

    public convenience init(width: Int, height: Int, fps: Int) throws {
        try self.init(sink: ByteSink(), width: width, height: height, fps: fps)
    }

    private init(sink: ByteSink, width: Int, height: Int, fps: Int) throws {
        try I420Frame.validate(width: width, height: height)
        guard fps > 0 else { throw MediaError.file("Y4M: frame rate \(fps) must be positive") }
        self.sink = sink
        self.width = width
        self.height = height
        var header: [UInt8] = []
        header.appendASCII("\(Y4M.magic) W\(width) H\(height) F\(fps):1 Ip A1:1 C420jpeg\n")
        try sink.write(header)
    }

    public var bytes: [UInt8] { sink.memory }

    public func write(_ frame: I420Frame) throws {
        guard !finished else { throw MediaError.file("Y4M: write after finish") }
        guard frame.width == width, frame.height == height else {
            throw MediaError.file("Y4M: file is \(width)x\(height), frame is \(frame.width)x\(frame.height)")
        }
        try frame.checkPlanes()
        var out: [UInt8] = Array("FRAME\n".utf8)
        out.reserveCapacity(6 + frame.byteCount)
        out += frame.y; out += frame.u; out += frame.v
        try sink.write(out)
    }

    public func finish() throws {
        guard !finished else { return }
        finished = true
        try sink.close()
    }
}
