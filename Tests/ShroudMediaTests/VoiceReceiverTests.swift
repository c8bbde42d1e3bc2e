import ShroudTestSupport
import Testing
@testable import ShroudMedia

/// Unit behaviour of the voice receiver on hand-written arrival schedules (virtual time).
@Suite("Voice receiver")
struct VoiceReceiverTests {
    static let frame = Duration.milliseconds(20)

    /// Packets 0..<count sent every 20 ms from t = 0, arriving `transit` later unless dropped.
    static func schedule(_ count: Int, transit: Duration = .milliseconds(10), dropping: Set<UInt32> = []) -> [(Duration, UInt32)] {
        (0 ..< UInt32(count)).filter { !dropping.contains($0) }.map { (frame * Int($0) + transit, $0) }
    }

    /// Runs the receiver over `arrivals` (time, sequence = frame number) until `until`, polling
    /// every millisecond; returns every output.
    static func run(_ receiver: inout VoiceReceiver, _ arrivals: [(Duration, UInt32)], until: Duration) -> [VoiceReceiver.Output] {
        runFrom(&receiver, arrivals, from: .zero, until: until)
    }

    static func runFrom(_ receiver: inout VoiceReceiver, _ arrivals: [(Duration, UInt32)], from start: Duration, until: Duration) -> [VoiceReceiver.Output] {
        var outputs: [VoiceReceiver.Output] = []
        var pending = arrivals.sorted { $0.0 < $1.0 }[...]
        var now = start
        while now <= until {
            while let next = pending.first, next.0 <= now {
                receiver.handle(sequence: next.1, frameNumber: next.1, payload: [UInt8(truncatingIfNeeded: next.1)], now: now)
                pending.removeFirst()
            }
            outputs += receiver.poll(now: now)
            now += .milliseconds(1)
        }
        return outputs
    }

    static func plays(_ outputs: [VoiceReceiver.Output]) -> [VoiceReceiver.Playout] {
        outputs.compactMap { if case let .play(p) = $0 { return p } else { return nil } }
    }

    @Test func inOrderPacketsAreDecodedOnePerTick() {
        var receiver = VoiceReceiver()
        let outputs = Self.run(&receiver, Self.schedule(50), until: .seconds(2))
        let plays = Self.plays(outputs)
        let decoded = plays.compactMap { if case let .decode(frame, payload) = $0 { return (frame, payload) } else { return nil } }
        #expect(decoded.map(\.0) == Array(0 ..< 50))
        #expect(decoded.allSatisfy { $0.1 == [UInt8($0.0)] })
        #expect(receiver.statistics.lost == 0 && receiver.statistics.nacksSent == 0 && receiver.statistics.received == 50)
        #expect(receiver.statistics.jitter < .microseconds(1))
        #expect(receiver.statistics.targetDelay == VoiceReceiver.Configuration().minimumDelay)
    }

    @Test func singleLossUsesFECAndDoubleLossConceals() {
        var configuration = VoiceReceiver.Configuration()
        configuration.nackEnabled = false
        var receiver = VoiceReceiver(configuration: configuration)
        let plays = Self.plays(Self.run(&receiver, Self.schedule(30, dropping: [10, 20, 21]), until: .seconds(1)))
        #expect(plays.contains(.decodeFEC(frame: 10, nextPayload: [11])))
        #expect(plays.contains(.decodeFEC(frame: 21, nextPayload: [22])))
        #expect(plays.contains(.conceal(frame: 20)))
        #expect(plays.contains(.decode(frame: 11, payload: [11])))
        let s = receiver.statistics
        #expect(s.lost == 3 && s.recoveredByFEC == 2 && s.concealed == 1 && s.nacksSent == 0)
    }

    @Test func lossIsNACKedOnceAndRetransmissionIsCounted() {
        var receiver = VoiceReceiver()
        var arrivals = Self.schedule(30, dropping: [10])
        // The gap shows when 11 arrives at 230 ms; frame 10 plays at 250 ms (first arrival 10 ms +
        // 40 ms minimum delay + 10 frames). The NACK waits the 10 ms reorder holdoff (240 ms); the
        // retransmission comes back 8 ms later.
        arrivals.append((.milliseconds(248), 10))
        let outputs = Self.run(&receiver, arrivals, until: .seconds(1))
        let nacks = outputs.compactMap { if case let .nack(list) = $0 { return list } else { return nil } }
        #expect(nacks == [[10]])
        #expect(Self.plays(outputs).contains(.decode(frame: 10, payload: [10])))
        #expect(receiver.statistics.recoveredByNACK == 1 && receiver.statistics.lost == 0)
        let roundTrip = receiver.statistics.nackRoundTrip
        #expect(roundTrip > .microseconds(7_999) && roundTrip < .microseconds(8_001))
    }

    @Test func nackIsRetriedAtMostMaxAttemptsAndNeverAfterThePlayoutDeadline() {
        var configuration = VoiceReceiver.Configuration()
        configuration.minimumDelay = .milliseconds(300) // long deadline: room for every retry
        var receiver = VoiceReceiver(configuration: configuration)
        let outputs = Self.run(&receiver, Self.schedule(40, dropping: [5]), until: .seconds(2))
        let nackTimes = outputs.filter { if case .nack = $0 { return true } else { return false } }.count
        #expect(nackTimes == configuration.maxNackAttempts)
        #expect(receiver.statistics.lost == 1)

        // Short deadline: the gap is seen 20 ms before the frame plays; with a 40 ms round trip
        // measured, a NACK could not come back in time, so none is sent for the second loss.
        var short = VoiceReceiver()
        var arrivals = Self.schedule(60, dropping: [5, 40])
        arrivals.append((.milliseconds(150), 5)) // answer to the first NACK (sent at 140 ms): 10 ms round trip
        _ = Self.run(&short, arrivals, until: .seconds(2))
        #expect(short.statistics.recoveredByNACK == 1)
        #expect(short.statistics.nacksSent >= 1)
    }

    @Test func latePacketsAndDuplicatesAreCounted() {
        var configuration = VoiceReceiver.Configuration()
        configuration.nackEnabled = false
        var receiver = VoiceReceiver(configuration: configuration)
        var arrivals = Self.schedule(20, dropping: [5])
        arrivals.append((.milliseconds(500), 5)) // long after frame 5 was played
        arrivals.append((.milliseconds(200), 3)) // copy of a frame already played (at 110 ms): late
        arrivals.append((.milliseconds(131), 6)) // duplicate while still buffered
        _ = Self.run(&receiver, arrivals, until: .seconds(1))
        #expect(receiver.statistics.late == 2)
        #expect(receiver.statistics.duplicates == 1)
        #expect(receiver.statistics.received == 22)
    }

    /// Jitter alone (NACK off: with periodic reordering every late packet would be NACKed first,
    /// and arrivals after a NACK do not count for jitter).
    static var withoutNACK: VoiceReceiver.Configuration {
        var configuration = VoiceReceiver.Configuration()
        configuration.nackEnabled = false
        return configuration
    }

    @Test func jitterRaisesTheTargetDelayWithinBounds() {
        var receiver = VoiceReceiver(configuration: Self.withoutNACK)
        // Transit alternating 10 ms and 50 ms: |ΔD| = 40 ms, the estimator converges towards 40 ms.
        let arrivals = (0 ..< UInt32(200)).map { (Self.frame * Int($0) + .milliseconds($0 % 2 == 0 ? 10 : 50), $0) }
        _ = Self.run(&receiver, arrivals, until: .seconds(5))
        let s = receiver.statistics
        #expect(s.jitter > .milliseconds(35) && s.jitter <= .milliseconds(40))
        #expect(s.targetDelay > .milliseconds(150))
        #expect(s.lost == 0, "the buffer grew to absorb the jitter: \(s)")
        #expect(s.stretched > 0)

        var bounded = VoiceReceiver(configuration: Self.withoutNACK)
        let wild = (0 ..< UInt32(200)).map { (Self.frame * Int($0) + .milliseconds($0 % 2 == 0 ? 10 : 1_000), $0) }
        _ = Self.run(&bounded, wild, until: .seconds(6))
        #expect(bounded.statistics.targetDelay == VoiceReceiver.Configuration().maximumDelay)
    }

    @Test func bufferShrinksAfterJitterSubsides() {
        var receiver = VoiceReceiver(configuration: Self.withoutNACK)
        // 4 s of transit alternating 10 / 150 ms, then 10 s steady at 10 ms.
        var arrivals = (0 ..< UInt32(200)).map { (Self.frame * Int($0) + .milliseconds($0 % 2 == 0 ? 10 : 150), $0) }
        arrivals += (200 ..< UInt32(700)).map { (Self.frame * Int($0) + .milliseconds(10), $0) }
        _ = Self.run(&receiver, arrivals.filter { $0.0 <= .seconds(4) }, until: .seconds(4))
        let peak = receiver.statistics.playoutDelay
        var rest = receiver
        _ = Self.runFrom(&rest, arrivals.filter { $0.0 > .seconds(4) }, from: .seconds(4) + .milliseconds(1), until: .seconds(13))
        let s = rest.statistics
        #expect(peak > .milliseconds(120), "peak \(peak)")
        #expect(s.skipped > 0)
        #expect(s.playoutDelay < .milliseconds(100), "settled at \(s.playoutDelay)")
        #expect(s.targetDelay < .milliseconds(60))
        // Only while the buffer grew at the start did frames arrive too late.
        #expect(s.late == s.lost && s.lost < 10, "\(s)")
    }

    @Test func packetsTooFarAheadAreDropped() {
        var receiver = VoiceReceiver()
        let limit = UInt32(VoiceReceiver.Configuration().maxBufferedFrames)
        receiver.handle(sequence: 0, frameNumber: 0, payload: [0], now: .zero)
        receiver.handle(sequence: limit - 1, frameNumber: limit - 1, payload: [1], now: .zero) // at the limit
        receiver.handle(sequence: limit, frameNumber: limit, payload: [2], now: .zero) // one past
        #expect(receiver.statistics.tooEarly == 1)
        #expect(receiver.statistics.bufferDepth == 2)
    }

    @Test func opusDecoderRendersEveryDecision() throws {
        let encoder = try OpusEncoder()
        let decoder = try OpusDecoder()
        let packets = try (0 ..< 3).map { _ in try encoder.encode([Int16](repeating: 1000, count: 960)) }
        #expect(try decoder.render(.decode(frame: 0, payload: packets[0])).count == 960)
        #expect(try decoder.render(.decodeFEC(frame: 1, nextPayload: packets[2])).count == 960)
        #expect(try decoder.render(.conceal(frame: nil)).count == 960)
        #expect(throws: MediaError.self) { try decoder.render(.decode(frame: 3, payload: [])) }
    }

    @Test func stoppedStreamGoesIdleAndResumes() {
        var receiver = VoiceReceiver()
        let idleAfter = VoiceReceiver.Configuration().idleAfterUnderrunTicks
        var arrivals = Self.schedule(20)
        // The sender pauses 2 s, then continues from frame 120 (frames 20…119 never sent).
        arrivals += (120 ..< UInt32(140)).map { (Self.frame * Int($0) + .milliseconds(10), $0) }
        var outputs = Self.run(&receiver, arrivals.filter { $0.0 < .seconds(2) }, until: .milliseconds(1_500))
        #expect(receiver.nextDeadline == nil, "idle after the stream stopped")
        let stretches = Self.plays(outputs).filter { $0 == .conceal(frame: nil) }.count
        #expect(stretches == idleAfter)
        outputs = Self.runFrom(&receiver, arrivals.filter { $0.0 >= .seconds(2) } + [(.milliseconds(2_450), 5)],
                               from: .milliseconds(1_501), until: .seconds(4))
        let decoded = Self.plays(outputs).compactMap { if case let .decode(f, _) = $0 { return f } else { return nil } }
        #expect(decoded == Array(120 ..< 140))
        #expect(receiver.statistics.lost == 100) // frames 20…119, jumped over on resuming
        #expect(receiver.statistics.late == 1) // frame 5, long after
        #expect(receiver.statistics.concealed == 0)
    }

    @Test func trackedMissingLimit() {
        // Room ahead for the whole gap, so that only the missing-set limit applies.
        var configuration = VoiceReceiver.Configuration()
        configuration.maxBufferedFrames = 200
        configuration.minimumDelay = .seconds(1)
        var receiver = VoiceReceiver(configuration: configuration)
        let limit = UInt32(configuration.maxTrackedMissing)
        // A gap of exactly the limit: every missing packet is NACKed (once the reorder holdoff,
        // here the jitter the jump itself caused, has passed).
        receiver.handle(sequence: 0, frameNumber: 0, payload: [0], now: .zero)
        receiver.handle(sequence: limit + 1, frameNumber: 0 + limit + 1, payload: [1], now: .milliseconds(1))
        var nacked = receiver.poll(now: .milliseconds(200)).flatMap { if case let .nack(list) = $0 { return list } else { return [] } }
        #expect(nacked == Array(1 ... limit))
        // One more than the limit: the oldest is given up.
        var wider = VoiceReceiver(configuration: configuration)
        wider.handle(sequence: 0, frameNumber: 0, payload: [0], now: .zero)
        wider.handle(sequence: limit + 2, frameNumber: limit + 2, payload: [1], now: .milliseconds(1))
        nacked = wider.poll(now: .milliseconds(200)).flatMap { if case let .nack(list) = $0 { return list } else { return [] } }
        #expect(nacked == Array(2 ... limit + 1))
    }

    /// Seeded fuzz: arbitrary sequence and frame numbers, times and polls never trap, and memory
    /// stays within the configured bounds.
    @Test func arbitraryInputNeverTraps() {
        var random = SplitMix64(seed: 99)
        let configuration = VoiceReceiver.Configuration()
        for _ in 0 ..< 50 {
            var receiver = VoiceReceiver()
            var now = Duration.zero
            var base = UInt32.random(in: 0 ... UInt32.max, using: &random)
            for _ in 0 ..< 400 {
                now += .milliseconds(Int.random(in: 0 ... 40, using: &random))
                switch Int.random(in: 0 ..< 10, using: &random) {
                case 0: base = UInt32.random(in: 0 ... UInt32.max, using: &random)
                case 1 ... 7:
                    let offset = UInt32.random(in: 0 ... 200, using: &random)
                    let (sequence, _) = base.addingReportingOverflow(offset)
                    let frame = Bool.random(using: &random) ? sequence : UInt32.random(in: 0 ... UInt32.max, using: &random)
                    receiver.handle(sequence: sequence, frameNumber: frame, payload: [1], now: now)
                default: break
                }
                _ = receiver.poll(now: now)
                #expect(receiver.statistics.bufferDepth <= configuration.maxBufferedFrames)
                #expect(receiver.statistics.targetDelay <= configuration.maximumDelay)
            }
        }
    }
}

