import Foundation
import ShroudCrypto

/// Where a call's microphone audio comes from: 20 ms (960 samples) at a time.
public protocol VoiceSource: AnyObject {
    /// The next frame, or nil at the end (a file ran out).
    func nextFrame() throws -> [Int16]?
}

/// Where the mixed call audio goes: 20 ms at a time.
public protocol VoiceSink: AnyObject {
    func write(_ frame: [Int16]) throws
}

/// A WAV file as the microphone, cut into 20 ms frames (the last one padded with silence).
public final class WAVVoiceSource: VoiceSource {
    private let samples: [Int16]
    private var position = 0
    public init(path: String) throws {
        let wav = try WAVReader(path: path)
        guard wav.sampleRate == OpusCodec.sampleRate, wav.channels == 1 else {
            throw MediaError.codec("voice input must be 48 kHz mono WAV, not \(wav.sampleRate) Hz × \(wav.channels)")
        }
        samples = wav.samples
    }
    public func nextFrame() throws -> [Int16]? {
        guard position < samples.count else { return nil }
        let end = min(samples.count, position + VoiceSettings.frameSamples)
        var frame = Array(samples[position..<end])
        frame += [Int16](repeating: 0, count: VoiceSettings.frameSamples - frame.count)
        position = end
        return frame
    }
}

/// Collects the mixed audio in memory (the caller writes it out, e.g. as WAV).
public final class RecordingVoiceSink: VoiceSink, @unchecked Sendable {
    public private(set) var samples: [Int16] = []
    public init() {}
    public func write(_ frame: [Int16]) throws { samples += frame }
}

/// A call in real time: every 20 ms, one frame from the source is encoded, encrypted and sent, and
/// one mixed frame goes to the sink; datagrams from the relay go into the mixer as they arrive.
/// The mixer is shared by the receive thread and the pacing loop, so it sits behind a lock. Time
/// is the monotonic clock, measured from the call's start.
public final class VoiceCall: @unchecked Sendable {
    private let sender: VoiceSender?
    private let mixer: VoiceMixer
    private let lock = NSLock()
    private let send: @Sendable ([UInt8]) -> Void
    /// The origin of the mixer's clock (the call's creation).
    private let start = ContinuousClock.now
    private var firstTickInstant: ContinuousClock.Instant?
    private var sentFrames = 0

    /// `sender` is nil for a listen-only member; `send` carries datagrams (media and NACKs) to the relay.
    public init(sender: VoiceSender?, mixer: VoiceMixer, send: @escaping @Sendable ([UInt8]) -> Void) {
        self.sender = sender
        self.mixer = mixer
        self.send = send
    }

    private var now: Duration { ContinuousClock.now - start }

    /// One datagram from the relay (any thread).
    public func receive(_ datagram: [UInt8]) {
        lock.lock()
        let nacks = mixer.receive(datagram, now: now)
        lock.unlock()
        for nack in nacks { send(nack) }
    }

    public var statistics: VoiceMixer.Statistics {
        lock.lock(); defer { lock.unlock() }
        return mixer.statistics
    }

    /// When `run` played its first tick: tick k is due at this instant + k × 20 ms. Starting the
    /// ticks at `run` rather than at creation means time spent setting up (binding, joining) is
    /// not caught up with a burst of frames, which would start every listener's playout late.
    public var firstTick: ContinuousClock.Instant? {
        lock.lock(); defer { lock.unlock() }
        return firstTickInstant
    }

    public var framesSent: Int {
        lock.lock(); defer { lock.unlock() }
        return sentFrames
    }

    /// Runs for `duration` (or until the source ends, when `stopAtEndOfSource`), paced on the
    /// monotonic clock: tick k happens at `firstTick` + k × 20 ms, however late the previous one was.
    /// `onTick` is called after each tick (for live statistics).
    public func run(source: VoiceSource?, sink: VoiceSink?, duration: Duration, stopAtEndOfSource: Bool = false,
                    onTick: ((Int) -> Void)? = nil) throws {
        let ticks = Int(duration / VoiceSettings.frameDuration)
        var source = source
        let first = ContinuousClock.now
        lock.lock(); firstTickInstant = first; lock.unlock()
        for tick in 0..<ticks {
            let due = first + VoiceSettings.frameDuration * tick
            if due > ContinuousClock.now { Thread.sleep(forTimeInterval: Double((due - ContinuousClock.now) / .microseconds(1)) / 1e6) }
            if let current = source, let sender {
                if let frame = try current.nextFrame() {
                    let datagram = try sender.datagram(for: frame)
                    lock.lock(); sentFrames += 1; lock.unlock()
                    send(datagram)
                } else {
                    source = nil
                    if stopAtEndOfSource { break }
                }
            }
            lock.lock()
            let (pcm, nacks) = mixer.mix(now: now)
            lock.unlock()
            for nack in nacks { send(nack) }
            try sink?.write(pcm)
            onTick?(tick)
        }
    }
}

/// An ALSA capture device as the call's microphone: 48 kHz mono, 20 ms per read. The device's
/// own clock paces the reads; the call's clock only decides when to ask.
extension AudioCapture: VoiceSource {
    public func nextFrame() throws -> [Int16]? {
        guard format.channels == 1 else { throw MediaError.device("voice capture must be mono, '\(name)' has \(format.channels) channels") }
        return try read(frames: VoiceSettings.frameSamples)
    }
}

/// An ALSA playback device as the call's speaker (`write` plays 20 ms of mono).
extension AudioPlayback: VoiceSink {}

/// A WAV file recording the call (`--output FILE.wav`).
extension WAVWriter: VoiceSink {}
