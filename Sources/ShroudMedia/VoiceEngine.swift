import ShroudCrypto
import ShroudWire

/// Where the voice engine gets its SFrame keys. The channel layer implements it: each member's
/// media key is distributed over the channel's encrypted session, with a new key id on every
/// membership change and old keys kept briefly for frames in flight (docs/PROTOCOL.md §4). The
/// engine only asks; it never creates or distributes keys.
public protocol MediaKeyProvider: AnyObject {
    /// The key this member encrypts its own frames with now. When the id changes, the next frame
    /// uses the new key.
    func currentSendKey() -> (keyID: UInt64, baseKey: SecureBytes)?
    /// Any member's key by id, or nil when it is unknown or was dropped after a rotation.
    func receiveKey(id: UInt64) -> SecureBytes?
}

/// Settings of a voice call (DESIGN.md: Opus 48 kHz mono, 20 ms, CBR 32 kbit/s, in-band FEC).
public struct VoiceSettings: Sendable, Hashable {
    public var bitrate = 32_000
    /// Loss the encoder's in-band FEC is tuned for.
    public var expectedLossPercent = 10
    public var receiver = VoiceReceiver.Configuration()
    public init() {}

    public static let frameSamples = OpusFrameDuration.ms20.samplesPerChannel
    public static let frameDuration = Duration.milliseconds(20)
}

public enum VoiceEngineError: Error, Equatable, CustomStringConvertible {
    case noSendKey
    case wrongFrameSize(Int)

    public var description: String {
        switch self {
        case .noSendKey: "no media key to send with yet"
        case let .wrongFrameSize(count): "a voice frame is \(VoiceSettings.frameSamples) samples, not \(count)"
        }
    }
}

/// The sending half: 20 ms of PCM → Opus → SFrame (with the provider's current key; a new key id
/// rotates the SFrame sender, restarting its counter) → one media datagram.
public final class VoiceSender {
    public let streamID: UInt32
    private let keys: MediaKeyProvider
    private let encoder: OpusEncoder
    private var sframe: SFrameSender?
    private var packetizer: MediaPacketizer
    private var frameNumber: UInt32 = 0
    public private(set) var framesSent = 0
    public private(set) var rotations = 0

    public init(streamID: UInt32, keys: MediaKeyProvider, settings: VoiceSettings = VoiceSettings()) throws {
        self.streamID = streamID
        self.keys = keys
        encoder = try OpusEncoder(channels: 1, frameDuration: .ms20, bitrate: settings.bitrate, constantBitrate: true,
                                  forwardErrorCorrection: true, expectedPacketLossPercent: settings.expectedLossPercent)
        packetizer = try MediaPacketizer(streamID: streamID)
    }

    /// Encodes and encrypts one frame; returns the datagram to send.
    public func datagram(for pcm: [Int16]) throws -> [UInt8] {
        guard pcm.count == VoiceSettings.frameSamples else { throw VoiceEngineError.wrongFrameSize(pcm.count) }
        guard let (keyID, baseKey) = keys.currentSendKey() else { throw VoiceEngineError.noSendKey }
        if let sframe {
            if sframe.keyID != keyID { try sframe.rotate(keyID: keyID, baseKey: baseKey); rotations += 1 }
        } else {
            sframe = try SFrameSender(keyID: keyID, baseKey: baseKey)
        }
        guard let sframe else { throw VoiceEngineError.noSendKey }
        let sealed = try sframe.seal(try encoder.encode(pcm))
        let packets = try packetizer.packetize(frame: sealed, frameNumber: frameNumber)
        frameNumber &+= 1
        framesSent += 1
        // Voice frames are far below one packet (≈ 80 + 26 bytes).
        return packets.first?.serialized() ?? []
    }
}

/// The receiving half: one `VoiceReceiver` (reorder, NACK, jitter buffer, FEC/PLC), SFrame
/// receiver and Opus decoder per speaker's stream; `mix` sums the speakers for each 20 ms tick.
/// Pure on an injected clock (`now` since any origin); feed it every datagram, call `mix` every
/// 20 ms, and send the NACK datagrams it returns.
public final class VoiceMixer {
    public struct Statistics: Sendable, Hashable {
        public var streams = 0
        public var received = 0
        public var lost = 0
        public var recoveredByNACK = 0
        public var recoveredByFEC = 0
        public var concealed = 0
        public var nacksSent = 0
        public var late = 0
        /// Frames that did not authenticate or whose key is unknown (e.g. after a rotation that
        /// excluded this member).
        public var undecryptable = 0
        /// Copies of frames already opened (network duplicates, retransmissions of frames that
        /// arrived after all): refused by the SFrame replay window, harmless.
        public var repeated = 0
        public var malformed = 0
        public var jitter: Duration = .zero
        public var nackRoundTrip: Duration = .zero
        public var playoutDelay: Duration = .zero
        public var bufferDepth = 0
        public var mixedFrames = 0

        /// Lost frames as a share of frames due (played or lost), 0…1.
        public var lossRatio: Double {
            let due = received + lost
            return due == 0 ? 0 : Double(lost) / Double(due)
        }

        private static func ms(_ d: Duration) -> Double { (d / .microseconds(1) / 1000 * 10).rounded() / 10 }

        /// One JSON object (a `--json` statistics line); `roundTrip` is the transport's, if known.
        public func jsonLine(roundTrip: Duration? = nil) -> String {
            let loss = (lossRatio * 10_000).rounded() / 100
            var fields = [
                "\"speakers\":\(streams)", "\"received\":\(received)", "\"lost\":\(lost)", "\"loss_percent\":\(loss)",
                "\"recovered_nack\":\(recoveredByNACK)", "\"recovered_fec\":\(recoveredByFEC)", "\"concealed\":\(concealed)",
                "\"nacks_sent\":\(nacksSent)", "\"undecryptable\":\(undecryptable)", "\"jitter_ms\":\(Self.ms(jitter))",
                "\"nack_rtt_ms\":\(Self.ms(nackRoundTrip))", "\"playout_delay_ms\":\(Self.ms(playoutDelay))",
                "\"buffer_frames\":\(bufferDepth)",
            ]
            if let roundTrip { fields.append("\"rtt_ms\":\(Self.ms(roundTrip))") }
            return "{" + fields.joined(separator: ",") + "}"
        }

        /// One short line for a terminal.
        public func summary(roundTrip: Duration? = nil) -> String {
            let rtt = roundTrip.map { String(format: " rtt %.0f ms", Self.ms($0)) } ?? ""
            return String(format: "speakers %d  loss %.1f%%  jitter %.1f ms  buffer %d  nack %d (recovered %d)  fec %d%@",
                          streams, lossRatio * 100, Self.ms(jitter), bufferDepth, nacksSent, recoveredByNACK, recoveredByFEC, rtt)
        }
    }

    private final class Speaker {
        var receiver: VoiceReceiver
        let sframe = SFrameReceiver()
        let decoder: OpusDecoder
        var pending: [Int16] = []
        var undecryptable = 0
        var repeated = 0
        var lastHeard: Duration
        init(configuration: VoiceReceiver.Configuration, now: Duration) throws {
            receiver = VoiceReceiver(configuration: configuration)
            decoder = try OpusDecoder(channels: 1, frameDuration: .ms20)
            lastHeard = now
        }
    }

    /// Speakers tracked at once; a stream past this is ignored until one goes quiet.
    public static let maximumSpeakers = 32
    /// A stream silent this long is forgotten (its decoder and buffer freed).
    public static let speakerTimeout = Duration.seconds(10)

    private let keys: MediaKeyProvider
    private let settings: VoiceSettings
    private let ownStream: UInt32?
    private var speakers: [UInt32: Speaker] = [:]
    private var malformed = 0
    private var mixed = 0

    public init(keys: MediaKeyProvider, settings: VoiceSettings = VoiceSettings(), ownStream: UInt32? = nil) {
        self.keys = keys
        self.settings = settings
        self.ownStream = ownStream
    }

    /// One datagram from the relay. Media is decrypted on arrival (so a duplicate or a FEC use
    /// never opens the same SFrame twice) and buffered; what does not parse or authenticate is
    /// counted and dropped. Returns NACK datagrams to send.
    public func receive(_ datagram: [UInt8], now: Duration) -> [[UInt8]] {
        guard let packet = try? MediaPacket(parsing: datagram) else { malformed += 1; return [] }
        guard packet.streamID != ownStream else { return [] }
        let speaker: Speaker
        if let known = speakers[packet.streamID] {
            speaker = known
        } else {
            guard speakers.count < Self.maximumSpeakers,
                  let fresh = try? Speaker(configuration: settings.receiver, now: now) else { return [] }
            speakers[packet.streamID] = fresh
            speaker = fresh
        }
        let plaintext: [UInt8]
        switch open(packet.payload, speaker) {
        case let .opened(bytes): plaintext = bytes
        case .repeated: speaker.repeated += 1; return []
        case .refused: speaker.undecryptable += 1; return []
        }
        speaker.lastHeard = now
        speaker.receiver.handle(sequence: packet.sequence, frameNumber: packet.frameNumber, payload: plaintext, now: now)
        return nacks(speaker.receiver.poll(now: now), stream: packet.streamID, speaker)
    }

    /// The next 20 ms of the call: every speaker's due playout decoded and summed (saturating).
    /// Also returns NACKs that came due.
    public func mix(now: Duration) -> (pcm: [Int16], nacks: [[UInt8]]) {
        var sum = [Int32](repeating: 0, count: VoiceSettings.frameSamples)
        var nackDatagrams: [[UInt8]] = []
        for (stream, speaker) in speakers.sorted(by: { $0.key < $1.key }) {
            if now - speaker.lastHeard > Self.speakerTimeout, speaker.receiver.nextDeadline == nil {
                speakers[stream] = nil
                continue
            }
            nackDatagrams += nacks(speaker.receiver.poll(now: now), stream: stream, speaker)
            let take = min(VoiceSettings.frameSamples, speaker.pending.count)
            for i in 0..<take { sum[i] += Int32(speaker.pending[i]) }
            speaker.pending.removeFirst(take)
            // More than two frames queued means this speaker's ticks run ahead of the mix: drop
            // the excess rather than let the delay grow.
            if speaker.pending.count > 2 * VoiceSettings.frameSamples {
                speaker.pending.removeFirst(speaker.pending.count - 2 * VoiceSettings.frameSamples)
            }
        }
        mixed += 1
        return (sum.map { Int16(clamping: $0) }, nackDatagrams)
    }

    public var statistics: Statistics {
        var s = Statistics()
        s.streams = speakers.count
        s.malformed = malformed
        s.mixedFrames = mixed
        for speaker in speakers.values {
            let r = speaker.receiver.statistics
            s.received += r.received
            s.lost += r.lost
            s.recoveredByNACK += r.recoveredByNACK
            s.recoveredByFEC += r.recoveredByFEC
            s.concealed += r.concealed
            s.nacksSent += r.nacksSent
            s.late += r.late
            s.undecryptable += speaker.undecryptable
            s.repeated += speaker.repeated
            s.jitter = max(s.jitter, r.jitter)
            s.nackRoundTrip = max(s.nackRoundTrip, r.nackRoundTrip)
            s.playoutDelay = max(s.playoutDelay, r.playoutDelay)
            s.bufferDepth = max(s.bufferDepth, r.bufferDepth)
        }
        return s
    }

    private enum Opening { case opened([UInt8]), repeated, refused }

    private func open(_ frame: [UInt8], _ speaker: Speaker) -> Opening {
        var reader = ByteReader(frame)
        guard let header = try? SFrameHeader(from: &reader) else { return .refused }
        if !speaker.sframe.keyIDs.contains(header.keyID) {
            guard let key = keys.receiveKey(id: header.keyID) else { return .refused }
            // Keys the provider has dropped go first, so the receiver never fills up.
            for old in speaker.sframe.keyIDs where keys.receiveKey(id: old) == nil { speaker.sframe.removeKey(keyID: old) }
            guard (try? speaker.sframe.addKey(keyID: header.keyID, baseKey: key)) != nil else { return .refused }
        } else if keys.receiveKey(id: header.keyID) == nil {
            // Dropped by the provider (rotated away): frames under it no longer open.
            speaker.sframe.removeKey(keyID: header.keyID)
            return .refused
        }
        do {
            return .opened(try speaker.sframe.open(frame).plaintext)
        } catch SFrameError.replayed, SFrameError.tooOld {
            return .repeated
        } catch {
            return .refused
        }
    }

    private func nacks(_ outputs: [VoiceReceiver.Output], stream: UInt32, _ speaker: Speaker) -> [[UInt8]] {
        var datagrams: [[UInt8]] = []
        for output in outputs {
            switch output {
            case let .play(playout):
                if let pcm = try? speaker.decoder.render(playout) { speaker.pending += pcm }
            case let .nack(sequences):
                // At most NackPacket.maxEntries entries; the receiver tracks far fewer.
                if let nack = try? NackPacket(streamID: stream, missing: sequences) { datagrams.append(nack.serialized()) }
            }
        }
        return datagrams
    }
}
