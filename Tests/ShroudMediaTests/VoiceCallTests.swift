import Foundation
import ShroudCrypto
import ShroudRelayCore
import ShroudTestSupport
import ShroudWire
import Testing
@testable import ShroudMedia

/// A member's view of the channel's media keys, as the channel layer would keep it: its own
/// current send key and every key it was given. A member removed from the channel is simply
/// never given the keys made after its removal.
final class TestKeyRing: MediaKeyProvider {
    var send: (UInt64, SecureBytes)?
    var known: [UInt64: SecureBytes] = [:]
    func currentSendKey() -> (keyID: UInt64, baseKey: SecureBytes)? { send.map { ($0.0, $0.1) } }
    func receiveKey(id: UInt64) -> SecureBytes? { known[id] }
}

func mediaKey(_ byte: UInt8) -> SecureBytes { SecureBytes(copying: [UInt8](repeating: byte, count: 32)) }

/// Voice calls on virtual time through the real relay room core, with real Opus and SFrame.
@Suite struct VoiceCallTests {
    let channel = ChannelID(validated: [UInt8](repeating: 0xC3, count: 16))
    let start: UInt64 = 1_700_000_000_000

    /// One participant of the simulated call.
    final class Member {
        let address: MediaAddress
        let keys = TestKeyRing()
        var mixer: VoiceMixer!
        var downlink: LossyLink
        var uplink: LossyLink
        var output: [Int16] = []
        var stream: UInt32 = 0
        init(_ n: UInt8, impairment: LossyLink.Impairment, seed: UInt64) {
            address = .ipv4(127, 0, 0, n, port: 5000)
            downlink = LossyLink(impairment, seed: seed)
            uplink = LossyLink(impairment, seed: seed + 100)
        }
    }

    struct RelaySink: MediaSink {
        var current: [UInt8] = []
        var out: [(MediaAddress, [UInt8])] = []
        mutating func forwardReceived(to address: MediaAddress) { out.append((address, current)) }
        mutating func forwardReceived(toSession connection: ConnectionID) {}
        mutating func send(copying d: UnsafeRawBufferPointer, to address: MediaAddress) { out.append((address, Array(d))) }
        mutating func send(copying d: UnsafeRawBufferPointer, toSession connection: ConnectionID) {}
    }

    /// Alice speaks for `seconds`; Bob listens from the start, Carol joins at 3 s; Dave listens
    /// until he is removed at 5 s, when Alice rotates to a key Dave never gets; a hostile relay
    /// keeps sending Dave the packets anyway.
    @Test(arguments: [false, true]) func callWithRotationLateJoinerAndRemovedMember(lossy: Bool) throws {
        let seconds = 8
        var impairment = LossyLink.Impairment()
        if lossy { impairment = .init(loss: 0.10, delay: .milliseconds(20), jitter: .milliseconds(30), reorder: 0.05, duplicate: 0.02) }
        let speech = try Fixtures.speech().samples
        let spoken = Array((0..<(seconds * 48_000 / speech.count + 1)).flatMap { _ in speech }.prefix(seconds * 48_000))

        var relay = MediaRoomCore()
        let alice = Member(1, impairment: impairment, seed: 1), bob = Member(2, impairment: impairment, seed: 2)
        let carol = Member(3, impairment: impairment, seed: 3), dave = Member(4, impairment: impairment, seed: 4)
        // Key 1 (Alice's first key) goes to everyone; key 2 (after Dave's removal) not to Dave.
        alice.keys.send = (1, mediaKey(1))
        for m in [alice, bob, carol, dave] { m.keys.known[1] = mediaKey(1) }

        func join(_ m: Member, _ id: UInt64, at now: UInt64) throws {
            let grant = try relay.join(channel: channel, connection: ConnectionID(rawValue: id), transport: .datagram,
                                       token: MediaToken(validated: [UInt8](repeating: UInt8(id), count: 16)), now: now)
            m.stream = grant.streamID
            var sink = RelaySink()
            MediaBind(token: grant.token).serialized().withUnsafeBytes { relay.receive(datagram: $0, from: m.address, now: now, into: &sink) }
            m.mixer = VoiceMixer(keys: m.keys, ownStream: grant.streamID)
        }
        try join(alice, 1, at: start); try join(bob, 2, at: start); try join(dave, 4, at: start)
        let sender = try VoiceSender(streamID: alice.stream, keys: alice.keys)
        let members = [alice, bob, carol, dave]
        var daveRemoved = false
        var daveReceivedAtRotation = 0
        var hostileCopies = 0

        for ms in 0 ..< (seconds * 1000 + 500) {
            let now = Duration.milliseconds(ms), wall = start + UInt64(ms)
            if ms == 3000 { try join(carol, 3, at: wall) }
            if ms == 5000 {
                relay.leave(connection: ConnectionID(rawValue: 4))
                daveRemoved = true
                alice.keys.send = (2, mediaKey(2))
                for m in [alice, bob, carol] { m.keys.known[2] = mediaKey(2) }
            }
            // Frames sent under key 1 are still in flight for a moment after the rotation.
            if ms == 5300 { daveReceivedAtRotation = dave.mixer.statistics.received }
            if ms % 20 == 0, ms / 20 < seconds * 50 {
                let frame = Array(spoken[(ms / 20) * 960 ..< (ms / 20 + 1) * 960])
                let datagram = try sender.datagram(for: frame)
                alice.uplink.send(datagram, now: now)
                if daveRemoved { dave.downlink.send(datagram, now: now); hostileCopies += 1 }
            }
            // Uplinks into the relay; its answers onto the downlinks.
            for m in members {
                for datagram in m.uplink.receive(now: now) {
                    var sink = RelaySink(current: datagram)
                    datagram.withUnsafeBytes { relay.receive(datagram: $0, from: m.address, now: wall, into: &sink) }
                    for (address, bytes) in sink.out {
                        members.first { $0.address == address }?.downlink.send(bytes, now: now)
                    }
                }
            }
            for m in members.dropFirst() where m.mixer != nil {
                for datagram in m.downlink.receive(now: now) {
                    guard !MediaBind.isBind(firstByte: datagram[0]) else { continue }
                    for nack in m.mixer.receive(datagram, now: now) { m.uplink.send(nack, now: now) }
                }
                if ms % 20 == 0 {
                    let (pcm, nacks) = m.mixer.mix(now: now)
                    m.output += pcm
                    for nack in nacks { m.uplink.send(nack, now: now) }
                }
            }
        }

        // Bob heard the whole call, across the rotation, without a single undecryptable frame.
        // Thresholds (median over one-second pieces of the best aligned waveform correlation):
        // the codec alone scores 0.92 on this speech (VoiceNetworkTests), so a clean call must
        // stay near it (0.88). The lossy call loses 10 % on each hop (19 % end to end, of which
        // only the downlink half can be NACKed), so concealed stretches and 20 ms buffer steps
        // inside a piece lower its score: 0.6; the control below (the same speech one second
        // off) shows what wrong audio scores.
        let bobStats = bob.mixer.statistics
        #expect(bobStats.undecryptable == 0, "\(bobStats)")
        #expect(sender.rotations == 1)
        let bobScore = AudioQuality.piecewiseCorrelation(spoken[...], bob.output)
        #expect(bobScore > (lossy ? 0.6 : 0.88), "Bob: \(bobScore), \(bobStats)")
        let afterRotation = AudioQuality.piecewiseCorrelation(spoken[5 * 48_000 ..< 8 * 48_000], Array(bob.output.dropFirst(5 * 48_000)))
        #expect(afterRotation > (lossy ? 0.6 : 0.88), "after the rotation: \(afterRotation)")
        let control = AudioQuality.piecewiseCorrelation(spoken[2 * 48_000 ..< 5 * 48_000], Array(bob.output.dropFirst(3 * 48_000 + 24_000)))
        #expect(control < 0.4, "control: \(control)")
        if lossy {
            #expect(bobStats.recoveredByNACK > 0, "\(bobStats)")
            #expect(bobStats.recoveredByFEC > 0, "\(bobStats)")
        } else {
            #expect(bobStats.lost == 0 && bobStats.concealed == 0)
        }

        // Carol, who joined at 3 s, hears the speech from then on (her output starts at her join).
        #expect(carol.output.count == bob.output.count - 150 * 960)
        let carolScore = AudioQuality.piecewiseCorrelation(spoken[3 * 48_000 ..< seconds * 48_000], carol.output)
        #expect(carolScore > (lossy ? 0.6 : 0.88), "Carol: \(carolScore) \(carol.mixer.statistics)")

        // Dave cannot open a single frame sent after the rotation; his output falls silent.
        let daveStats = dave.mixer.statistics
        #expect(daveStats.received == daveReceivedAtRotation, "\(daveStats)")
        #expect(daveStats.undecryptable > hostileCopies / 2, "\(daveStats), \(hostileCopies) sent")
        #expect(AudioQuality.energy(dave.output.suffix(2 * 48_000)) == 0, "Dave hears nothing after the rotation")
    }

    @Test func theMixIsTheSumOfTheSpeakers() throws {
        let keys = TestKeyRing()
        keys.known[1] = mediaKey(1); keys.known[2] = mediaKey(2)
        let ringA = TestKeyRing(), ringB = TestKeyRing()
        ringA.send = (1, mediaKey(1)); ringB.send = (2, mediaKey(2))
        let speech = try Fixtures.speech().samples
        let a = try VoiceSender(streamID: 10, keys: ringA), b = try VoiceSender(streamID: 20, keys: ringB)
        let both = VoiceMixer(keys: keys), onlyA = VoiceMixer(keys: keys), onlyB = VoiceMixer(keys: keys)
        var mixed: [Int16] = [], sum: [Int32] = []
        for frame in 0..<100 {
            let now = Duration.milliseconds(frame * 20)
            let pa = try a.datagram(for: Array(speech[frame * 960 ..< frame * 960 + 960]))
            // Speaker B: the speech 2 s later, at half level.
            let pb = try b.datagram(for: speech[96_000 + frame * 960 ..< 96_000 + frame * 960 + 960].map { $0 / 2 })
            _ = both.receive(pa, now: now); _ = both.receive(pb, now: now)
            _ = onlyA.receive(pa, now: now); _ = onlyB.receive(pb, now: now)
            mixed += both.mix(now: now).pcm
            let x = onlyA.mix(now: now).pcm, y = onlyB.mix(now: now).pcm
            sum += zip(x, y).map { Int32($0) + Int32($1) }
        }
        #expect(mixed == sum.map { Int16(clamping: $0) })
        #expect(AudioQuality.energy(mixed[...]) > 0)
        #expect(both.statistics.streams == 2)
    }

    @Test func framesUnderUnknownOrForgedKeysAreCountedNotPlayed() throws {
        let sending = TestKeyRing(), listening = TestKeyRing()
        sending.send = (7, mediaKey(7))
        let sender = try VoiceSender(streamID: 5, keys: sending)
        let mixer = VoiceMixer(keys: listening)
        let frame = [Int16](repeating: 1000, count: 960)
        _ = mixer.receive(try sender.datagram(for: frame), now: .zero)
        #expect(mixer.statistics.undecryptable == 1)
        listening.known[7] = mediaKey(7)
        var forged = try sender.datagram(for: frame)
        forged[forged.count - 1] ^= 1
        _ = mixer.receive(forged, now: .milliseconds(20))
        #expect(mixer.statistics.undecryptable == 2)
        _ = mixer.receive(try sender.datagram(for: frame), now: .milliseconds(40))
        #expect(mixer.statistics.received == 1)
        _ = mixer.receive([0x40, 1, 2], now: .milliseconds(40))
        #expect(mixer.statistics.malformed == 1)
        let line = mixer.statistics.jsonLine(roundTrip: .milliseconds(12))
        #expect(line.hasPrefix("{\"speakers\":1,\"received\":1,\"lost\":0,\"loss_percent\":0.0,"))
        #expect(line.contains("\"undecryptable\":2") && line.hasSuffix("\"rtt_ms\":12.0}"))
        #expect(mixer.statistics.summary().hasPrefix("speakers 1  loss 0.0%"))
        #expect(throws: VoiceEngineError.wrongFrameSize(959)) { try sender.datagram(for: Array(frame.prefix(959))) }
        #expect(throws: VoiceEngineError.noSendKey) { try VoiceSender(streamID: 1, keys: listening).datagram(for: frame) }
    }
}

/// The real-time call loop with ALSA devices (the `file` plugin: exact input, recorded output):
/// a member who hears itself plays back what it captured.
@Suite struct VoiceCallDeviceTests {
    final class Loop: @unchecked Sendable { var call: VoiceCall? }

    @Test(.timeLimit(.minutes(1))) func captureEncryptSendReceiveMixAndPlay() throws {
        let temp = try TemporaryDirectory()
        let speech = Array(try Fixtures.speech().samples.prefix(48_000))
        try littleEndianBytes(speech).write(to: URL(fileURLWithPath: temp.path("in.raw")))
        let configuration = try ALSAConfiguration(text:
            filePCMConfiguration(name: "voice_in", infile: temp.path("in.raw"), outfile: "/dev/null", channels: 1) + "\n" +
            filePCMConfiguration(name: "voice_out", outfile: temp.path("out.raw"), channels: 1))
        let keys = TestKeyRing()
        keys.send = (3, mediaKey(3)); keys.known[3] = mediaKey(3)
        let loop = Loop()
        let call = VoiceCall(sender: try VoiceSender(streamID: 9, keys: keys), mixer: VoiceMixer(keys: keys),
                             send: { datagram in loop.call?.receive(datagram) })
        loop.call = call
        do {
            let capture = try AudioCapture(device: "voice_in", format: try AudioFormat(channels: 1), configuration: configuration)
            let playback = try AudioPlayback(device: "voice_out", format: try AudioFormat(channels: 1), configuration: configuration)
            try call.run(source: capture, sink: playback, duration: .milliseconds(1_300))
            try playback.drain()
        }
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: temp.path("out.raw"))))
        var played: [Int16] = []
        for index in stride(from: 0, to: bytes.count - 1, by: 2) {
            let low = UInt16(bytes[index]), high = UInt16(bytes[index + 1])
            played.append(Int16(bitPattern: low | high << 8))
        }
        #expect(played.count == 65 * 960)
        #expect(call.framesSent == 65)
        let match = AudioQuality.alignedCorrelation(speech[..<38_400], played)
        #expect(match.value > 0.85, "\(match) \(call.statistics)")
        #expect(call.statistics.undecryptable == 0 && call.statistics.lost == 0)
    }
}
