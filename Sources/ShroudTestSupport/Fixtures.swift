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
    /// For a real-time call, whose jitter buffer moves the audio in 20 ms steps: the median, over
    /// half-second pieces of the reference with speech in them (RMS at least a tenth of the whole),
    /// of the waveform correlation at the best lag within ±25 ms of the previous piece's lag (the
    /// first lag from `alignedCorrelation`). A buffer step moves the lag of later pieces only a
    /// little, so each piece is compared at its own alignment; wrong audio finds no lag that fits.
    public static func trackedCorrelation(_ reference: [Int16], _ signal: [Int16]) -> Double {
        let piece = 24_000, window = 1_200
        var lag = alignedCorrelation(reference[...], signal).lag
        let loud = rms(reference[...]) / 10
        var values: [Double] = []
        for start in stride(from: 0, to: reference.count - piece, by: piece) {
            let part = Array(reference[start ..< start + piece])
            let from = max(0, start + lag - window)
            guard from < signal.count else { break }
            let best = maxCorrelation(part, Array(signal[from ..< min(signal.count, from + piece + 2 * window)]), maxLag: 2 * window)
            lag = from + best.lag - start
            if rms(part[...]) >= loud { values.append(best.value) }
        }
        values.sort()
        return values.isEmpty ? 0 : values[values.count / 2]
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
