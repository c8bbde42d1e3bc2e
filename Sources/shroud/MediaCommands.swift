import ArgumentParser
import Foundation
import ShroudMedia

extension VideoQuality: ExpressibleByArgument {}

/// `shroud devices`: what this machine can capture from and play to.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "List ALSA audio devices and X11 displays.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        let audio = availableAudioDevices()
        let displays = X11Display.availableDisplays()
        if global.json {
            for device in audio {
                global.output.emit(nil, ["kind": "audio", "name": device.name, "description": device.description,
                                         "directions": device.directions.rawValue])
            }
            for display in displays {
                var fields: [String: Any] = ["kind": "display", "name": display.name, "shared_memory": display.offersSharedMemory]
                if let size = display.screenSize { fields["width"] = size.width; fields["height"] = size.height }
                global.output.emit(nil, fields)
            }
            return
        }
        print("Audio devices (ALSA):")
        if audio.isEmpty { print("  none") }
        let nameWidth = min(32, audio.map(\.name.count).max() ?? 0)
        for device in audio {
            print("  \(device.name.padding(toLength: max(nameWidth, device.name.count), withPad: " ", startingAt: 0))  \(device.directions.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0))  \(device.description)")
        }
        print("X11 displays:")
        if displays.isEmpty { print("  none") }
        for display in displays {
            let size = display.screenSize.map { "\($0)" } ?? "cannot open"
            print("  \(display.name)  \(size)\(display.offersSharedMemory ? "  MIT-SHM" : "")")
        }
    }
}

struct MediaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "media",
        abstract: "Record from the screen or an audio device to files, to test them before a call.",
        subcommands: [RecordScreen.self, RecordAudio.self, Play.self])

    struct RecordScreen: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "record-screen",
            abstract: "Capture an X11 screen or window to VP8 (.ivf) or raw I420 (.y4m).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "X11 display, e.g. :0 (default: $DISPLAY).") var display: String?
        @Option(help: ArgumentHelp("Capture one window by its X id (decimal or 0x hex) instead of the whole screen.", valueName: "ID"))
        var window: String?
        @Option(help: "Picture height: 360p, 720p or 1080p (never enlarged).") var quality: VideoQuality = .p1080
        @Option(help: "Frames per second (1-120).") var fps: Int = 30
        @Option(help: "Seconds to record.") var duration: Double = 5
        @Option(help: ArgumentHelp("VP8 bitrate in kbit/s (default: 500, 1200 or 2500 by quality).", valueName: "KBPS"))
        var bitrate: Int?
        @Option(help: ArgumentHelp("Output file: .ivf (VP8) or .y4m (uncompressed).", valueName: "FILE")) var out: String

        func validate() throws {
            guard FramePacer.frameRates.contains(fps) else { throw ValidationError("--fps must be between 1 and 120") }
            guard duration > 0, duration <= 24 * 3600 else { throw ValidationError("--duration must be a positive number of seconds") }
            guard out.hasSuffix(".ivf") || out.hasSuffix(".y4m") else { throw ValidationError("--out must end in .ivf or .y4m") }
            if let bitrate { guard bitrate >= 50, bitrate <= 50_000 else { throw ValidationError("--bitrate must be 50-50000 kbit/s") } }
            if let window { guard parseWindowID(window) != nil else { throw ValidationError("--window must be a window id like 0x1e00007") } }
        }

        func run() throws {
            let x = try X11Display(name: display)
            let source: CaptureSource = window.flatMap(parseWindowID).map { .window($0) } ?? .rootWindow
            let capture = try PacedScreenCapture(capturer: ScreenCapturer(display: x, source: source), framesPerSecond: fps)
            let converter = ScreenPictureConverter(quality: quality)
            let frameLimit = Int((Double(fps) * duration).rounded())
            var recorder: ScreenFileRecorder?
            var first: UInt64?
            var frames = 0
            var lastPTS: Int64 = -1
            let started = Date()
            while frames < frameLimit {
                let stop = try capture.withNextFrame { frame, takenAt -> Bool in
                    let start = first ?? takenAt
                    first = start
                    let elapsed = takenAt - start
                    // The wall clock, not the frame count, ends a recording that falls behind.
                    if Double(elapsed) / 1e9 >= duration { return true }
                    let picture = try converter.picture(from: frame)
                    if recorder == nil {
                        recorder = try ScreenFileRecorder(path: out, width: picture.width, height: picture.height, fps: fps,
                                                          bitrate: bitrate.map { $0 * 1000 } ?? quality.defaultBitrate)
                    }
                    // Presentation time from the capture time, so skipped slots keep real timing;
                    // two captures closer than half a frame apart (the pacer catching up) still
                    // get increasing times, as VP8 and IVF require.
                    let pts = max(Int64((Double(elapsed) * Double(fps) / 1e9).rounded()), lastPTS + 1)
                    lastPTS = pts
                    try recorder?.write(picture, pts: pts)
                    return false
                }
                if stop { break }
                frames += 1
            }
            guard let recorder else { throw Failure("no frame was captured") }
            let bytes = try recorder.finish()
            let seconds = Date().timeIntervalSince(started)
            let size = "\(recorder.width)x\(recorder.height)"
            global.output.emit(
                "Recorded \(frames) frames (\(size), \(capture.pacer.framesSkipped) skipped, \(capture.capturer.method.rawValue)) in \(String(format: "%.1f", seconds)) s to \(out) (\(bytes) bytes)",
                ["out": out, "frames": frames, "width": recorder.width, "height": recorder.height, "skipped": capture.pacer.framesSkipped,
                 "method": capture.capturer.method.rawValue, "seconds": seconds, "bytes": bytes])
        }
    }

    struct RecordAudio: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "record-audio",
            abstract: "Encode audio from an ALSA device or a WAV file to Ogg Opus, as a call would send it.")
        @OptionGroup var global: GlobalOptions
        @Option(help: ArgumentHelp("ALSA capture device (e.g. default, hw:0) or a 48 kHz 16-bit WAV file.", valueName: "DEV|FILE.wav"))
        var input: String = "default"
        @Option(help: "Seconds to record (a WAV file: at most this much; default all of it; a device: default 5).")
        var duration: Double?
        @Option(help: ArgumentHelp("Opus bitrate in kbit/s (constant bitrate).", valueName: "KBPS")) var bitrate: Int = 32
        @Option(help: "Channels: 1 (voice) or 2.") var channels: Int = 1
        @Option(help: ArgumentHelp("Extra ALSA configuration to read (defines more devices).", valueName: "FILE"))
        var alsaConfig: String?
        @Option(help: ArgumentHelp("Output Ogg Opus file (.ogg or .opus).", valueName: "FILE")) var out: String

        func validate() throws {
            if let duration { guard duration > 0, duration <= 24 * 3600 else { throw ValidationError("--duration must be a positive number of seconds") } }
            guard OpusCodec.bitrateRange.contains(bitrate * 1000) else { throw ValidationError("--bitrate must be 6-510 kbit/s") }
            guard OpusCodec.channelRange.contains(channels) else { throw ValidationError("--channels must be 1 or 2") }
            guard out.hasSuffix(".ogg") || out.hasSuffix(".opus") else { throw ValidationError("--out must end in .ogg or .opus") }
        }

        func run() throws {
            let isFile = input.lowercased().hasSuffix(".wav")
            let source: AudioSource = isFile
                ? try WAVFileSource(path: input, channels: channels)
                : try DeviceSource(device: input, channels: channels, configuration: alsaConfig.map { try ALSAConfiguration(contentsOfFile: $0) })
            let limitSeconds = duration ?? (isFile ? Double.infinity : 5)
            let encoder = try OpusEncoder(channels: channels, bitrate: bitrate * 1000)
            let writer = try OggOpusWriter(path: out, channels: channels, preSkip: encoder.lookahead,
                                           serialNumber: UInt32.random(in: 1...UInt32.max))
            let frameSamples = OpusFrameDuration.ms20.samplesPerChannel
            let sampleLimit = limitSeconds.isFinite ? Int(limitSeconds * Double(OpusCodec.sampleRate)) : Int.max
            var samples = 0, packets = 0
            while samples < sampleLimit, var block = try source.next(frames: min(frameSamples, sampleLimit - samples)) {
                let frames = block.count / channels
                samples += frames
                if frames < frameSamples { block += [Int16](repeating: 0, count: (frameSamples - frames) * channels) }
                try writer.write(try encoder.encode(block))
                packets += 1
            }
            guard packets > 0 else { throw Failure("\(input) gave no audio") }
            // The encoder delays its output by its lookahead (the pre-skip): encode silence until
            // the last real sample has left the encoder, as RFC 7845 players expect.
            while packets * frameSamples < samples + encoder.lookahead {
                try writer.write(try encoder.encode([Int16](repeating: 0, count: frameSamples * channels)))
                packets += 1
            }
            // The end granule marks the real end, so players drop the padding of the last packet.
            try writer.finish(sampleCount: samples)
            let seconds = Double(samples) / Double(OpusCodec.sampleRate)
            global.output.emit(
                "Recorded \(String(format: "%.2f", seconds)) s (\(packets) Opus packets, \(bitrate) kbit/s CBR) to \(out)",
                ["out": out, "seconds": seconds, "packets": packets, "bitrate": bitrate * 1000,
                 "xruns": (source as? DeviceSource)?.capture.stats.xruns ?? 0])
        }
    }
}

extension MediaCommand {
    /// `shroud media play`: shows a recording in the viewer window a screen watch uses, so the
    /// window (scaling, title, resize, close) can be tried without a call.
    struct Play: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "play", abstract: "Show an .ivf (VP8) or .y4m recording in an X11 window, at its frame rate.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The recording: .ivf or .y4m.", valueName: "FILE")) var file: String
        @Option(help: "X11 display, e.g. :0 (default: $DISPLAY).") var display: String?
        @Option(help: "Window width (default: the video's).") var width: Int?
        @Option(help: "Window height (default: the video's).") var height: Int?
        @Option(help: ArgumentHelp("Seconds to keep the last picture up after the end.", valueName: "S")) var hold: Double = 0

        func validate() throws {
            guard file.hasSuffix(".ivf") || file.hasSuffix(".y4m") else { throw ValidationError("FILE must end in .ivf or .y4m") }
            for side in [width, height].compactMap({ $0 }) {
                guard (1 ... VideoWindow.maximumDimension).contains(side) else {
                    throw ValidationError("--width and --height must be 1-\(VideoWindow.maximumDimension)")
                }
            }
            guard hold >= 0, hold <= 24 * 3600 else { throw ValidationError("--hold must be 0 or more seconds") }
        }

        func run() throws {
            var frames = try RecordingFrames(path: file)
            let x = try X11Display(name: display)
            let size = PixelSize(width: width ?? frames.width, height: height ?? frames.height)
            let window = try VideoWindow(display: x, title: "Shroud — \((file as NSString).lastPathComponent) (\(frames.width)x\(frames.height))",
                                         width: size.width, height: size.height)
            global.output.note("Showing \(file) (\(frames.width)x\(frames.height), \(frames.fps) fps) in window 0x\(String(window.windowID, radix: 16)) on \(x.name)")
            let interval = 1.0 / Double(frames.fps)
            let start = Date()
            var shown = 0
            var closed = false
            while let picture = try frames.next() {
                let due = start.addingTimeInterval(Double(shown) * interval)
                if due > Date() { Thread.sleep(until: due) }
                guard try window.processEvents() else { closed = true; break }
                try window.draw(picture)
                shown += 1
            }
            if !closed {
                global.output.note("Last frame shown")
                let end = Date().addingTimeInterval(hold)
                while Date() < end {
                    guard try window.processEvents() else { closed = true; break }
                    Thread.sleep(forTimeInterval: 0.02)
                }
            }
            window.close()
            global.output.emit("Played \(shown) frames of \(file) in a \(window.size) window (\(window.method.rawValue))\(closed ? ", closed by the user" : "")",
                               ["file": file, "frames": shown, "width": window.size.width, "height": window.size.height,
                                "method": window.method.rawValue, "closed": closed])
        }
    }
}

/// The pictures of a recording, decoded: IVF through VP8, Y4M as stored.
struct RecordingFrames {
    let width: Int, height: Int, fps: Int
    private var ivf: IVFReader?
    private var y4m: Y4MReader?
    private let decoder: VP8Decoder?

    init(path: String) throws {
        if path.hasSuffix(".y4m") {
            let reader = try Y4MReader(path: path)
            y4m = reader
            width = reader.width
            height = reader.height
            fps = max(1, reader.frameRate.numerator / max(1, reader.frameRate.denominator))
            decoder = nil
        } else {
            let reader = try IVFReader(path: path)
            ivf = reader
            width = reader.width
            height = reader.height
            fps = max(1, reader.timeBase.denominator / max(1, reader.timeBase.numerator))
            decoder = try VP8Decoder()
        }
        guard (1 ... VideoWindow.maximumDimension).contains(width), (1 ... VideoWindow.maximumDimension).contains(height) else {
            throw Failure("\(path): a \(width)x\(height) picture cannot be shown")
        }
    }

    mutating func next() throws -> I420Frame? {
        if y4m != nil { return try y4m?.readFrame() }
        while let frame = try ivf?.readFrame() {
            if let picture = try decoder?.decode(frame.data).last { return picture }
        }
        return nil
    }
}

/// Writes converted screen pictures to .ivf (VP8) or .y4m.
final class ScreenFileRecorder {
    let width: Int, height: Int
    private let ivf: IVFWriter?
    private let y4m: Y4MWriter?
    private let encoder: VP8Encoder?
    private let path: String

    init(path: String, width: Int, height: Int, fps: Int, bitrate: Int) throws {
        self.path = path
        self.width = width
        self.height = height
        if path.hasSuffix(".y4m") {
            y4m = try Y4MWriter(path: path, width: width, height: height, fps: fps)
            ivf = nil
            encoder = nil
        } else {
            ivf = try IVFWriter(path: path, width: width, height: height, fps: fps)
            encoder = try VP8Encoder(width: width, height: height, bitrate: bitrate, fps: fps)
            y4m = nil
        }
    }

    func write(_ picture: I420Frame, pts: Int64) throws {
        guard picture.width == width, picture.height == height else {
            throw Failure("the screen changed size during the recording (\(width)x\(height) → \(picture.width)x\(picture.height))")
        }
        if let y4m { try y4m.write(picture) }
        if let encoder, let ivf {
            for frame in try encoder.encode(picture, pts: pts) { try ivf.write(frame) }
        }
    }

    /// Closes the file and returns its size in bytes.
    func finish() throws -> Int {
        try ivf?.finish()
        try y4m?.finish()
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        return (attributes?[.size] as? Int) ?? 0
    }
}

/// Blocks of interleaved 48 kHz samples.
protocol AudioSource {
    /// Up to `frames` frames, or nil at the end.
    func next(frames: Int) throws -> [Int16]?
}

final class WAVFileSource: AudioSource {
    private let samples: [Int16]
    private let channels: Int
    private var position = 0

    init(path: String, channels: Int) throws {
        let wav = try WAVReader(path: path)
        guard wav.sampleRate == OpusCodec.sampleRate else {
            throw Failure("\(path) is \(wav.sampleRate) Hz; Shroud records 48000 Hz (convert it first, e.g. with sox or ffmpeg)")
        }
        guard wav.channels == channels else {
            throw Failure("\(path) has \(wav.channels) channel(s) but --channels is \(channels)")
        }
        samples = wav.samples
        self.channels = channels
    }

    func next(frames: Int) throws -> [Int16]? {
        guard position < samples.count else { return nil }
        let end = min(samples.count, position + frames * channels)
        defer { position = end }
        return Array(samples[position..<end])
    }
}

final class DeviceSource: AudioSource {
    let capture: AudioCapture

    init(device: String, channels: Int, configuration: ALSAConfiguration?) throws {
        capture = try AudioCapture(device: device, format: try AudioFormat(channels: channels, periodMilliseconds: 20),
                                   configuration: configuration)
    }

    func next(frames: Int) throws -> [Int16]? { try capture.read(frames: frames) }
}

/// Parses an X window id written in decimal or as 0x-prefixed hex.
func parseWindowID(_ text: String) -> UInt? {
    if text.lowercased().hasPrefix("0x") { return UInt(text.dropFirst(2), radix: 16) }
    return UInt(text)
}
