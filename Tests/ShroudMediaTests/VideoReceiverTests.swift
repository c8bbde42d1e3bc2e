import Testing
import ShroudRelayCore
import ShroudTestSupport
import ShroudWire
@testable import ShroudMedia

@Suite("Video receiver")
struct VideoReceiverTests {
    func drain(_ receiver: inout VideoReceiver, now: Duration) -> [VideoReceiver.Output] {
        var outputs: [VideoReceiver.Output] = []
        while let output = receiver.pollOutput(now: now) { outputs.append(output) }
        return outputs
    }

    func packets(stream: UInt32 = 9, frame: UInt32, firstSequence: UInt32, fragments: Int, keyframe: Bool = false, layer: MediaLayer = 2) throws -> [MediaPacket] {
        var packetizer = try MediaPacketizer(streamID: stream, firstSequence: firstSequence, maxPayloadBytes: 4)
        return try packetizer.packetize(frame: Array(repeating: UInt8(frame & 0xFF), count: fragments * 4), frameNumber: frame,
                                        isKeyframe: keyframe, layer: layer)
    }

    func nacks(_ outputs: [VideoReceiver.Output]) -> [[UInt32]] {
        outputs.compactMap { if case .nack(let nack) = $0 { nack.missing } else { nil } }
    }

    func frames(_ outputs: [VideoReceiver.Output]) -> [UInt32] {
        outputs.compactMap { if case .frame(let frame) = $0 { frame.frameNumber } else { nil } }
    }

    @Test func framesComeOutInOrderFromTheKeyframeAndNothingBeforeIt() throws {
        var receiver = VideoReceiver()
        // A delta frame of a stream never started: stale, dropped.
        receiver.handle(try packets(frame: 0, firstSequence: 0, fragments: 1)[0], now: .zero)
        #expect(receiver.statistics.staleStream == 1 && drain(&receiver, now: .zero).isEmpty)
        let key = try packets(frame: 1, firstSequence: 1, fragments: 3, keyframe: true)
        let two = try packets(frame: 2, firstSequence: 4, fragments: 2)
        let three = try packets(frame: 3, firstSequence: 6, fragments: 1)
        // Frame 3 complete before frame 2: held until 2 completes.
        for packet in key + three + [two[1]] { receiver.handle(packet, now: .milliseconds(1)) }
        #expect(frames(drain(&receiver, now: .milliseconds(1))) == [1])
        receiver.handle(two[0], now: .milliseconds(5))
        #expect(frames(drain(&receiver, now: .milliseconds(5))) == [2, 3])
        #expect(receiver.statistics.keyframesDelivered == 1 && receiver.statistics.framesDelivered == 3)
    }

    @Test func nackAfterTheHoldoffRetriedAndBounded() throws {
        var receiver = VideoReceiver()
        let key = try packets(frame: 0, firstSequence: 100, fragments: 2, keyframe: true)
        for packet in key { receiver.handle(packet, now: .zero) }
        _ = drain(&receiver, now: .zero)
        // Sequences 102 and 103 lost, 104 arrives.
        receiver.handle(try packets(frame: 1, firstSequence: 102, fragments: 3)[2], now: .milliseconds(20))
        #expect(nacks(drain(&receiver, now: .milliseconds(20) + VideoReceiver.reorderHoldoff - .nanoseconds(1))).isEmpty)
        let start = Duration.milliseconds(20) + VideoReceiver.reorderHoldoff
        #expect(nacks(drain(&receiver, now: start)) == [[102, 103]])
        #expect(nacks(drain(&receiver, now: start + VideoReceiver.nackRetryInterval - .nanoseconds(1))).isEmpty)
        #expect(nacks(drain(&receiver, now: start + VideoReceiver.nackRetryInterval)) == [[102, 103]])
        #expect(nacks(drain(&receiver, now: start + VideoReceiver.nackRetryInterval * 2)) == [[102, 103]])
        // Three attempts, then no more.
        #expect(nacks(drain(&receiver, now: start + VideoReceiver.nackRetryInterval * 3)).isEmpty)
        #expect(receiver.statistics.nacksSent == VideoReceiver.maxNackAttempts)
        // A reordered packet arriving within the hold-off is never asked for.
        receiver.handle(try packets(frame: 2, firstSequence: 106, fragments: 1)[0], now: .seconds(1))
        receiver.handle(try packets(frame: 2, firstSequence: 105, fragments: 1)[0], now: .seconds(1) + .milliseconds(3))
        #expect(nacks(drain(&receiver, now: .seconds(2))).isEmpty)
    }

    @Test func aLateJoinerNacksTheFragmentsBeforeItsFirstAndTrackingIsBounded() throws {
        var receiver = VideoReceiver()
        let key = try packets(frame: 5, firstSequence: 50, fragments: 6, keyframe: true)
        receiver.handle(key[3], now: .zero)
        #expect(nacks(drain(&receiver, now: VideoReceiver.reorderHoldoff)) == [[50, 51, 52]])
        // A gap wider than the tracking limit: only the limit is tracked.
        receiver.handle(try packets(frame: 9, firstSequence: 60 + UInt32(VideoReceiver.maxTrackedMissing) + 100, fragments: 1)[0], now: .seconds(1))
        let asked = nacks(drain(&receiver, now: .seconds(2))).flatMap { $0 }
        #expect(asked.count <= VideoReceiver.maxTrackedMissing)
    }

    @Test func trackingLimitAtTheLimitAndOnePast() throws {
        for gap in [VideoReceiver.maxTrackedMissing, VideoReceiver.maxTrackedMissing + 1] {
            var receiver = VideoReceiver()
            receiver.handle(try packets(frame: 0, firstSequence: 0, fragments: 1, keyframe: true)[0], now: .zero)
            receiver.handle(try packets(frame: 1, firstSequence: UInt32(gap) + 1, fragments: 1)[0], now: .milliseconds(1))
            let outputs = drain(&receiver, now: .seconds(1))
            // Every tracked sequence is asked for (in as many NACKs as the entry limit needs).
            #expect(nacks(outputs).flatMap { $0 }.count == VideoReceiver.maxTrackedMissing)
            let reports = outputs.compactMap { if case .report(let report) = $0 { report } else { nil } }
            // One past the limit: the untracked one counts as lost at once.
            #expect(reports.last?.cumulativeLost == UInt32(gap), "gap \(gap)")
        }
    }

    @Test func heldFramesAtTheLimitAndOnePast() throws {
        var receiver = VideoReceiver()
        receiver.handle(try packets(frame: 0, firstSequence: 0, fragments: 1, keyframe: true)[0], now: .zero)
        // Frame 1 missing; frames 2…17 complete: exactly the limit is held.
        for frame in UInt32(2) ... UInt32(1 + VideoReceiver.maxHeldFrames) {
            receiver.handle(try packets(frame: frame, firstSequence: frame, fragments: 1)[0], now: .milliseconds(Int(frame)))
        }
        #expect(frames(drain(&receiver, now: .milliseconds(20))) == [0])
        #expect(!receiver.isWaitingForKeyframe)
        // One more: decoding gives up and asks for a keyframe.
        let next = UInt32(2 + VideoReceiver.maxHeldFrames)
        receiver.handle(try packets(frame: next, firstSequence: next, fragments: 1)[0], now: .milliseconds(21))
        #expect(receiver.isWaitingForKeyframe)
        #expect(drain(&receiver, now: .milliseconds(21)).contains(.keyframeRequest(try KeyframeRequest(streamID: 9, layer: 2))))
    }

    @Test func aGapThatLastsGivesUpAndAsksForAKeyframe() throws {
        var receiver = VideoReceiver()
        for packet in try packets(frame: 0, firstSequence: 0, fragments: 1, keyframe: true) { receiver.handle(packet, now: .zero) }
        #expect(frames(drain(&receiver, now: .zero)) == [0])
        // Frame 1 never comes; frame 2 does.
        receiver.handle(try packets(frame: 2, firstSequence: 2, fragments: 1)[0], now: .milliseconds(66))
        let before = drain(&receiver, now: .milliseconds(66) + VideoReceiver.frameGiveUp - .nanoseconds(1))
        #expect(!before.contains { if case .keyframeRequest = $0 { true } else { false } })
        let after = drain(&receiver, now: .milliseconds(66) + VideoReceiver.frameGiveUp)
        #expect(after.contains(.keyframeRequest(try KeyframeRequest(streamID: 9, layer: 2))))
        #expect(receiver.isWaitingForKeyframe && receiver.statistics.framesSkipped == 1)
        // Delta frames are skipped until the keyframe; then decoding resumes.
        receiver.handle(try packets(frame: 3, firstSequence: 3, fragments: 1)[0], now: .milliseconds(400))
        receiver.handle(try packets(frame: 4, firstSequence: 4, fragments: 1, keyframe: true)[0], now: .milliseconds(430))
        receiver.handle(try packets(frame: 5, firstSequence: 5, fragments: 1)[0], now: .milliseconds(460))
        #expect(frames(drain(&receiver, now: .milliseconds(460))) == [4, 5])
        // The request is repeated while waiting, at most once per interval.
        var waiting = VideoReceiver()
        for packet in try packets(frame: 0, firstSequence: 0, fragments: 2, keyframe: true).dropLast() { waiting.handle(packet, now: .zero) }
        var requests: [Duration] = []
        for ms in stride(from: 0, through: 2_000, by: 10) {
            for output in drain(&waiting, now: .milliseconds(ms)) { if case .keyframeRequest = output { requests.append(.milliseconds(ms)) } }
        }
        // The incomplete keyframe counts as the first answer: requests at 500, 1000, 1500, 2000 ms.
        #expect(requests == [.milliseconds(500), .milliseconds(1000), .milliseconds(1500), .milliseconds(2000)])
    }

    @Test func aKeyframeOfAnotherStreamSwitchesAndTheOldStreamIsStale() throws {
        var receiver = VideoReceiver()
        for packet in try packets(stream: 1, frame: 0, firstSequence: 0, fragments: 1, keyframe: true, layer: 2) { receiver.handle(packet, now: .zero) }
        for packet in try packets(stream: 2, frame: 40, firstSequence: 900, fragments: 2, keyframe: true, layer: 0) { receiver.handle(packet, now: .milliseconds(30)) }
        receiver.handle(try packets(stream: 1, frame: 1, firstSequence: 1, fragments: 1)[0], now: .milliseconds(31))
        receiver.handle(try packets(stream: 2, frame: 41, firstSequence: 902, fragments: 1, layer: 0)[0], now: .milliseconds(33))
        #expect(frames(drain(&receiver, now: .milliseconds(33))) == [0, 40, 41])
        #expect(receiver.streamID == 2 && receiver.layer == 0)
        #expect(receiver.statistics.staleStream == 1 && receiver.statistics.streamChanges == 1)
    }

    @Test func reportsCountLossSinceTheLastReport() throws {
        var receiver = VideoReceiver()
        var sequence: UInt32 = 0
        var reports: [ReceiverReport] = []
        for frame in UInt32(0) ..< 60 {
            let now = Duration.milliseconds(Int(frame) * 33)
            for packet in try packets(frame: frame, firstSequence: sequence, fragments: 4, keyframe: frame == 0) {
                // Every 4th packet lost in the second second, none in the first.
                if frame >= 30, packet.sequence % 4 == 1 { continue }
                receiver.handle(packet, now: now)
            }
            sequence += 4
            for output in drain(&receiver, now: now) { if case .report(let report) = output { reports.append(report) } }
        }
        #expect(reports.count >= 3)
        #expect(reports.first?.fractionLost == 0)
        // 1 in 4 lost = 64/256, give or take a packet at the report boundaries.
        #expect(reports.last.map { (56 ... 72).contains($0.fractionLost) } == true, "\(reports)")
        #expect(reports.last.map { (15 ... 30).contains($0.cumulativeLost) } == true, "\(reports.map(\.cumulativeLost))")
        #expect(reports.allSatisfy { $0.streamID == 9 })
    }
}

/// The receiver on a virtual network with the real encoder and decoder: sender → relay (the
/// retransmission cache answers NACKs) → lossy downlink → receiver; NACKs and keyframe requests
/// go back over a lossy uplink.
@Suite("Video receiver on a lossy network")
struct VideoNetworkTests {
    struct Transit { var at: Duration; var bytes: [UInt8]; var toReceiver: Bool }

    /// Returns (frames delivered, frames decoded without error, last PSNR, receiver statistics, reports).
    func run(loss: Double, answerNacks: Bool, seed: UInt64) throws -> (delivered: Int, decodeErrors: Int, psnr: Double, stats: VideoReceiver.Statistics, reports: [ReceiverReport]) {
        var random = SplitMix64(seed: seed)
        let encoder = try VP8Encoder(width: 640, height: 360, bitrate: 500_000)
        let decoder = try VP8Decoder()
        var packetizer = try MediaPacketizer(streamID: 42)
        var cache = try RetransmissionCache()
        var receiver = VideoReceiver()
        var inFlight: [Transit] = []
        var keyframeWanted = false
        var delivered = 0, decodeErrors = 0
        var lastDecoded: I420Frame?
        var lastSource: [UInt32: I420Frame] = [:]
        var lastFrameNumber: UInt32 = 0
        var reports: [ReceiverReport] = []
        func send(_ bytes: [UInt8], toReceiver: Bool, now: Duration) {
            guard Double(random.next() % 10_000) / 10_000 >= loss else { return }
            inFlight.append(Transit(at: now + .milliseconds(15 + Int(random.next() % 10)), bytes: bytes, toReceiver: toReceiver))
        }
        for ms in 0 ..< 6_000 {
            let now = Duration.milliseconds(ms)
            if ms % 33 == 0 {
                let frameNumber = UInt32(ms / 33)
                let source = try textLikePicture(width: 640, height: 360, offset: ms / 33 * 2)
                lastSource[frameNumber] = source
                for encoded in try encoder.encode(source, forceKeyframe: keyframeWanted) {
                    for packet in try packetizer.packetize(frame: encoded.data, frameNumber: frameNumber, isKeyframe: encoded.isKeyframe, layer: 0) {
                        let bytes = packet.serialized()
                        try cache.store(sequence: packet.sequence, datagram: bytes)
                        send(bytes, toReceiver: true, now: now)
                    }
                }
                keyframeWanted = false
            }
            let due = inFlight.filter { $0.at <= now }
            inFlight.removeAll { $0.at <= now }
            for transit in due {
                if transit.toReceiver {
                    receiver.handle(try MediaPacket(parsing: transit.bytes), now: now)
                } else if let nack = try? NackPacket(parsing: transit.bytes) {
                    guard answerNacks else { continue }
                    for bytes in cache.answer(nack).resend { send(Array(bytes), toReceiver: true, now: now) }
                } else if (try? KeyframeRequest(parsing: transit.bytes)) != nil {
                    keyframeWanted = true
                }
            }
            while let output = receiver.pollOutput(now: now) {
                switch output {
                case .frame(let frame):
                    delivered += 1
                    do {
                        lastDecoded = try decoder.decode(frame.bytes).last
                        lastFrameNumber = frame.frameNumber
                    } catch { decodeErrors += 1 }
                case .nack(let nack): send(nack.serialized(), toReceiver: false, now: now)
                case .keyframeRequest(let request): send(request.serialized(), toReceiver: false, now: now)
                case .report(let report): reports.append(report)
                }
            }
        }
        let psnr = try lastDecoded.map { try PictureQuality(reference: lastSource[lastFrameNumber] ?? $0, reconstruction: $0).lumaPSNR } ?? 0
        return (delivered, decodeErrors, psnr, receiver.statistics, reports)
    }

    @Test func aCleanPathDeliversEveryFrame() throws {
        let result = try run(loss: 0, answerNacks: true, seed: 1)
        #expect(result.delivered == 182 || result.delivered == 181) // 6 s at 30 fps, less the last in flight
        #expect(result.decodeErrors == 0 && result.stats.nacksSent == 0 && result.stats.keyframeRequests == 0)
        #expect(result.reports.allSatisfy { $0.fractionLost == 0 })
        #expect(result.psnr > 30)
    }

    /// 10 % loss in both directions; the relay's cache answers NACKs: every frame arrives, in
    /// order, and decodes; the reports see the path's loss.
    @Test(arguments: [UInt64(1), 2])
    func nacksRepairTenPercentLoss(seed: UInt64) throws {
        let result = try run(loss: 0.10, answerNacks: true, seed: seed)
        print("10 % loss with NACK (seed \(seed)): delivered \(result.delivered), \(result.stats)")
        #expect(result.decodeErrors == 0)
        // Most frames; a loss whose three NACKs all fail (0.7 % of losses here) costs a give-up and a keyframe.
        #expect(result.delivered >= 150)
        #expect(result.stats.nacksSent > 0)
        let average = Double(result.reports.dropFirst().map { Int($0.fractionLost) }.reduce(0, +)) / Double(max(1, result.reports.count - 1))
        #expect(average > 10 && average < 45, "average fraction lost \(average)/256")
        #expect(result.psnr > 30)
    }

    /// Loss with NACKs unanswered (3 %: at 10 % a keyframe of a dozen packets rarely arrives whole
    /// without repair): the receiver gives up on broken frames, asks for keyframes, never hands the
    /// decoder a frame it cannot decode, and keeps showing pictures.
    @Test func withoutRetransmissionKeyframesKeepThePictureGoing() throws {
        let result = try run(loss: 0.03, answerNacks: false, seed: 3)
        print("10 % loss without NACK answers: delivered \(result.delivered), \(result.stats)")
        #expect(result.decodeErrors == 0)
        #expect(result.stats.keyframeRequests > 0 && result.stats.keyframesDelivered > 1)
        #expect(result.delivered > 20)
    }
}

@Suite("Video receiver fuzz")
struct VideoReceiverFuzzTests {
    /// Packets a broken or hostile sender could produce — any stream, sequence numbers near both
    /// ends of the range, huge gaps, inconsistent fragments — never trap, and what comes out still
    /// obeys the decode-order rule: after a stream starts, frames leave in increasing frame order,
    /// the first being a keyframe.
    @Test(arguments: [UInt64(11), 12, 13])
    func randomPacketsNeverTrapAndKeepDecodeOrder(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var receiver = VideoReceiver()
        var lastStream: UInt32?
        var lastNumber: UInt32 = 0
        var changesSeen = 0
        var delivered = 0
        for step in 0 ..< 20_000 {
            let now = Duration.microseconds(step * 500)
            let count = 1 + Int(random.next() % 4)
            let sequence: UInt32 = switch random.next() % 4 {
            case 0: UInt32.max - UInt32(random.next() % 600)
            case 1: UInt32(random.next() % 600)
            default: UInt32(truncatingIfNeeded: random.next())
            }
            let packet = try MediaPacket(streamID: UInt32(random.next() % 3), sequence: sequence,
                                         frameNumber: UInt32(random.next() % 50) + (random.next() % 8 == 0 ? UInt32.max - 60 : 0),
                                         fragmentIndex: Int(random.next() % UInt64(count)), fragmentCount: count,
                                         isKeyframe: random.next() % 5 == 0, layer: MediaLayer(random.next() % 8), payload: [1, 2, 3])
            receiver.handle(packet, now: now)
            while let output = receiver.pollOutput(now: now) {
                guard case .frame(let frame) = output else { continue }
                delivered += 1
                if frame.streamID != lastStream || receiver.statistics.streamChanges != changesSeen {
                    changesSeen = receiver.statistics.streamChanges
                    #expect(frame.isKeyframe, "stream \(frame.streamID) starts with a delta frame")
                    lastStream = frame.streamID
                } else if frame.isKeyframe {
                    #expect(frame.frameNumber > lastNumber)
                } else {
                    #expect(frame.frameNumber == lastNumber &+ 1, "frame \(frame.frameNumber) after \(lastNumber)")
                }
                lastNumber = frame.frameNumber
            }
            if let deadline = receiver.nextDeadline, deadline < now { _ = receiver.pollOutput(now: now) }
        }
        #expect(delivered > 0)
        #expect(receiver.statistics.packets == 20_000)
    }
}

@Suite("Watch statistics")
struct WatchStatisticsTests {
    @Test func fpsBitrateLayerLossAndDelay() {
        var stats = WatchStatistics(framesPerSecond: 30)
        #expect(stats.snapshot(now: .zero) == WatchStatistics.Snapshot(framesPerSecond: 0, bitsPerSecond: 0, layer: nil, width: 0,
                                                                      height: 0, lossPercent: 0, frameDelay: .zero))
        // 60 frames of 1,000 bytes at 30 fps, arriving 20 ms after their media time; frame 45 is 50 ms later.
        let interval = Duration.seconds(1) / 30
        for frame in 0 ..< 60 {
            let extra: Duration = frame == 59 ? .milliseconds(50) : .zero
            stats.frameShown(frameNumber: UInt32(frame), bytes: 1_000, layer: 2, width: 1920, height: 1080,
                             now: interval * frame + .milliseconds(20) + extra)
        }
        let now = interval * 59 + .milliseconds(70)
        let snapshot = stats.snapshot(now: now)
        // The window is the last second, (1036.7 ms, 2036.7 ms]: frames 31…59 arrived in it
        // (frame 30 at 1020 ms did not): 29 frames, 232 kbit/s.
        #expect(snapshot.framesPerSecond == 29 && snapshot.bitsPerSecond == 232_000)
        #expect(snapshot.layer == 2 && snapshot.width == 1920 && snapshot.height == 1080)
        #expect(snapshot.frameDelay == .milliseconds(50))
        stats.reportSent(fractionLost: 64)
        #expect(stats.snapshot(now: now).lossPercent == 25)
        // Nothing shown for a second: the rates fall to zero; a new stream restarts the delay floor.
        #expect(stats.snapshot(now: now + .seconds(1)).framesPerSecond == 0)
        stats.streamChanged()
        stats.frameShown(frameNumber: 1_000, bytes: 10, layer: 0, width: 640, height: 360, now: .seconds(50))
        #expect(stats.snapshot(now: .seconds(50)).frameDelay == .zero && stats.snapshot(now: .seconds(50)).layer == 0)
    }
}
