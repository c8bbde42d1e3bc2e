import Foundation
import ShroudMedia

/// Loads the committed fixtures in media-fixtures/ (recipe: tools/make-fixtures) and runs ffmpeg,
/// the independent decoder the tests compare Shroud's output with.
public enum Fixtures {
    public static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let directory = repositoryRoot.appendingPathComponent("media-fixtures")
    public static let ffmpeg = "/usr/bin/ffmpeg"

    public static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// ~5 s of speech, 48 kHz mono.
    public static func speech() throws -> WAVReader { try WAVReader(path: path("speech-48k-mono.wav")) }

    /// A 1920x1080 screen image turned into I420 the way a capture is: ffmpeg decodes the PNG into
    /// 32-bpp BGRA (X11's layout), then libyuv converts it.
    public static func screen(_ name: String = "screen-text") throws -> I420Frame {
        let bgra = try run(["-v", "error", "-i", path("\(name).png"), "-f", "rawvideo", "-pix_fmt", "bgra", "-"])
        return try ColorConversion.bgraToI420(bgra, width: 1920, height: 1080)
    }

    /// Runs ffmpeg with the given arguments and returns its standard output.
    @discardableResult
    public static func run(_ arguments: [String]) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ffmpeg)
        process.arguments = ["-nostdin"] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read before waiting: a full pipe would block ffmpeg forever.
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FixtureError.ffmpeg(String(decoding: errors, as: UTF8.self))
        }
        return [UInt8](data)
    }

    public static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory
            .appendingPathComponent("shroud-media-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)-\(name)").path
    }
}

public enum FixtureError: Error { case ffmpeg(String) }

/// Audio quality figures used by the Opus tests.
public enum AudioQuality {
    /// Signal delay in samples (10 ms resolution, up to `maxBlocks`), from the speech envelope; then
    /// the waveform correlation around it.
    public static func alignedCorrelation(_ reference: ArraySlice<Int16>, _ signal: [Int16], maxBlocks: Int = 60) -> (value: Double, lag: Int) {
        let block = 480
        func envelope(_ x: ArraySlice<Int16>) -> [Double] {
            stride(from: x.startIndex, to: x.endIndex - block, by: block).map { rms(x[$0 ..< $0 + block]) }
        }
        let a = envelope(reference), b = envelope(signal[...])
        var best = (value: -2.0, lag: 0)
        for lag in 0 ..< maxBlocks {
            let n = min(a.count, b.count - lag)
            guard n > 10 else { break }
            let ma = a[0..<n].reduce(0, +) / Double(n), mb = b[lag..<lag + n].reduce(0, +) / Double(n)
            var dot = 0.0, ea = 0.0, eb = 0.0
            for i in 0..<n { let x = a[i] - ma, y = b[i + lag] - mb; dot += x * y; ea += x * x; eb += y * y }
            let c = dot / max(1e-9, (ea * eb).squareRoot())
            if c > best.value { best = (c, lag) }
        }
        let coarse = max(0, best.lag * block - block)
        let fine = maxCorrelation(Array(reference), Array(signal.dropFirst(coarse)), maxLag: 2 * block)
        return (fine.value, coarse + fine.lag)
    }

    /// The median, over one-second pieces of the reference, of each piece's best aligned correlation:
    /// the jitter buffer grows and shrinks in 20 ms steps during a lossy call, so one lag cannot fit
    /// the whole call.
    public static func piecewiseCorrelation(_ reference: ArraySlice<Int16>, _ signal: [Int16]) -> Double {
        var values: [Double] = []
        var piece = reference.startIndex
        let offset = reference.startIndex
        while piece + 48_000 <= reference.endIndex {
            // The signal from this piece's position on (it lags the reference, never leads).
            let window = Array(signal.dropFirst(piece - offset).prefix(48_000 + 60 * 480))
            values.append(alignedCorrelation(reference[piece ..< piece + 48_000], window, maxBlocks: 60).value)
            piece += 48_000
        }
        values.sort()
        return values.isEmpty ? 0 : values[values.count / 2]
    }

    /// Largest normalised cross-correlation between `reference` and `signal` over lags
    /// 0...maxLag (signal delayed relative to reference). 1 means identical up to a gain; a codec
    /// that keeps the waveform scores above 0.9, unrelated audio near 0.
    /// How well a recorded call matches the speech that was spoken, robust to what a real-time call
    /// does to the timeline (the jitter buffer moves the audio in 20 ms steps; concealment replaces
    /// lost frames with similar-sounding audio):
    /// - `envelope`: median over one-second pieces (with speech in them) of the correlation of the
    ///   10 ms RMS envelopes, each piece at its best lag within ±100 ms of the previous piece's;
    /// - `spectral`: correlation of the log-magnitude spectrograms (20 ms frames, 24 log-spaced
    ///   frequencies from 100 Hz to 4 kHz) of reference and recording, each frame at its piece's lag;
    /// - `lag`: the first piece's lag in samples (the delay of the recording).
    public static func speechMatch(_ reference: [Int16], _ signal: [Int16]) -> (envelope: Double, spectral: Double, lag: Int) {
        let block = 480, pieceBlocks = 100, drift = 10
        func envelope(_ x: [Int16]) -> [Double] {
            stride(from: 0, to: x.count - block + 1, by: block).map { rms(x[$0 ..< $0 + block]) }
        }
        func pearson(_ a: ArraySlice<Double>, _ b: ArraySlice<Double>) -> Double {
            let n = Double(a.count)
            guard n > 1 else { return 0 }
            let ma = a.reduce(0, +) / n, mb = b.reduce(0, +) / n
            var dot = 0.0, ea = 0.0, eb = 0.0
            for (x, y) in zip(a, b) { dot += (x - ma) * (y - mb); ea += (x - ma) * (x - ma); eb += (y - mb) * (y - mb) }
            return dot / max(1e-12, (ea * eb).squareRoot())
        }
        let a = envelope(reference), b = envelope(signal)
        guard a.count > pieceBlocks, b.count > pieceBlocks else { return (0, 0, 0) }
        // First lag: the best over 0…600 ms for the first piece.
        var lag = 0, bestFirst = -2.0
        for candidate in 0 ... 60 where candidate + pieceBlocks <= b.count {
            let c = pearson(a[0 ..< pieceBlocks], b[candidate ..< candidate + pieceBlocks])
            if c > bestFirst { bestFirst = c; lag = candidate }
        }
        let firstLag = lag
        let loud = a.reduce(0, +) / Double(a.count) / 4
        var envelopeValues: [Double] = []
        var pieceLags: [(start: Int, lag: Int)] = []
        for start in stride(from: 0, through: a.count - pieceBlocks, by: pieceBlocks) {
            var best = (value: -2.0, lag: lag)
            for candidate in max(0, lag - drift) ... lag + drift where start + candidate + pieceBlocks <= b.count {
                let c = pearson(a[start ..< start + pieceBlocks], b[start + candidate ..< start + candidate + pieceBlocks])
                if c > best.value { best = (c, candidate) }
            }
            guard best.value > -2 else { break }
            lag = best.lag
            pieceLags.append((start, lag))
            if a[start ..< start + pieceBlocks].reduce(0, +) / Double(pieceBlocks) >= loud { envelopeValues.append(best.value) }
        }
        envelopeValues.sort()
        let envelopeMedian = envelopeValues.isEmpty ? 0 : envelopeValues[envelopeValues.count / 2]

        // Spectrograms at 24 log-spaced frequencies, Hann-windowed 20 ms frames.
        let frame = 960
        let frequencies = (0 ..< 24).map { 100 * pow(40.0, Double($0) / 23) }
        let window = (0 ..< frame).map { 0.5 - 0.5 * cos(2 * Double.pi * Double($0) / Double(frame - 1)) }
        let tables = frequencies.map { f in (0 ..< frame).map { (cos(2 * Double.pi * f * Double($0) / 48_000), sin(2 * Double.pi * f * Double($0) / 48_000)) } }
        func spectrum(_ x: [Int16], at start: Int) -> [Double] {
            tables.map { table in
                var re = 0.0, im = 0.0
                for i in 0 ..< frame {
                    let v = Double(x[start + i]) * window[i]
                    re += v * table[i].0; im += v * table[i].1
                }
                return log10(1 + (re * re + im * im).squareRoot())
            }
        }
        var reference24: [Double] = [], signal24: [Double] = []
        for piece in pieceLags {
            for f in stride(from: piece.start * block, to: (piece.start + pieceBlocks) * block - frame + 1, by: frame) {
                let g = f + piece.lag * block
                guard g + frame <= signal.count, f + frame <= reference.count else { continue }
                reference24 += spectrum(reference, at: f)
                signal24 += spectrum(signal, at: g)
            }
        }
        return (envelopeMedian, pearson(reference24[...], signal24[...]), firstLag * block)
    }

    public static func maxCorrelation(_ reference: [Int16], _ signal: [Int16], maxLag: Int) -> (value: Double, lag: Int) {
        let a = reference.map(Float.init), b = signal.map(Float.init)
        var best = (value: -1.0, lag: 0)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                for lag in 0 ... maxLag {
                    let n = min(pa.count, pb.count - lag)
                    guard n > 0 else { break }
                    var dot: Float = 0, ea: Float = 0, eb: Float = 0
                    for i in 0 ..< n {
                        let x = pa[i], y = pb[i + lag]
                        dot += x * y; ea += x * x; eb += y * y
                    }
                    let c = Double(dot) / max(1e-9, (Double(ea) * Double(eb)).squareRoot())
                    if c > best.value { best = (c, lag) }
                }
            }
        }
        return best
    }

    public static func energy(_ x: ArraySlice<Int16>) -> Double { x.reduce(0.0) { $0 + Double($1) * Double($1) } }

    public static func rms(_ x: ArraySlice<Int16>) -> Double { (energy(x) / Double(max(1, x.count))).squareRoot() }

    /// Energy of the difference between two equally long stretches.
    public static func errorEnergy(_ a: ArraySlice<Int16>, _ b: ArraySlice<Int16>) -> Double {
        zip(a, b).reduce(0.0) { let d = Double($1.0) - Double($1.1); return $0 + d * d }
    }
}
