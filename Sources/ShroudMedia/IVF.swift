/// IVF files of VP8 frames: what `screen watch --record FILE.ivf` and `media record-screen` write,
/// and what ffmpeg, vpxdec and browsers' test tools read.
///
/// Layout (all little-endian), a 32-byte file header:
/// ```
///  0  "DKIF"          4  version u16 (0)   6  header size u16 (32)   8  fourcc "VP80"
/// 12  width u16      14  height u16       16  time-base denominator u32 (rate)
/// 20  time-base numerator u32 (scale)     24  frame count u32        28  unused u32
/// ```
/// then per frame a 12-byte header `size u32, pts u64` and `size` bytes of VP8 data.
public enum IVF {
    public static let fileHeaderSize = 32
    public static let frameHeaderSize = 12
    /// Largest frame accepted from a file: far above any real VP8 frame (a 16k×16k keyframe at
    /// top quality), small enough that a corrupt size cannot make us allocate gigabytes.
    public static let maxFrameBytes = 16 << 20
    static let fourcc = "VP80"
}

public struct IVFReader: Sendable {
    public let width: Int
    public let height: Int
    /// Time base as numerator/denominator seconds (1/30 for a 30 fps Shroud recording).
    public let timeBase: (numerator: Int, denominator: Int)
    /// The frame count the header declares (writers that could not seek leave it 0).
    public let declaredFrameCount: Int
    private var reader: FileBytes

    public init(path: String) throws {
        try self.init(parsing: try readWholeFile(path, format: "IVF"))
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = FileBytes(format: "IVF", bytes: bytes)
        guard try r.tag("file header") == "DKIF" else { throw r.error("missing DKIF signature") }
        let version = try r.u16("version")
        guard version == 0 else { throw r.error("version \(version) is not supported") }
        let headerSize = Int(try r.u16("header size"))
        guard headerSize == IVF.fileHeaderSize else { throw r.error("header size \(headerSize) is not 32") }
        let fourcc = try r.tag("codec")
        guard fourcc == IVF.fourcc else { throw r.error("codec '\(fourcc)' is not VP8") }
        width = Int(try r.u16("width"))
        height = Int(try r.u16("height"))
        let rate = Int(try r.u32("time base"))
        let scale = Int(try r.u32("time base"))
        declaredFrameCount = Int(try r.u32("frame count"))
        try r.skip(4, "file header")
        do { try I420Frame.validate(width: width, height: height) } catch { throw r.error("picture size \(width)x\(height) is invalid") }
        guard rate > 0, scale > 0 else { throw r.error("time base \(scale)/\(rate) is invalid") }
        timeBase = (scale, rate)
        reader = r
    }

    /// The next frame, or nil at the end of the file.
    public mutating func readFrame() throws -> EncodedVideoFrame? {
        if reader.isAtEnd { return nil }
        let size = Int(try reader.u32("frame header"))
        let pts = try reader.u64("frame header")
        guard size > 0, size <= IVF.maxFrameBytes else {
            throw reader.error("frame size \(size) is outside 1...\(IVF.maxFrameBytes)")
        }
        let data = Array(try reader.take(size, "frame data"))
        return EncodedVideoFrame(data: data, isKeyframe: EncodedVideoFrame.isVP8Keyframe(data), pts: Int64(bitPattern: pts))
    }

    public mutating func readAll() throws -> [EncodedVideoFrame] {
        var frames: [EncodedVideoFrame] = []
        while let frame = try readFrame() { frames.append(frame) }
        return frames
    }
}

/// Writes an IVF file; the frame count in the header is filled in by `finish()`.
public final class IVFWriter {
    private let sink: ByteSink
    private var frameCount = 0
    private var finished = false

    /// - Parameters: fps: the time base is 1/fps, matching `VP8Encoder`'s pts.
    public convenience init(path: String, width: Int, height: Int, fps: Int) throws {
        try self.init(sink: try ByteSink(path: path), width: width, height: height, fps: fps)
    }

    public convenience init(width: Int, height: Int, fps: Int) throws {
        try self.init(sink: ByteSink(), width: width, height: height, fps: fps)
    }

    private init(sink: ByteSink, width: Int, height: Int, fps: Int) throws {
        try I420Frame.validate(width: width, height: height)
        guard fps > 0 else { throw MediaError.file("IVF: frame rate \(fps) must be positive") }
        self.sink = sink
        var header: [UInt8] = []
        header.appendASCII("DKIF"); header.appendLE(UInt16(0)); header.appendLE(UInt16(IVF.fileHeaderSize))
        header.appendASCII(IVF.fourcc); header.appendLE(UInt16(width)); header.appendLE(UInt16(height))
        header.appendLE(UInt32(fps)); header.appendLE(UInt32(1)); header.appendLE(UInt32(0)); header.appendLE(UInt32(0))
        try sink.write(header)
    }

    public var bytes: [UInt8] { sink.memory }

    public func write(_ frame: EncodedVideoFrame) throws {
        guard !finished else { throw MediaError.file("IVF: write after finish") }
        guard !frame.data.isEmpty, frame.data.count <= IVF.maxFrameBytes else {
            throw MediaError.file("IVF: frame size \(frame.data.count) is outside 1...\(IVF.maxFrameBytes)")
        }
        var out: [UInt8] = []
        out.reserveCapacity(IVF.frameHeaderSize + frame.data.count)
        out.appendLE(UInt32(frame.data.count))
        out.appendLE(UInt64(bitPattern: frame.pts))
        out += frame.data
        try sink.write(out)
        frameCount += 1
    }

    public func finish() throws {
        guard !finished else { return }
        finished = true
        var count: [UInt8] = []; count.appendLE(UInt32(truncatingIfNeeded: frameCount))
        try sink.patch(count, at: 24)
        try sink.close()
    }
}
