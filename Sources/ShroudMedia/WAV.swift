/// WAV files holding 16-bit little-endian PCM, the format `voice join --input/--output FILE.wav`
/// reads and writes.
///
/// Layout (RIFF): "RIFF" u32 size "WAVE", then chunks of `tag u32 size payload [pad to even]`.
/// The `fmt ` chunk carries format tag 1 (PCM) or 0xFFFE (extensible, PCM sub-format), channels,
/// sample rate, byte rate, block align and 16 bits per sample; `data` carries interleaved samples.
/// Other chunks (LIST, fact, …) are skipped.
public enum WAV {
    /// Largest sample rate accepted from a header (anything above is corrupt, not audio).
    public static let maxSampleRate = 384_000
    /// Largest channel count accepted.
    public static let maxChannels = 8
    static let headerSize = 44
}

public struct WAVReader: Sendable {
    public let sampleRate: Int
    public let channels: Int
    /// Interleaved samples.
    public let samples: [Int16]

    public var duration: Double { Double(samples.count / channels) / Double(sampleRate) }

    public init(path: String) throws {
        try self.init(parsing: try readWholeFile(path, format: "WAV"))
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = FileBytes(format: "WAV", bytes: bytes)
        guard try r.tag("RIFF header") == "RIFF" else { throw r.error("not a RIFF file") }
        _ = try r.u32("RIFF size")
        guard try r.tag("RIFF form type") == "WAVE" else { throw r.error("RIFF form is not WAVE") }
        var format: (channels: Int, rate: Int)?
        while true {
            let tag = try r.tag("chunk header")
            let size = Int(try r.u32("chunk size"))
            switch tag {
            case "fmt ":
                guard size >= 16 else { throw r.error("fmt chunk of \(size) bytes is shorter than 16") }
                var f = FileBytes(format: "WAV", bytes: Array(try r.take(size, "fmt chunk")))
                let formatTag = try f.u16("format tag")
                let channels = Int(try f.u16("channels"))
                let rate = Int(try f.u32("sample rate"))
                _ = try f.u32("byte rate")
                let blockAlign = Int(try f.u16("block align"))
                let bits = Int(try f.u16("bits per sample"))
                var isPCM = formatTag == 1
                if formatTag == 0xFFFE, size >= 40 {
                    try f.skip(2 + 2 + 4, "extensible fields")   // cbSize, valid bits, channel mask
                    isPCM = try f.u16("sub-format") == 1
                }
                guard isPCM else { throw r.error("format tag \(formatTag) is not PCM") }
                guard bits == 16 else { throw r.error("\(bits)-bit samples are not supported (16-bit only)") }
                guard (1 ... WAV.maxChannels).contains(channels) else {
                    throw r.error("\(channels) channels is outside 1...\(WAV.maxChannels)")
                }
                guard (1 ... WAV.maxSampleRate).contains(rate) else {
                    throw r.error("sample rate \(rate) is outside 1...\(WAV.maxSampleRate)")
                }
                guard blockAlign == channels * 2 else { throw r.error("block align \(blockAlign) does not match \(channels) channels") }
                format = (channels, rate)
            case "data":
                guard let format else { throw r.error("data chunk before fmt chunk") }
                guard size <= r.remaining else {
                    throw r.error("truncated: data chunk declares \(size) bytes but \(r.remaining) remain")
                }
                guard size % (2 * format.channels) == 0 else {
                    throw r.error("data chunk of \(size) bytes is not a whole number of \(format.channels)-channel frames")
                }
                let raw = try r.take(size, "data chunk")
                var samples = [Int16](repeating: 0, count: size / 2)
                samples.withUnsafeMutableBytes { dst in raw.withUnsafeBytes { dst.copyMemory(from: $0) } }
                for i in samples.indices { samples[i] = Int16(littleEndian: samples[i]) }
                self.channels = format.channels
                self.sampleRate = format.rate
                self.samples = samples
                return
            default:
                try r.skip(size + (size & 1), "\(tag) chunk")
            }
        }
    }
}

/// Writes a 16-bit PCM WAV file; the RIFF and data sizes are filled in by `finish()`.
public final class WAVWriter {
    public let sampleRate: Int
    public let channels: Int
    private let sink: ByteSink
    private var dataBytes = 0
    private var finished = false

    /// Writes to a file at `path`.
    public convenience init(path: String, sampleRate: Int, channels: Int) throws {
        try self.init(sink: try ByteSink(path: path), sampleRate: sampleRate, channels: channels)
    }

    /// Writes to memory; read the result from `bytes` after `finish()`.
    public convenience init(sampleRate: Int, channels: Int) throws {
        try self.init(sink: ByteSink(), sampleRate: sampleRate, channels: channels)
    }

    private init(sink: ByteSink, sampleRate: Int, channels: Int) throws {
        guard (1 ... WAV.maxChannels).contains(channels) else {
            throw MediaError.file("WAV: \(channels) channels is outside 1...\(WAV.maxChannels)")
        }
        guard (1 ... WAV.maxSampleRate).contains(sampleRate) else {
            throw MediaError.file("WAV: sample rate \(sampleRate) is outside 1...\(WAV.maxSampleRate)")
        }
        self.sink = sink
        self.sampleRate = sampleRate
        self.channels = channels
        var header: [UInt8] = []
        header.appendASCII("RIFF"); header.appendLE(UInt32(0)); header.appendASCII("WAVE")
        header.appendASCII("fmt "); header.appendLE(UInt32(16))
        header.appendLE(UInt16(1)); header.appendLE(UInt16(channels)); header.appendLE(UInt32(sampleRate))
        header.appendLE(UInt32(sampleRate * channels * 2)); header.appendLE(UInt16(channels * 2)); header.appendLE(UInt16(16))
        header.appendASCII("data"); header.appendLE(UInt32(0))
        try sink.write(header)
    }

    /// The file so far (in-memory writers).
    public var bytes: [UInt8] { sink.memory }

    /// Appends interleaved samples.
    public func write(_ samples: [Int16]) throws {
        guard !finished else { throw MediaError.file("WAV: write after finish") }
        guard samples.count % channels == 0 else {
            throw MediaError.file("WAV: \(samples.count) samples is not a whole number of \(channels)-channel frames")
        }
        guard dataBytes + samples.count * 2 <= Int(UInt32.max) - WAV.headerSize else {
            throw MediaError.file("WAV: file would exceed 4 GiB")
        }
        var out = [UInt8](); out.reserveCapacity(samples.count * 2)
        for s in samples { out.appendLE(s) }
        try sink.write(out)
        dataBytes += samples.count * 2
    }

    /// Fills in the sizes and closes the file.
    public func finish() throws {
        guard !finished else { return }
        finished = true
        var riff: [UInt8] = []; riff.appendLE(UInt32(WAV.headerSize - 8 + dataBytes))
        var data: [UInt8] = []; data.appendLE(UInt32(dataBytes))
        try sink.patch(riff, at: 4)
        try sink.patch(data, at: 40)
        try sink.close()
    }
}
