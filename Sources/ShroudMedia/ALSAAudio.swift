import CALSA
import Foundation

/// The PCM format Shroud captures and plays: signed 16-bit little-endian at 48 kHz, mono or
/// stereo interleaved, in periods of 10–20 ms.
public struct AudioFormat: Equatable, Hashable, Sendable {
    public static let sampleRate = 48_000
    public static let channelCounts: ClosedRange<Int> = 1...2
    /// Period lengths accepted: 10 ms (lowest latency Opus handles well) to 20 ms (Opus's default
    /// frame); shorter periods wake the process too often, longer ones add latency.
    public static let periodMilliseconds: ClosedRange<Int> = 10...20
    /// The ALSA buffer holds this many periods: enough slack for a late wake-up without xrun.
    public static let periodsPerBuffer = 4

    public let channels: Int
    public let periodMilliseconds: Int

    public init(channels: Int = 1, periodMilliseconds: Int = 20) throws {
        guard Self.channelCounts.contains(channels) else {
            throw MediaError.device("\(channels) audio channels: only mono (1) or stereo (2)")
        }
        guard Self.periodMilliseconds.contains(periodMilliseconds) else {
            throw MediaError.device("audio period of \(periodMilliseconds) ms is outside \(Self.periodMilliseconds.lowerBound)–\(Self.periodMilliseconds.upperBound) ms")
        }
        self.channels = channels
        self.periodMilliseconds = periodMilliseconds
    }

    /// Frames (one sample per channel) in one period.
    public var framesPerPeriod: Int { Self.sampleRate * periodMilliseconds / 1000 }
}

/// Counters of an open capture or playback.
public struct AudioStats: Equatable, Sendable {
    /// Frames read or written.
    public var frames = 0
    /// Overruns (capture) or underruns (playback) recovered with `snd_pcm_recover`.
    public var xruns = 0
    /// Suspends recovered (the device was suspended and resumed or restarted).
    public var suspends = 0

    public init(frames: Int = 0, xruns: Int = 0, suspends: Int = 0) {
        self.frames = frames
        self.xruns = xruns
        self.suspends = suspends
    }
}

/// ALSA configuration text added on top of the system's configuration, for opening PCMs that are
/// not defined in `/etc/asound.conf` or `~/.asoundrc` (tests, or a `--alsa-config` file).
/// Owns an `snd_config_t` tree; deleted in `deinit`.
///
/// Example: `pcm.speech { type plug slave { pcm { type file file "/dev/null" infile "in.raw"
/// format "raw" slave.pcm null } format S16_LE rate 48000 channels 1 } }`.
public final class ALSAConfiguration {
    let handle: OpaquePointer

    /// Parses `text` (ALSA configuration syntax) over a copy of the system configuration, so it
    /// can refer to `null`, `pulse` and every other PCM the system defines.
    public init(text: String) throws {
        ALSA.silenceOnce()
        var global: OpaquePointer?
        var err = snd_config_update_ref(&global)
        guard err >= 0, let global else {
            throw MediaError.device("cannot load the ALSA configuration: \(ALSA.reason(err))")
        }
        var copy: OpaquePointer?
        err = snd_config_copy(&copy, global)
        snd_config_unref(global)
        guard err >= 0, let copy else {
            throw MediaError.device("cannot copy the ALSA configuration: \(ALSA.reason(err))")
        }
        var input: OpaquePointer?
        err = text.withCString { snd_input_buffer_open(&input, $0, strlen($0)) }
        guard err >= 0, let input else {
            snd_config_delete(copy)
            throw MediaError.device("cannot read ALSA configuration text: \(ALSA.reason(err))")
        }
        err = snd_config_load(copy, input)
        snd_input_close(input)
        guard err >= 0 else {
            snd_config_delete(copy)
            throw MediaError.device("invalid ALSA configuration: \(ALSA.reason(err))")
        }
        handle = copy
    }

    /// Reads the configuration text from a file.
    public convenience init(contentsOfFile path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MediaError.file("cannot read ALSA configuration file \(path)")
        }
        try self.init(text: String(decoding: data, as: UTF8.self))
    }

    deinit { snd_config_delete(handle) }
}

/// An ALSA PCM as the system (or an `ALSAConfiguration`) defines it.
public struct AudioDeviceInfo: Equatable, Sendable {
    public enum Directions: String, Sendable { case capture, playback, both }
    public var name: String
    /// ALSA's description, lines joined with " — ".
    public var description: String
    public var directions: Directions
}

enum ALSA {
    private static let silenced: Bool = {
        shroud_alsa_silence_errors()
        return true
    }()

    static func silenceOnce() { _ = silenced }

    static func reason(_ err: Int32) -> String {
        String(cString: snd_strerror(err))
    }

    /// The PCMs ALSA's configuration defines (`snd_device_name_hint`), as `aplay -L` shows them.
    static func pcmHints() -> [AudioDeviceInfo] {
        silenceOnce()
        var hints: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
        guard snd_device_name_hint(-1, "pcm", &hints) >= 0, let hints else { return [] }
        defer { snd_device_name_free_hint(hints) }
        func hint(_ entry: UnsafeMutableRawPointer, _ id: String) -> String? {
            guard let value = snd_device_name_get_hint(entry, id) else { return nil }
            defer { free(value) }
            return String(cString: value)
        }
        var devices: [AudioDeviceInfo] = []
        var index = 0
        while let entry = hints[index] {
            index += 1
            guard let name = hint(entry, "NAME") else { continue }
            let description = (hint(entry, "DESC") ?? "").split(separator: "\n").joined(separator: " — ")
            let directions: AudioDeviceInfo.Directions
            switch hint(entry, "IOID") {
            case "Input": directions = .capture
            case "Output": directions = .playback
            default: directions = .both
            }
            devices.append(AudioDeviceInfo(name: name, description: description, directions: directions))
        }
        return devices
    }
}

/// Lists the ALSA PCM devices (for `shroud devices`).
public func availableAudioDevices() -> [AudioDeviceInfo] { ALSA.pcmHints() }

/// One open ALSA PCM, configured for `AudioFormat`. Closed in `deinit`.
final class PCMDevice {
    enum Direction: String { case capture, playback }

    let name: String
    let direction: Direction
    let format: AudioFormat
    let handle: OpaquePointer
    /// Frames per period and per buffer that ALSA actually granted.
    let periodFrames: Int
    let bufferFrames: Int
    var stats = AudioStats()

    init(name: String, direction: Direction, format: AudioFormat, configuration: ALSAConfiguration?) throws {
        ALSA.silenceOnce()
        self.name = name
        self.direction = direction
        self.format = format
        let stream = direction == .capture ? SND_PCM_STREAM_CAPTURE : SND_PCM_STREAM_PLAYBACK
        var pcm: OpaquePointer?
        let err: Int32
        if let configuration {
            err = snd_pcm_open_lconf(&pcm, name, stream, 0, configuration.handle)
        } else {
            err = snd_pcm_open(&pcm, name, stream, 0)
        }
        guard err >= 0, let pcm else {
            if err == -ENOENT {
                throw MediaError.device("no such ALSA device '\(name)'")
            }
            throw MediaError.device("cannot open ALSA device '\(name)' for \(direction.rawValue): \(ALSA.reason(err))")
        }
        handle = pcm
        do {
            (periodFrames, bufferFrames) = try Self.configure(pcm, name: name, direction: direction, format: format)
        } catch {
            snd_pcm_close(pcm)
            throw error
        }
    }

    deinit {
        snd_pcm_close(handle)
    }

    /// Sets S16_LE / 48 kHz / channels / period and a buffer of `periodsPerBuffer` periods.
    private static func configure(_ pcm: OpaquePointer, name: String, direction: Direction,
                                  format: AudioFormat) throws -> (Int, Int) {
        func check(_ err: Int32, _ what: String) throws {
            guard err >= 0 else {
                throw MediaError.device("ALSA device '\(name)' \(what): \(ALSA.reason(err))")
            }
        }
        var hw: OpaquePointer?
        try check(snd_pcm_hw_params_malloc(&hw), "cannot allocate parameters")
        guard let hw else { throw MediaError.device("ALSA device '\(name)': no parameters") }
        defer { snd_pcm_hw_params_free(hw) }
        try check(snd_pcm_hw_params_any(pcm, hw), "has no configuration")
        try check(snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED), "cannot do interleaved access")
        try check(snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE), "does not support S16_LE")
        try check(snd_pcm_hw_params_set_channels(pcm, hw, UInt32(format.channels)), "does not support \(format.channels) channel(s)")
        try check(snd_pcm_hw_params_set_rate(pcm, hw, UInt32(AudioFormat.sampleRate), 0), "does not support \(AudioFormat.sampleRate) Hz")
        var period = snd_pcm_uframes_t(format.framesPerPeriod)
        var dir: Int32 = 0
        try check(snd_pcm_hw_params_set_period_size_near(pcm, hw, &period, &dir), "refuses a \(format.periodMilliseconds) ms period")
        var buffer = period * snd_pcm_uframes_t(AudioFormat.periodsPerBuffer)
        try check(snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &buffer), "refuses a \(AudioFormat.periodsPerBuffer)-period buffer")
        try check(snd_pcm_hw_params(pcm, hw), "refuses the parameters")

        var sw: OpaquePointer?
        try check(snd_pcm_sw_params_malloc(&sw), "cannot allocate software parameters")
        guard let sw else { throw MediaError.device("ALSA device '\(name)': no software parameters") }
        defer { snd_pcm_sw_params_free(sw) }
        try check(snd_pcm_sw_params_current(pcm, sw), "has no software parameters")
        try check(snd_pcm_sw_params_set_avail_min(pcm, sw, period), "refuses avail_min")
        // Playback starts once all but one period is queued, so the first periods do not underrun;
        // capture starts with the first read.
        let start = direction == .playback ? max(buffer - period, period) : 1
        try check(snd_pcm_sw_params_set_start_threshold(pcm, sw, start), "refuses the start threshold")
        try check(snd_pcm_sw_params(pcm, sw), "refuses the software parameters")
        return (Int(period), Int(buffer))
    }

    /// Recovers from an xrun or suspend (counted), or throws for any other error.
    private func recover(_ err: Int, _ what: String) throws {
        let code = Int32(err)
        if code == -EPIPE { stats.xruns += 1 }
        if code == -ESTRPIPE { stats.suspends += 1 }
        if code == -EINTR || code == -EAGAIN { return }
        guard code == -EPIPE || code == -ESTRPIPE, snd_pcm_recover(handle, code, 1) >= 0 else {
            throw MediaError.device("ALSA \(what) on '\(name)' failed: \(ALSA.reason(code))")
        }
    }

    /// Reads exactly `frames` frames (blocking), recovering from overruns. Asks ALSA for at most
    /// one period per call: the `file` plugin's `infile` is only copied correctly for reads up to
    /// the buffer size (larger ones came back as zeros), and a period is what a
    /// real device delivers per wake-up anyway.
    func read(into buffer: UnsafeMutablePointer<Int16>, frames: Int) throws {
        var done = 0
        while done < frames {
            let chunk = min(frames - done, periodFrames)
            let got = snd_pcm_readi(handle, buffer + done * format.channels, snd_pcm_uframes_t(chunk))
            if got < 0 {
                try recover(got, "capture")
                continue
            }
            done += got
            stats.frames += got
        }
    }

    /// Writes exactly `frames` frames (blocking), recovering from underruns.
    func write(from buffer: UnsafePointer<Int16>, frames: Int) throws {
        var done = 0
        while done < frames {
            let put = snd_pcm_writei(handle, buffer + done * format.channels, snd_pcm_uframes_t(frames - done))
            if put < 0 {
                try recover(put, "playback")
                continue
            }
            done += put
            stats.frames += put
        }
    }

    /// Plays what is queued to the end, then stops.
    func drain() throws {
        let state = snd_pcm_state(handle)
        if state == SND_PCM_STATE_PREPARED {
            // Fewer frames than the start threshold were written: start so that they play.
            _ = snd_pcm_start(handle)
        }
        let err = snd_pcm_drain(handle)
        if err < 0 && err != -EPIPE {
            throw MediaError.device("ALSA drain on '\(name)' failed: \(ALSA.reason(err))")
        }
    }
}

/// Blocking capture of interleaved S16LE frames from an ALSA device.
public final class AudioCapture {
    private let device: PCMDevice

    /// Opens `device` (an ALSA PCM name such as `default`, `plughw:0`, `pulse`) for capture.
    /// With `configuration`, the name is looked up there (over the system configuration).
    public init(device name: String, format: AudioFormat, configuration: ALSAConfiguration? = nil) throws {
        device = try PCMDevice(name: name, direction: .capture, format: format, configuration: configuration)
    }

    public var name: String { device.name }
    public var format: AudioFormat { device.format }
    public var stats: AudioStats { device.stats }
    /// The period ALSA granted, in frames (near `format.framesPerPeriod`).
    public var periodFrames: Int { device.periodFrames }

    /// Reads `frames` frames; returns `frames × channels` interleaved samples.
    public func read(frames: Int) throws -> [Int16] {
        guard frames >= 0 else { throw MediaError.device("cannot read \(frames) frames") }
        let count = frames * device.format.channels
        return try [Int16](unsafeUninitializedCapacity: count) { buffer, initialized in
            guard let base = buffer.baseAddress else { initialized = 0; return }
            try device.read(into: base, frames: frames)
            initialized = count
        }
    }

    /// Fills `samples` (a whole number of frames) without allocating.
    public func read(into samples: inout [Int16]) throws {
        let channels = device.format.channels
        guard samples.count % channels == 0 else {
            throw MediaError.device("\(samples.count) samples are not whole \(channels)-channel frames")
        }
        try samples.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            try device.read(into: base, frames: buffer.count / channels)
        }
    }
}

/// Blocking playback of interleaved S16LE frames to an ALSA device.
public final class AudioPlayback {
    private let device: PCMDevice

    /// Opens `device` for playback; see `AudioCapture.init`.
    public init(device name: String, format: AudioFormat, configuration: ALSAConfiguration? = nil) throws {
        device = try PCMDevice(name: name, direction: .playback, format: format, configuration: configuration)
    }

    public var name: String { device.name }
    public var format: AudioFormat { device.format }
    public var stats: AudioStats { device.stats }
    public var periodFrames: Int { device.periodFrames }

    /// Writes interleaved samples (a whole number of frames), blocking until ALSA took them all.
    public func write(_ samples: [Int16]) throws {
        let channels = device.format.channels
        guard samples.count % channels == 0 else {
            throw MediaError.device("\(samples.count) samples are not whole \(channels)-channel frames")
        }
        try samples.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            try device.write(from: base, frames: buffer.count / channels)
        }
    }

    /// Blocks until everything written has been played.
    public func drain() throws { try device.drain() }
}
