import ShroudTestSupport
import Foundation
import ShroudMedia
import Testing

/// A temporary directory removed when the value is released.
final class TemporaryDirectory {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("shroud-alsa-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// Deterministic S16LE samples that are not silence and not periodic.
func testSamples(count: Int, seed: UInt32) -> [Int16] {
    var state = seed | 1
    return (0..<count).map { _ in
        state ^= state << 13; state ^= state >> 17; state ^= state << 5
        return Int16(truncatingIfNeeded: state)
    }
}

func littleEndianBytes(_ samples: [Int16]) -> Data {
    var data = Data(capacity: samples.count * 2)
    for sample in samples {
        let bits = UInt16(bitPattern: sample)
        data.append(UInt8(bits & 0xFF))
        data.append(UInt8(bits >> 8))
    }
    return data
}

/// The ALSA `file` plugin in front of the unpaced `null` device, behind a `plug` fixed at
/// S16_LE / 48 kHz: capture reads `infile` byte for byte, playback writes `file`.
func filePCMConfiguration(name: String, infile: String? = nil, outfile: String, channels: Int) -> String {
    let input = infile.map { "infile \"\($0)\"" } ?? ""
    return """
    pcm.\(name) {
        type plug
        slave {
            pcm { type file file "\(outfile)" \(input) format "raw" slave.pcm "null" }
            format S16_LE
            rate 48000
            channels \(channels)
        }
    }
    """
}

@Suite("ALSA through the file plugin")
struct ALSAFilePluginTests {
    @Test("capture returns the input file byte for byte", arguments: [1, 2])
    func captureExact(channels: Int) throws {
        let temp = try TemporaryDirectory()
        let frames = 48_000 / 2 + 123  // not a whole number of periods
        let samples = testSamples(count: frames * channels, seed: UInt32(channels))
        try littleEndianBytes(samples).write(to: URL(fileURLWithPath: temp.path("in.raw")))
        let configuration = try ALSAConfiguration(text: filePCMConfiguration(
            name: "shroud_test_in", infile: temp.path("in.raw"), outfile: "/dev/null", channels: channels))
        let capture = try AudioCapture(device: "shroud_test_in", format: try AudioFormat(channels: channels),
                                       configuration: configuration)
        var captured = try capture.read(frames: 1000)
        var rest = [Int16](repeating: 0, count: (frames - 1000) * channels)
        try capture.read(into: &rest)
        captured += rest
        let firstDifference = zip(captured, samples).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(captured.count == samples.count)
        #expect(firstDifference == nil)
        #expect(capture.stats == AudioStats(frames: frames, xruns: 0, suspends: 0))
        #expect(capture.periodFrames == 960)
    }

    @Test("playback writes exactly what was played", arguments: [1, 2])
    func playbackExact(channels: Int) throws {
        let temp = try TemporaryDirectory()
        let samples = testSamples(count: 48_000 * channels / 3 + 2 * channels, seed: 77)
        let configuration = try ALSAConfiguration(text: filePCMConfiguration(
            name: "shroud_test_out", outfile: temp.path("out.raw"), channels: channels))
        do {
            let playback = try AudioPlayback(device: "shroud_test_out",
                                             format: try AudioFormat(channels: channels, periodMilliseconds: 10),
                                             configuration: configuration)
            #expect(playback.periodFrames == 480)
            try playback.write(Array(samples[..<(channels * 100)]))
            try playback.write(Array(samples[(channels * 100)...]))
            try playback.drain()
            #expect(playback.stats.frames == samples.count / channels)
        }
        let written = try Data(contentsOf: URL(fileURLWithPath: temp.path("out.raw")))
        #expect(written == littleEndianBytes(samples))
    }

    @Test("no such ALSA device is a MediaError")
    func noSuchDevice() {
        #expect(throws: MediaError.device("no such ALSA device 'shroud_no_such_device'")) {
            try AudioCapture(device: "shroud_no_such_device", format: try AudioFormat())
        }
        #expect(throws: MediaError.device("no such ALSA device 'shroud_no_such_device'")) {
            try AudioPlayback(device: "shroud_no_such_device", format: try AudioFormat(),
                              configuration: try ALSAConfiguration(text: "pcm.other { type null }"))
        }
    }

    @Test("a missing input file is a MediaError")
    func missingInfile() throws {
        let configuration = try ALSAConfiguration(text: filePCMConfiguration(
            name: "shroud_test_missing", infile: "/nonexistent/shroud/in.raw", outfile: "/dev/null", channels: 1))
        #expect(throws: MediaError.self) {
            try AudioCapture(device: "shroud_test_missing", format: try AudioFormat(), configuration: configuration)
        }
    }

    @Test("configuration from a file, and a negative frame count refused")
    func configurationFile() throws {
        let temp = try TemporaryDirectory()
        let samples = testSamples(count: 960 * 3, seed: 5)
        try littleEndianBytes(samples).write(to: URL(fileURLWithPath: temp.path("in.raw")))
        let text = filePCMConfiguration(name: "shroud_test_file", infile: temp.path("in.raw"),
                                        outfile: "/dev/null", channels: 1)
        try text.write(toFile: temp.path("asound.conf"), atomically: true, encoding: .utf8)
        let capture = try AudioCapture(device: "shroud_test_file", format: try AudioFormat(),
                                       configuration: try ALSAConfiguration(contentsOfFile: temp.path("asound.conf")))
        #expect(try capture.read(frames: 960 * 3) == samples)
        #expect(throws: MediaError.self) { try capture.read(frames: -1) }
    }

    @Test("malformed configuration text is a MediaError")
    func malformedConfiguration() {
        #expect(throws: MediaError.self) { try ALSAConfiguration(text: "pcm.broken { type plug ") }
        #expect(throws: MediaError.self) { try ALSAConfiguration(text: "}}}") }
        #expect(throws: MediaError.file("cannot read ALSA configuration file /nonexistent/asoundrc")) {
            try ALSAConfiguration(contentsOfFile: "/nonexistent/asoundrc")
        }
    }

    @Test("samples that are not whole frames are refused")
    func partialFrames() throws {
        let temp = try TemporaryDirectory()
        let configuration = try ALSAConfiguration(text: filePCMConfiguration(
            name: "shroud_test_stereo", outfile: temp.path("out.raw"), channels: 2))
        let playback = try AudioPlayback(device: "shroud_test_stereo", format: try AudioFormat(channels: 2),
                                         configuration: configuration)
        #expect(throws: MediaError.self) { try playback.write([1, 2, 3]) }
    }

    @Test("format limits: channels 1–2, period 10–20 ms, each side of each bound")
    func formatLimits() throws {
        let channels = AudioFormat.channelCounts, period = AudioFormat.periodMilliseconds
        #expect(try AudioFormat(channels: channels.lowerBound).channels == 1)
        #expect(try AudioFormat(channels: channels.upperBound).channels == 2)
        #expect(throws: MediaError.self) { try AudioFormat(channels: channels.lowerBound - 1) }
        #expect(throws: MediaError.self) { try AudioFormat(channels: channels.upperBound + 1) }
        #expect(try AudioFormat(periodMilliseconds: period.lowerBound).framesPerPeriod == 480)
        #expect(try AudioFormat(periodMilliseconds: period.upperBound).framesPerPeriod == 960)
        #expect(throws: MediaError.self) { try AudioFormat(periodMilliseconds: period.lowerBound - 1) }
        #expect(throws: MediaError.self) { try AudioFormat(periodMilliseconds: period.upperBound + 1) }
    }

    @Test("the device list comes from ALSA's configuration")
    func deviceList() {
        let devices = availableAudioDevices()
        #expect(devices.contains { $0.name == "null" })
    }
}

@Suite("ALSA through a PulseAudio null sink", .serialized)
struct ALSAPulseAudioTests {
    @Test("capturing 1 s takes about 1 s: the device paces the reads")
    func pacedCapture() throws {
        let pulse = try PulseAudioServer()
        defer { pulse.stop() }
        let configuration = try ALSAConfiguration(text: pulse.alsaConfiguration(capture: "vsink_rec", playback: "vsink_play"))
        let capture = try AudioCapture(device: "vsink_rec", format: try AudioFormat(channels: 1, periodMilliseconds: 20),
                                       configuration: configuration)
        // A fresh null sink renders its first block with its default 2 s latency before it
        // follows the stream's 20 ms request: absorb that start-up, then time the steady state.
        _ = try capture.read(frames: 960)
        let started = Date()
        for _ in 0..<50 { _ = try capture.read(frames: 960) }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed > 0.7 && elapsed < 1.5, "1 s of capture took \(elapsed) s, period \(capture.periodFrames), \(capture.stats)")
        #expect(capture.stats.frames == 48_960)
    }

    @Test("what is played into vsink comes back on vsink.monitor")
    func playAndRecord() throws {
        let pulse = try PulseAudioServer()
        defer { pulse.stop() }
        let text = pulse.alsaConfiguration(capture: "vsink_rec", playback: "vsink_play")
        // A 1 kHz tone at half scale for 1.5 s.
        let tone = (0..<72_000).map { Int16(16_000 * sin(2 * Double.pi * 1000 * Double($0) / 48_000)) }
        let capture = try AudioCapture(device: "vsink_rec", format: try AudioFormat(),
                                       configuration: try ALSAConfiguration(text: text))
        // The recording stream must be running before playback starts; a fresh null sink can hold
        // the first read for up to 2 s while it switches to the stream's timing, and on a loaded
        // machine a single period is not proof that it did, so take a fifth of a second first.
        for _ in 0..<10 { _ = try capture.read(frames: 960) }
        // Playback blocks for 1.5 s, so it gets its own thread rather than a task: a task could wait
        // for a cooperative thread while this test blocks one in `read`.
        let player = PlayerThread(configuration: text, samples: tone)
        player.start()
        // Record well past the end of the 1.5 s tone, so a late start of either stream still
        // leaves the whole tone inside the recording.
        var recorded: [Int16] = []
        while recorded.count < 240_000 { recorded += try capture.read(frames: 960) }
        #expect(player.finish() == nil)
        let peak = recorded.map { abs(Int($0)) }.max() ?? 0
        #expect(peak > 12_000, "peak \(peak)")
        // Most of the 1.5 s tone arrived loud (a sine at 16 000 is above 8 000 two thirds of the time).
        let loud = recorded.indices.filter { abs(Int(recorded[$0])) > 8_000 }
        #expect(loud.count > 20_000, "\(loud.count) loud samples")
    }

    @Test("a playback underrun is recovered and counted, and playback goes on")
    func underrunRecovered() throws {
        let pulse = try PulseAudioServer()
        defer { pulse.stop() }
        // `handle_underrun` makes the pulse plugin report underruns as ALSA xruns (-EPIPE).
        let text = "pcm.vsink_play { type pulse server \"unix:\(pulse.socketPath)\" device \"vsink\" handle_underrun true }"
        let playback = try AudioPlayback(device: "vsink_play", format: try AudioFormat(),
                                         configuration: try ALSAConfiguration(text: text))
        let chunk = [Int16](repeating: 1000, count: 960 * 8)
        try playback.write(chunk)
        #expect(playback.stats.xruns == 0)
        // Sleep far longer than the 80 ms buffer: the device runs dry.
        usleep(500_000)
        try playback.write(chunk)
        #expect(playback.stats.xruns >= 1)
        #expect(playback.stats.frames == 2 * 960 * 8)
    }
}

/// Plays samples into an ALSA device on a thread of its own.
final class PlayerThread: @unchecked Sendable {
    private let configuration: String
    private let samples: [Int16]
    private let done = DispatchSemaphore(value: 0)
    private var failure: String?

    init(configuration: String, samples: [Int16]) {
        self.configuration = configuration
        self.samples = samples
    }

    func start() {
        Thread.detachNewThread { [self] in
            do {
                let playback = try AudioPlayback(device: "vsink_play", format: try AudioFormat(),
                                                 configuration: try ALSAConfiguration(text: configuration))
                try playback.write(samples)
                try playback.drain()
            } catch {
                failure = "\(error)"
            }
            done.signal()
        }
    }

    /// Waits for the playback to end; returns its error, if any.
    func finish() -> String? {
        done.wait()
        return failure
    }
}

