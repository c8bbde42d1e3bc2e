import ShroudTestSupport
import Foundation
import Testing
@testable import ShroudMedia

/// Splits PCM into whole frames (the last one padded with silence) and encodes each.
func encodeFrames(_ samples: [Int16], with encoder: OpusEncoder) throws -> [[UInt8]] {
    let frame = encoder.samplesPerFrame
    var padded = samples
    padded += [Int16](repeating: 0, count: (frame - samples.count % frame) % frame)
    return try stride(from: 0, to: padded.count, by: frame).map { try encoder.encode(Array(padded[$0 ..< $0 + frame])) }
}

@Suite("Opus")
struct OpusTests {
    /// Speech round trip at 32 kbit/s CBR, 20 ms. Quality figure: the maximum normalised
    /// cross-correlation between the input and the decoded output over lags up to 20 ms (the codec
    /// delay is the encoder lookahead, 6.5 ms). Opus at 32 kbit/s keeps the waveform of wideband
    /// speech closely (≈0.95 measured); 0.85 leaves room for libopus versions while still failing
    /// for anything broken (wrong channel layout, wrong sample rate, byte order: all near 0).
    @Test func speechRoundTripKeepsTheWaveform() throws {
        let speech = try Fixtures.speech()
        #expect(speech.sampleRate == 48_000 && speech.channels == 1)
        let encoder = try OpusEncoder(channels: 1, frameDuration: .ms20, bitrate: 32_000)
        let decoder = try OpusDecoder(channels: 1)
        let packets = try encodeFrames(speech.samples, with: encoder)
        var decoded: [Int16] = []
        for packet in packets { decoded += try decoder.decode(packet) }
        #expect(decoded.count == packets.count * 960)
        let correlation = AudioQuality.maxCorrelation(speech.samples, decoded, maxLag: 960)
        print("Opus 32 kbit/s speech: max correlation \(correlation.value) at lag \(correlation.lag)")
        #expect(correlation.value > 0.85, "correlation \(correlation.value)")
        // The best alignment sits at the codec delay (309 measured vs a 312-sample lookahead).
        #expect(abs(correlation.lag - encoder.lookahead) <= 8, "lag \(correlation.lag) vs lookahead \(encoder.lookahead)")
    }

    /// CBR is the default for voice: every packet has the same size, so sizes carry no information
    /// about speech and silence (32 kbit/s × 20 ms = 80 bytes).
    @Test func constantBitrateGivesEqualPacketSizes() throws {
        let speech = try Fixtures.speech()
        let encoder = try OpusEncoder(channels: 1, frameDuration: .ms20, bitrate: 32_000)
        let sizes = Set(try encodeFrames(speech.samples, with: encoder).map(\.count))
        #expect(sizes == [80])
        let variable = try OpusEncoder(channels: 1, bitrate: 32_000, constantBitrate: false)
        #expect(Set(try encodeFrames(speech.samples, with: variable).map(\.count)).count > 5)
    }

    @Test(arguments: OpusFrameDuration.allCases)
    func everyFrameDurationRoundTrips(duration: OpusFrameDuration) throws {
        let speech = try Fixtures.speech()
        for channels in 1 ... 2 {
            let encoder = try OpusEncoder(channels: channels, frameDuration: duration, bitrate: 48_000)
            let decoder = try OpusDecoder(channels: channels, frameDuration: duration)
            // Stereo input: the speech on the left, half its level on the right.
            let input = channels == 1 ? speech.samples : speech.samples.flatMap { [$0, $0 / 2] }
            var decoded: [Int16] = []
            for packet in try encodeFrames(input, with: encoder) {
                #expect(try OpusCodec.samplesPerChannel(inPacket: packet) == duration.samplesPerChannel)
                decoded += try decoder.decode(packet)
            }
            let left = stride(from: 0, to: decoded.count, by: channels).map { decoded[$0] }
            let correlation = AudioQuality.maxCorrelation(speech.samples, left, maxLag: 960)
            #expect(correlation.value > 0.85, "\(duration) \(channels) ch: \(correlation.value)")
        }
    }

    /// Frames in the middle of voiced speech, where loss is audible.
    static func lossPositions(_ samples: [Int16], frame: Int, count: Int) -> [Int] {
        let frames = samples.count / frame
        let loud = (2 ..< frames - 2).filter { AudioQuality.rms(samples[$0 * frame ..< ($0 + 1) * frame]) > 2_000 }
        return stride(from: 0, to: loud.count, by: max(1, loud.count / count)).prefix(count).map { loud[$0] }
    }

    /// Decodes the stream, replacing packet `lost` by concealment (`useFEC` false) or by the FEC
    /// copy in the next packet; returns the decoded frame at the lost position.
    static func repairedFrame(_ packets: [[UInt8]], lost: Int, useFEC: Bool) throws -> [Int16] {
        let decoder = try OpusDecoder(channels: 1)
        for i in 0 ..< lost { _ = try decoder.decode(packets[i]) }
        return useFEC ? try decoder.decodeFEC(nextPacket: packets[lost + 1]) : try decoder.decodeLost()
    }

    /// Concealment fills a lost frame with audio that is neither silent nor wild: its level stays
    /// within a factor of the original frame's.
    @Test func concealmentFillsALostFrame() throws {
        let speech = try Fixtures.speech()
        let encoder = try OpusEncoder(channels: 1, bitrate: 32_000)
        let packets = try encodeFrames(speech.samples, with: encoder)
        let delay = encoder.lookahead
        for lost in Self.lossPositions(speech.samples, frame: 960, count: 8) {
            let concealed = try Self.repairedFrame(packets, lost: lost, useFEC: false)
            #expect(concealed.count == 960)
            // Decoder output frame `lost` corresponds to input delayed by the lookahead.
            let start = lost * 960 - delay
            let original = speech.samples[start ..< start + 960]
            let ratio = AudioQuality.rms(concealed[...]) / AudioQuality.rms(original)
            #expect(ratio > 0.1 && ratio < 3, "frame \(lost): concealed/original level \(ratio)")
        }
    }

    /// FEC recovers lost frames closer to the original than concealment does: summed over lost
    /// frames in voiced speech, the error energy against the original is lower.
    @Test func forwardErrorCorrectionBeatsConcealment() throws {
        let speech = try Fixtures.speech()
        let encoder = try OpusEncoder(channels: 1, bitrate: 32_000, forwardErrorCorrection: true, expectedPacketLossPercent: 20)
        let packets = try encodeFrames(speech.samples, with: encoder)
        let delay = encoder.lookahead
        var fecError = 0.0, plcError = 0.0, energy = 0.0
        for lost in Self.lossPositions(speech.samples, frame: 960, count: 10) {
            let start = lost * 960 - delay
            let original = speech.samples[start ..< start + 960]
            let recovered = try Self.repairedFrame(packets, lost: lost, useFEC: true)
            let concealed = try Self.repairedFrame(packets, lost: lost, useFEC: false)
            #expect(recovered.count == 960)
            fecError += AudioQuality.errorEnergy(recovered[...], original)
            plcError += AudioQuality.errorEnergy(concealed[...], original)
            energy += AudioQuality.energy(original)
        }
        // As signal-to-error ratios in dB, for the message.
        let fecSNR = 10 * log10(energy / fecError), plcSNR = 10 * log10(energy / plcError)
        // Measured: FEC ≈ 4.9 dB, PLC ≈ 2.5 dB (FEC is a low-bitrate SILK copy, so it is far from
        // transparent, but clearly closer to what was said than an extrapolation).
        print("Opus lost frames: FEC \(fecSNR) dB, PLC \(plcSNR) dB signal-to-error")
        #expect(fecSNR > plcSNR + 1, "FEC \(fecSNR) dB vs PLC \(plcSNR) dB")
    }

    @Test func discontinuousTransmissionShrinksSilence() throws {
        let encoder = try OpusEncoder(channels: 1, bitrate: 32_000, constantBitrate: false, discontinuousTransmission: true)
        let silence = [Int16](repeating: 0, count: 960)
        let sizes = try (0 ..< 50).map { _ in try encoder.encode(silence).count }
        // After a few frames of silence DTX sends 1-byte packets ("nothing to play"), with a
        // comfort-noise update about every 400 ms.
        #expect(sizes.suffix(40).filter { $0 <= 2 }.count >= 35, "\(sizes)")
    }

    /// CBR packet size follows `setBitrate`: bitrate × 20 ms / 8 bytes.
    @Test func bitrateChangeBetweenFrames() throws {
        let speech = try Fixtures.speech()
        let encoder = try OpusEncoder(bitrate: 32_000)
        let frame = Array(speech.samples[48_000 ..< 48_960])
        #expect(try encoder.encode(frame).count == 80)
        try encoder.setBitrate(64_000)
        try encoder.setExpectedPacketLoss(percent: 30)
        #expect(try encoder.encode(frame).count == 160)
        #expect(encoder.bitrate == 64_000)
        #expect(throws: MediaError.self) { try encoder.setExpectedPacketLoss(percent: 101) }
    }

    @Test func bitrateLimits() throws {
        _ = try OpusEncoder(bitrate: OpusCodec.bitrateRange.lowerBound)
        _ = try OpusEncoder(bitrate: OpusCodec.bitrateRange.upperBound)
        #expect(throws: MediaError.self) { try OpusEncoder(bitrate: OpusCodec.bitrateRange.lowerBound - 1) }
        #expect(throws: MediaError.self) { try OpusEncoder(bitrate: OpusCodec.bitrateRange.upperBound + 1) }
        #expect(throws: MediaError.self) { try OpusEncoder(channels: 3) }
        #expect(throws: MediaError.self) { try OpusDecoder(channels: 0) }
        let encoder = try OpusEncoder()
        #expect(throws: MediaError.self) { try encoder.setBitrate(5_999) }
    }

    /// A packet may hold up to 120 ms (5760 samples): six 20 ms frames in a code-3 packet pass,
    /// seven are rejected from the table of contents alone.
    @Test func packetDurationLimit() throws {
        let toc: UInt8 = 31 << 3 | 3   // CELT fullband 20 ms, code 3 (frame count follows)
        #expect(try OpusCodec.samplesPerChannel(inPacket: [toc, 6]) == OpusCodec.maxSamplesPerChannelPerPacket)
        #expect(throws: MediaError.codec("malformed Opus packet: corrupted stream")) { try OpusCodec.samplesPerChannel(inPacket: [toc, 7]) }
    }

    @Test func wrongFrameSizeIsAnError() throws {
        let encoder = try OpusEncoder(channels: 2, frameDuration: .ms10)
        #expect(encoder.samplesPerFrame == 960)
        #expect(throws: MediaError.codec("Opus frame must be 960 samples (10 ms × 2 ch), got 959")) {
            try encoder.encode([Int16](repeating: 0, count: 959))
        }
    }

    /// Packets from the network: empty, over the size limit, or corrupt give an error, never a crash.
    @Test func badPacketsAreErrors() throws {
        let decoder = try OpusDecoder()
        #expect(throws: MediaError.self) { try decoder.decode([]) }
        let tooBig = [UInt8](repeating: 0, count: OpusCodec.maxPacketBytes + 1)
        #expect(throws: MediaError.codec("Opus packet of 4001 bytes is outside 1...4000")) { try decoder.decode(tooBig) }
        // At the limit the size is accepted; this content (a code-0 packet far over 1275 bytes)
        // is then rejected by libopus itself.
        let atLimit = [UInt8](repeating: 0, count: OpusCodec.maxPacketBytes)
        #expect(throws: MediaError.codec("opus_decode failed: corrupted stream")) { try decoder.decode(atLimit) }
        #expect(throws: MediaError.self) { try OpusCodec.samplesPerChannel(inPacket: [0x03]) }  // code 3 without count byte
    }
}
