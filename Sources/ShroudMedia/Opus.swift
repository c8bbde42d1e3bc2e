import COpus

/// Opus frame lengths Shroud sends. 20 ms is the voice default (the usual trade between latency
/// and per-packet overhead); 10 ms lowers latency, 40/60 ms lower packet rate on poor links.
public enum OpusFrameDuration: Int, Sendable, CaseIterable {
    case ms10 = 10, ms20 = 20, ms40 = 40, ms60 = 60

    /// Samples per channel in one frame at 48 kHz.
    public var samplesPerChannel: Int { rawValue * OpusCodec.sampleRate / 1000 }
}

/// Constants shared by the Opus encoder, decoder and the Ogg Opus files.
public enum OpusCodec {
    /// Shroud always runs Opus at 48 kHz, its native rate (RFC 7845 granule positions count 48 kHz
    /// samples whatever the input rate).
    public static let sampleRate = 48_000
    /// Mono and stereo (channel mapping family 0).
    public static let channelRange = 1 ... 2
    /// libopus accepts 6 kbit/s to 510 kbit/s.
    public static let bitrateRange = 6_000 ... 510_000
    /// Largest packet accepted or produced: the size libopus recommends for an output buffer, far
    /// above the 1275 bytes one 20 ms frame can take.
    public static let maxPacketBytes = 4_000
    /// Longest audio one Opus packet can hold (120 ms), which bounds every decode buffer.
    public static let maxSamplesPerChannelPerPacket = 5_760

    static func describe(_ code: Int32) -> String {
        guard let text = opus_strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }

    /// Samples per channel in a packet, read from its table-of-contents byte (no decoding).
    public static func samplesPerChannel(inPacket packet: [UInt8]) throws -> Int {
        guard !packet.isEmpty, packet.count <= maxPacketBytes else {
            throw MediaError.codec("Opus packet of \(packet.count) bytes is outside 1...\(maxPacketBytes)")
        }
        let n = packet.withUnsafeBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return OPUS_BAD_ARG }
            return opus_packet_get_nb_samples(base, Int32(buffer.count), Int32(sampleRate))
        }
        guard n > 0, Int(n) <= maxSamplesPerChannelPerPacket else {
            throw MediaError.codec("malformed Opus packet: \(describe(n))")
        }
        return Int(n)
    }
}

/// An Opus encoder for 48 kHz 16-bit PCM (one libopus encoder, freed in deinit).
///
/// Defaults are chosen for private voice calls: constant bitrate so that packet sizes do not
/// follow the speech (variable-bitrate packet lengths are known to leak words and phrases),
/// in-band forward error correction tuned for 10 % loss, and no discontinuous transmission (which
/// would reveal silences by stopping packets).
public final class OpusEncoder {
    public let channels: Int
    public let frameDuration: OpusFrameDuration
    public private(set) var bitrate: Int
    public let constantBitrate: Bool
    private let handle: OpaquePointer
    private var packet = [UInt8](repeating: 0, count: OpusCodec.maxPacketBytes)

    /// What the audio is, so libopus picks its modes accordingly.
    public enum Application: Sendable {
        /// Speech: favours intelligibility, enables the SILK-based modes that carry FEC.
        case voice
        /// Music or mixed content.
        case audio
    }

    public init(channels: Int = 1,
                frameDuration: OpusFrameDuration = .ms20,
                bitrate: Int = 32_000,
                application: Application = .voice,
                constantBitrate: Bool = true,
                forwardErrorCorrection: Bool = true,
                expectedPacketLossPercent: Int = 10,
                discontinuousTransmission: Bool = false,
                complexity: Int = 10) throws {
        guard OpusCodec.channelRange.contains(channels) else {
            throw MediaError.codec("Opus channels must be 1 or 2, got \(channels)")
        }
        guard OpusCodec.bitrateRange.contains(bitrate) else {
            throw MediaError.codec("Opus bitrate \(bitrate) is outside \(OpusCodec.bitrateRange)")
        }
        guard (0 ... 100).contains(expectedPacketLossPercent) else {
            throw MediaError.codec("expected packet loss \(expectedPacketLossPercent) % is outside 0...100")
        }
        guard (0 ... 10).contains(complexity) else {
            throw MediaError.codec("Opus complexity \(complexity) is outside 0...10")
        }
        var error: Int32 = 0
        let app = application == .voice ? OPUS_APPLICATION_VOIP : OPUS_APPLICATION_AUDIO
        guard let handle = opus_encoder_create(Int32(OpusCodec.sampleRate), Int32(channels), app, &error), error == OPUS_OK else {
            throw MediaError.codec("opus_encoder_create failed: \(OpusCodec.describe(error))")
        }
        self.handle = handle
        self.channels = channels
        self.frameDuration = frameDuration
        self.bitrate = bitrate
        self.constantBitrate = constantBitrate
        try check(shroud_opus_set_bitrate(handle, Int32(bitrate)), "set bitrate")
        try check(shroud_opus_set_vbr(handle, constantBitrate ? 0 : 1), "set VBR")
        try check(shroud_opus_set_inband_fec(handle, forwardErrorCorrection ? 1 : 0), "set FEC")
        try check(shroud_opus_set_packet_loss_perc(handle, Int32(expectedPacketLossPercent)), "set packet loss")
        try check(shroud_opus_set_dtx(handle, discontinuousTransmission ? 1 : 0), "set DTX")
        try check(shroud_opus_set_complexity(handle, Int32(complexity)), "set complexity")
        if application == .voice { try check(shroud_opus_set_signal(handle, OPUS_SIGNAL_VOICE), "set signal") }
    }

    deinit { opus_encoder_destroy(handle) }

    private func check(_ code: Int32, _ what: String) throws {
        guard code == OPUS_OK else { throw MediaError.codec("Opus \(what) failed: \(OpusCodec.describe(code))") }
    }

    /// Interleaved samples one `encode` call takes (samples per channel × channels).
    public var samplesPerFrame: Int { frameDuration.samplesPerChannel * channels }

    /// Samples per channel the encoder delays its output by; a decoder drops this many at the start
    /// (the Ogg Opus "pre-skip").
    public var lookahead: Int {
        var value: Int32 = 0
        _ = shroud_opus_get_lookahead(handle, &value)
        return Int(value)
    }

    /// Changes the target bitrate between frames (for congestion control).
    public func setBitrate(_ bitrate: Int) throws {
        guard OpusCodec.bitrateRange.contains(bitrate) else {
            throw MediaError.codec("Opus bitrate \(bitrate) is outside \(OpusCodec.bitrateRange)")
        }
        try check(shroud_opus_set_bitrate(handle, Int32(bitrate)), "set bitrate")
        self.bitrate = bitrate
    }

    /// Tells the encoder how much loss to protect against with FEC (from receiver reports).
    public func setExpectedPacketLoss(percent: Int) throws {
        guard (0 ... 100).contains(percent) else {
            throw MediaError.codec("expected packet loss \(percent) % is outside 0...100")
        }
        try check(shroud_opus_set_packet_loss_perc(handle, Int32(percent)), "set packet loss")
    }

    /// Encodes exactly one frame of interleaved PCM into one packet. With DTX enabled, a packet of
    /// one or two bytes means "silence, nothing to send".
    public func encode(_ pcm: [Int16]) throws -> [UInt8] {
        guard pcm.count == samplesPerFrame else {
            throw MediaError.codec("Opus frame must be \(samplesPerFrame) samples (\(frameDuration.rawValue) ms × \(channels) ch), got \(pcm.count)")
        }
        let samples = Int32(frameDuration.samplesPerChannel)
        let count = pcm.withUnsafeBufferPointer { input in
            packet.withUnsafeMutableBufferPointer { out -> Int32 in
                guard let source = input.baseAddress, let target = out.baseAddress else { return OPUS_BAD_ARG }
                return opus_encode(handle, source, samples, target, Int32(out.count))
            }
        }
        guard count > 0 else { throw MediaError.codec("opus_encode failed: \(OpusCodec.describe(count))") }
        return Array(packet[0 ..< Int(count)])
    }
}

/// An Opus decoder to 48 kHz 16-bit PCM (one libopus decoder, freed in deinit), with the two
/// repairs a receiver needs: concealment of a missing packet, and recovery of a missing packet
/// from the forward-error-correction copy carried in the packet after it.
public final class OpusDecoder {
    public let channels: Int
    /// Length assumed for a lost packet when nothing has been decoded yet.
    public let frameDuration: OpusFrameDuration
    private let handle: OpaquePointer
    private var pcm: [Int16]

    public init(channels: Int = 1, frameDuration: OpusFrameDuration = .ms20) throws {
        guard OpusCodec.channelRange.contains(channels) else {
            throw MediaError.codec("Opus channels must be 1 or 2, got \(channels)")
        }
        var error: Int32 = 0
        guard let handle = opus_decoder_create(Int32(OpusCodec.sampleRate), Int32(channels), &error), error == OPUS_OK else {
            throw MediaError.codec("opus_decoder_create failed: \(OpusCodec.describe(error))")
        }
        self.handle = handle
        self.channels = channels
        self.frameDuration = frameDuration
        pcm = [Int16](repeating: 0, count: OpusCodec.maxSamplesPerChannelPerPacket * channels)
    }

    deinit { opus_decoder_destroy(handle) }

    /// Samples per channel of the lost packet: the length of the last packet decoded (senders keep
    /// one frame size), or the configured frame duration before the first packet.
    private var lostSamplesPerChannel: Int {
        var last: Int32 = 0
        if shroud_opus_get_last_packet_duration(handle, &last) == OPUS_OK, last > 0 { return Int(last) }
        return frameDuration.samplesPerChannel
    }

    private func run(_ packet: [UInt8]?, samplesPerChannel: Int, fec: Bool) throws -> [Int16] {
        if let packet {
            guard !packet.isEmpty, packet.count <= OpusCodec.maxPacketBytes else {
                throw MediaError.codec("Opus packet of \(packet.count) bytes is outside 1...\(OpusCodec.maxPacketBytes)")
            }
        }
        let decoded: Int32 = pcm.withUnsafeMutableBufferPointer { buffer in
            guard let out = buffer.baseAddress else { return OPUS_BAD_ARG }
            if let packet {
                return packet.withUnsafeBufferPointer { input in
                    opus_decode(handle, input.baseAddress, Int32(input.count), out, Int32(samplesPerChannel), fec ? 1 : 0)
                }
            }
            return opus_decode(handle, nil, 0, out, Int32(samplesPerChannel), 0)
        }
        guard decoded >= 0 else { throw MediaError.codec("opus_decode failed: \(OpusCodec.describe(decoded))") }
        return Array(pcm[0 ..< Int(decoded) * channels])
    }

    /// Decodes one packet to interleaved PCM.
    public func decode(_ packet: [UInt8]) throws -> [Int16] {
        try run(packet, samplesPerChannel: OpusCodec.maxSamplesPerChannelPerPacket, fec: false)
    }

    /// Packet-loss concealment: synthesises audio for one missing packet from what came before
    /// (an extrapolation of the last pitch and spectrum that fades out over repeated losses).
    public func decodeLost() throws -> [Int16] {
        try run(nil, samplesPerChannel: lostSamplesPerChannel, fec: false)
    }

    /// Forward-error-correction recovery: when packet N is lost and packet N+1 has arrived, decodes
    /// the low-bitrate copy of frame N that packet N+1 carries. Call it before `decode(nextPacket)`.
    /// If the packet carries no FEC data libopus falls back to concealment.
    public func decodeFEC(nextPacket: [UInt8]) throws -> [Int16] {
        try run(nextPacket, samplesPerChannel: lostSamplesPerChannel, fec: true)
    }

    /// Forgets the decoder history (after a stream restart).
    public func reset() { _ = shroud_opus_decoder_reset(handle) }
}
