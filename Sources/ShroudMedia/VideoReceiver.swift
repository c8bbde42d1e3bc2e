import ShroudWire

/// The watcher's side of a screen share before decryption and decoding (issue 6, item 3), sans-IO:
/// media packets in; decodable frames in decode order, NACKs, keyframe requests and receiver
/// reports out. Time is a `Duration` since any fixed origin.
///
/// Contract: `handle(_:now:)` for every media packet of the share; after each, and whenever `now`
/// reaches `nextDeadline`, drain `pollOutput(now:)` until it returns nil.
///
/// - **Streams.** The relay sends a viewer one layer, and switches it at a keyframe, so packets
///   come from one stream at a time. A keyframe packet of another stream starts it afresh
///   (sequence tracking, reassembly, decoding from that keyframe); other packets of another
///   stream are stale (`staleStream`) and dropped.
/// - **Decode order.** A VP8 inter frame needs the frame before it, so frames are delivered in
///   frame-number order from a keyframe on. A complete frame after a gap waits for the missing one;
///   a keyframe needs nothing before it and is delivered at once, dropping what it skips.
/// - **NACK.** A gap in sequence numbers marks the skipped ones missing (at most
///   `maxTrackedMissing`). A missing sequence is asked for after `reorderHoldoff`, again every
///   `nackRetryInterval`, at most `maxNackAttempts` times; all due ones go into one NACK per poll.
/// - **Giving up.** When the frame decoding waits for has been missing for `frameGiveUp` while a
///   later frame is complete, or a missing sequence has used up its NACKs, the receiver stops
///   decoding until a keyframe and asks for one (at most once per `keyframeRequestInterval`,
///   repeated at that interval while it waits).
/// - **Reports** every `reportInterval`: fraction lost since the last report = lost / (lost +
///   received) in 1/256, where a packet counts as lost once it has been missing for the reorder
///   hold-off (when it is first NACKed, or at once when it is beyond the tracking limit) — so a
///   reordered packet is not loss, and a packet repaired by a NACK still is, because the report
///   drives the sender's bitrate and the relay's layer choice, which must see the path, not the
///   repair; cumulative lost; highest sequence; RFC 3550 inter-arrival jitter on media time =
///   frame number × frame interval.
public struct VideoReceiver: Sendable {
    /// A packet is not asked for until it is this late (reordering on the path is usually less).
    public static let reorderHoldoff: Duration = .milliseconds(10)
    /// Between NACKs of one sequence: a loopback-to-continental round trip.
    public static let nackRetryInterval: Duration = .milliseconds(60)
    public static let maxNackAttempts = 3
    /// Missing sequence numbers tracked: one 1080p keyframe (255 fragments) and then some.
    public static let maxTrackedMissing = 512
    /// A frame missing this long with a later one complete is given up: beyond it, showing a
    /// picture late is worse than asking for a fresh keyframe.
    public static let frameGiveUp: Duration = .milliseconds(300)
    public static let keyframeRequestInterval: Duration = .milliseconds(500)
    public static let reportInterval: Duration = .milliseconds(500)
    /// Complete frames held while an earlier one is missing (half a second at 30 fps).
    public static let maxHeldFrames = 16

    public enum Output: Equatable, Sendable {
        /// The next frame to decrypt and decode.
        case frame(AssembledFrame)
        case nack(NackPacket)
        case keyframeRequest(KeyframeRequest)
        case report(ReceiverReport)
    }

    public struct Statistics: Equatable, Sendable {
        public var packets = 0
        public var duplicates = 0
        public var staleStream = 0
        public var inconsistent = 0
        public var framesDelivered = 0
        public var keyframesDelivered = 0
        /// Complete frames dropped because decoding could not reach them (waiting for a keyframe).
        public var framesSkipped = 0
        public var nacksSent = 0
        /// Packets that arrived after a NACK for them.
        public var recoveredByNack = 0
        public var keyframeRequests = 0
        public var streamChanges = 0
    }

    struct Missing {
        var since: Duration
        var attempts = 0
        var lastNack: Duration?
    }

    public let frameInterval: Duration
    public private(set) var statistics = Statistics()
    public private(set) var streamID: UInt32?
    public private(set) var layer: MediaLayer = 0

    private var assembler = FrameAssembler()
    private var highestSequence: UInt32 = 0
    private var started = false
    private var received = 0
    private var declaredLost = 0
    /// The frame number of a keyframe whose fragments are arriving, while decoding waits for it.
    private var keyframeInProgress: UInt32?
    private var missing: [UInt32: Missing] = [:]
    private var nextFrame: UInt32?
    private var waitingForKeyframe = true
    private var held: [UInt32: AssembledFrame] = [:]
    private var gapSince: Duration?
    private var lastKeyframeRequest: Duration?
    private var ready: [Output] = []
    // Reports.
    private var lastReport: Duration?
    private var lostAtLastReport = 0
    private var receivedAtLastReport = 0
    private var jitterSeconds = 0.0
    private var lastTransit: Double?

    public init(framesPerSecond: Int = 30) {
        frameInterval = .seconds(1) / max(1, framesPerSecond)
    }

    /// Frames decoding waits for a keyframe to resume.
    public var isWaitingForKeyframe: Bool { waitingForKeyframe }

    public mutating func handle(_ packet: MediaPacket, now: Duration) {
        statistics.packets += 1
        if packet.streamID != streamID {
            guard packet.isKeyframe else { statistics.staleStream += 1; return }
            startStream(packet, now: now)
        }
        track(packet.sequence, now: now)
        updateJitter(packet, now: now)
        switch assembler.insert(packet, now: now) {
        case .complete(let frame): complete(frame, now: now)
        case .pending:
            if packet.isKeyframe, waitingForKeyframe { keyframeInProgress = max(keyframeInProgress ?? 0, packet.frameNumber) }
        case .overLimit: break
        case .duplicate: statistics.duplicates += 1
        case .inconsistent: statistics.inconsistent += 1
        }
    }

    private mutating func startStream(_ packet: MediaPacket, now: Duration) {
        if streamID != nil { statistics.streamChanges += 1 }
        streamID = packet.streamID
        layer = packet.layer
        assembler = FrameAssembler()
        // The first sequence of this keyframe is known from the fragment index, so fragments
        // before this one that were lost are NACKed too.
        let first = packet.sequence >= UInt32(packet.fragmentIndex) ? packet.sequence - UInt32(packet.fragmentIndex) : 0
        highestSequence = first
        started = false
        received = 0
        declaredLost = 0
        missing.removeAll()
        for sequence in first ..< packet.sequence { missing[sequence] = Missing(since: now) }
        if packet.sequence > first { highestSequence = packet.sequence - 1; started = true }
        keyframeInProgress = nil
        held.removeAll()
        nextFrame = nil
        gapSince = nil
        waitingForKeyframe = true
        // This keyframe is the answer to the relay's request for us; ask ourselves only if it
        // does not complete within the interval.
        lastKeyframeRequest = now
        lostAtLastReport = 0
        receivedAtLastReport = 0
        lastTransit = nil
    }

    private mutating func track(_ sequence: UInt32, now: Duration) {
        if let entry = missing.removeValue(forKey: sequence) {
            // A packet repaired by a NACK was still lost on the path: the report drives the
            // sender's bitrate and the relay's layer choice, which must see the path, not the repair.
            if entry.attempts == 0 { received += 1 } else { statistics.recoveredByNack += 1 }
            return
        }
        if !started || sequence > highestSequence {
            if started {
                // The skipped sequence numbers are missing; beyond the tracking limit they are lost
                // at once (never a loop over an absurd gap from a hostile or broken sender).
                let gap = Int(sequence - highestSequence) - 1
                let tracked = min(gap, max(0, Self.maxTrackedMissing - missing.count))
                for offset in 0 ..< tracked { missing[highestSequence &+ 1 &+ UInt32(offset)] = Missing(since: now) }
                declaredLost += gap - tracked
            }
            started = true
            highestSequence = sequence
            received += 1
        }
        // Older than the highest and not missing: a duplicate (the assembler counts it).
    }

    private mutating func updateJitter(_ packet: MediaPacket, now: Duration) {
        guard packet.isFirstFragment else { return }
        let arrival = Double(now.components.seconds) + Double(now.components.attoseconds) * 1e-18
        let interval = Double(frameInterval.components.seconds) + Double(frameInterval.components.attoseconds) * 1e-18
        let transit = arrival - Double(packet.frameNumber) * interval
        if let last = lastTransit { jitterSeconds += (abs(transit - last) - jitterSeconds) / 16 }
        lastTransit = transit
    }

    private mutating func complete(_ frame: AssembledFrame, now: Duration) {
        if frame.isKeyframe, nextFrame.map({ frame.frameNumber >= $0 }) ?? true {
            // A keyframe needs nothing before it: what it skips will never be decodable.
            statistics.framesSkipped += held.keys.filter { $0 < frame.frameNumber }.count
            held = held.filter { $0.key > frame.frameNumber }
            waitingForKeyframe = false
            keyframeInProgress = nil
            deliver(frame)
            drainHeld(now: now)
            return
        }
        if waitingForKeyframe {
            // Frames after a keyframe that is still being repaired are kept for when it completes.
            if let key = keyframeInProgress, frame.frameNumber > key, held.count < Self.maxHeldFrames {
                held[frame.frameNumber] = frame
            } else {
                statistics.framesSkipped += 1
            }
            return
        }
        guard let expected = nextFrame, frame.frameNumber >= expected else {
            statistics.framesSkipped += 1
            return
        }
        if frame.frameNumber == expected {
            deliver(frame)
            drainHeld(now: now)
        } else if held.count < Self.maxHeldFrames {
            held[frame.frameNumber] = frame
            if gapSince == nil { gapSince = now }
        } else {
            giveUp(now: now)
        }
    }

    private mutating func deliver(_ frame: AssembledFrame) {
        ready.append(.frame(frame))
        statistics.framesDelivered += 1
        if frame.isKeyframe { statistics.keyframesDelivered += 1 }
        nextFrame = frame.frameNumber &+ 1
        gapSince = nil
    }

    private mutating func drainHeld(now: Duration) {
        while let expected = nextFrame, let frame = held.removeValue(forKey: expected) { deliver(frame) }
        // Later frames still held: the next gap starts now.
        if !held.isEmpty { gapSince = now }
    }

    /// Decoding cannot continue: drop what is held and wait for a keyframe.
    private mutating func giveUp(now: Duration) {
        statistics.framesSkipped += held.count
        held.removeAll()
        gapSince = nil
        waitingForKeyframe = true
        keyframeInProgress = nil
        // New information: ask at once (a give-up needs a decoded keyframe first, so this cannot
        // repeat faster than keyframes arrive).
        lastKeyframeRequest = nil
    }

    /// A delivered frame could not be used (its key is not known yet, it did not authenticate, or
    /// the decoder refused it): decoding stops until a keyframe, which is asked for at the next poll.
    public mutating func frameUnusable(now: Duration) {
        giveUp(now: now)
    }

    public mutating func pollOutput(now: Duration) -> Output? {
        if !ready.isEmpty { return ready.removeFirst() }
        // A gap that lasted too long, or a sequence whose NACKs are used up, ends decoding.
        if let since = gapSince, now - since >= Self.frameGiveUp { giveUp(now: now) }
        if let stream = streamID {
            if waitingForKeyframe, lastKeyframeRequest.map({ now - $0 >= Self.keyframeRequestInterval }) ?? true {
                lastKeyframeRequest = now
                statistics.keyframeRequests += 1
                if let request = try? KeyframeRequest(streamID: stream, layer: layer) { return .keyframeRequest(request) }
            }
            if let nack = dueNack(stream: stream, now: now) { return .nack(nack) }
            if lastReport.map({ now - $0 >= Self.reportInterval }) ?? true {
                lastReport = now
                return .report(report(stream: stream))
            }
        }
        return nil
    }

    private mutating func dueNack(stream: UInt32, now: Duration) -> NackPacket? {
        var due: [UInt32] = []
        var exhausted = false
        for (sequence, entry) in missing {
            if entry.attempts >= Self.maxNackAttempts {
                if let last = entry.lastNack, now - last >= Self.nackRetryInterval { exhausted = true }
                continue
            }
            guard now - entry.since >= Self.reorderHoldoff else { continue }
            if let last = entry.lastNack, now - last < Self.nackRetryInterval { continue }
            due.append(sequence)
        }
        if exhausted {
            // Asked for `maxNackAttempts` times and still missing: the relay's cache no longer has
            // it. Its frame will not complete; the give-up timer ends the wait for it.
            missing = missing.filter { $0.value.attempts < Self.maxNackAttempts || now - ($0.value.lastNack ?? now) < Self.nackRetryInterval }
        }
        due.sort()
        // One NACK carries at most `NackPacket.maxEntries` runs; the rest go in the next poll.
        while due.count > 1, (try? NackPacket(streamID: stream, missing: due)) == nil { due.removeLast(due.count / 2) }
        guard !due.isEmpty, let nack = try? NackPacket(streamID: stream, missing: due) else { return nil }
        for sequence in due {
            if missing[sequence]?.attempts == 0 { declaredLost += 1 }
            missing[sequence]?.attempts += 1
            missing[sequence]?.lastNack = now
        }
        statistics.nacksSent += 1
        return nack
    }

    private mutating func report(stream: UInt32) -> ReceiverReport {
        let lostInterval = declaredLost - lostAtLastReport
        let receivedInterval = received - receivedAtLastReport
        lostAtLastReport = declaredLost
        receivedAtLastReport = received
        let total = lostInterval + receivedInterval
        let fraction = total > 0 ? min(255, lostInterval * 256 / total) : 0
        return ReceiverReport(streamID: stream, fractionLost: UInt8(fraction), highestSequence: highestSequence,
                              cumulativeLost: UInt32(min(Int(UInt32.max), declaredLost)),
                              jitterMicroseconds: UInt32(min(Double(UInt32.max), jitterSeconds * 1e6)))
    }

    /// When to poll next: the earliest NACK, give-up, keyframe request or report time.
    public var nextDeadline: Duration? {
        guard streamID != nil else { return nil }
        var times: [Duration] = [lastReport.map { $0 + Self.reportInterval } ?? .zero]
        if let since = gapSince { times.append(since + Self.frameGiveUp) }
        if waitingForKeyframe { times.append(lastKeyframeRequest.map { $0 + Self.keyframeRequestInterval } ?? .zero) }
        for entry in missing.values {
            times.append(entry.lastNack.map { $0 + Self.nackRetryInterval } ?? entry.since + Self.reorderHoldoff)
        }
        return times.min()
    }
}
