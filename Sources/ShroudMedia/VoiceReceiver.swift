/// The receive side of one voice stream as a pure state machine (no sockets, no clock, no codec):
/// it reorders packets, detects losses and schedules NACKs, runs an adaptive jitter buffer and
/// decides, every 20 ms, what the decoder plays. docs/PROTOCOL.md §4 describes the algorithm.
///
/// Contract (sans-IO): call `handle(sequence:frameNumber:payload:now:)` for every media packet
/// that arrives (payloads are opaque: SFrame ciphertext or Opus bytes), and `poll(now:)` whenever
/// the time reaches `nextDeadline`; carry out the outputs in order. Time is a `Duration` since any
/// fixed origin (a monotonic clock in the client, a virtual clock in tests).
///
/// Voice sends one packet per frame, so a missing sequence number is a missing frame; the frame
/// number of a lost packet is estimated from the offset between frame and sequence numbers of the
/// latest packet.
public struct VoiceReceiver: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Length of one frame and of one playout step.
        public var frameDuration: Duration = .milliseconds(20)
        /// Bounds of the jitter-buffer target delay (above the fastest recent transit).
        public var minimumDelay: Duration = .milliseconds(40)
        public var maximumDelay: Duration = .milliseconds(400)
        /// Target = frame + jitterMultiplier × jitter (+ round trip when NACK is on), clamped.
        public var jitterMultiplier: Double = 4
        /// With NACK on, the target also covers this many measured round trips, so that a
        /// retransmission can arrive before its frame plays.
        public var roundTripMultiplier: Double = 1.5
        /// Ask for missing packets at all.
        public var nackEnabled = true
        /// At most this many NACKs for one sequence number.
        public var maxNackAttempts = 3
        /// Minimum time between two NACKs for the same packet, before a round trip is measured.
        public var nackRetryInterval: Duration = .milliseconds(60)
        /// A gap is NACKed only after max(reorderHoldoff, jitter), so that a packet merely
        /// reordered is not asked for again.
        public var reorderHoldoff: Duration = .milliseconds(10)
        /// Packets tracked as missing at once; an older gap beyond this is given up (concealed).
        public var maxTrackedMissing = 64
        /// Frames held ahead of the playout point; a packet further ahead is dropped as too early.
        public var maxBufferedFrames = 50
        /// A frame is skipped only when the delay exceeds floor + target by this many frames, and
        /// at most once per `minimumTicksBetweenSkips` ticks (50 = one per second).
        public var skipExcessFrames = 3
        public var minimumTicksBetweenSkips = 50
        /// Consecutive underrun ticks (nothing at or after the next frame has arrived) after which
        /// the stream counts as stopped and playout goes idle until the next packet: 10 = 200 ms.
        public var idleAfterUnderrunTicks = 10
        /// Arrivals over which the fastest transit (the delay floor) is taken.
        public var transitWindow = 100

        public init() {}
    }

    /// What the decoder does for one 20 ms tick.
    public enum Playout: Hashable, Sendable {
        /// The frame arrived: decode it.
        case decode(frame: UInt32, payload: [UInt8])
        /// The frame is missing but the next one is here: decode the FEC copy the next one carries.
        case decodeFEC(frame: UInt32, nextPayload: [UInt8])
        /// Nothing to decode from: packet-loss concealment. `frame` is nil when the tick was
        /// inserted to grow the buffer rather than to stand in for a frame.
        case conceal(frame: UInt32?)
    }

    public enum Output: Hashable, Sendable {
        case play(Playout)
        /// Ask the relay (its retransmission cache) for these sequence numbers.
        case nack([UInt32])
    }

    public struct Statistics: Sendable, Hashable {
        public var received = 0
        public var duplicates = 0
        /// Arrived after their frame was played (or given up).
        public var late = 0
        /// Dropped because they were too far ahead of playout.
        public var tooEarly = 0
        /// Frames that were not there at their playout time (FEC or concealment stood in).
        public var lost = 0
        /// Packets that arrived after a NACK for them and were played (a reordered original that
        /// comes after its NACK counts too: the receiver cannot tell them apart).
        public var recoveredByNACK = 0
        public var recoveredByFEC = 0
        /// Frames played by concealment (loss, not buffer growth).
        public var concealed = 0
        /// Concealment ticks inserted to grow the buffer or bridge an underrun, and frames skipped
        /// to shrink it.
        public var stretched = 0
        public var skipped = 0
        public var nacksSent = 0
        public var played = 0
        /// Smoothed inter-arrival jitter (RFC 3550 §6.4.1 estimator).
        public var jitter: Duration = .zero
        public var targetDelay: Duration = .zero
        /// Measured NACK round trip (NACK sent → retransmission arrived), smoothed.
        public var nackRoundTrip: Duration = .zero
        /// How long after the fastest recent transit the next frame plays: the delay the buffer
        /// adds (mouth-to-ear = this + the fastest transit + codec delay).
        public var playoutDelay: Duration = .zero
        /// Frames held in the buffer now.
        public var bufferDepth = 0
    }

    private struct Missing: Sendable {
        var detected: Duration
        var firstSent: Duration?
        var lastSent: Duration?
        var attempts = 0
    }

    public let configuration: Configuration
    public private(set) var statistics = Statistics()

    private var buffer: [UInt32: [UInt8]] = [:]
    /// The next frame to play and when; nil until the first packet.
    private var nextFrame: UInt32?
    private var nextTick: Duration = .zero
    /// While idle (stream stopped), the frame playout would have resumed at.
    private var resumeFrame: UInt32?
    private var highestFrame: UInt32?
    private var underrunTicks = 0
    private var ticksSinceSkip = 0
    /// Sequence numbers received recently, to tell first copies from repeats.
    private var seen: Set<UInt32> = []
    private var highestSequence: UInt32?
    private var frameMinusSequence: Int64 = 0
    private var missing: [UInt32: Missing] = [:]
    /// Sequence numbers that were NACKed and then arrived: counted as recovered once played.
    private var nackedArrivals: Set<UInt32> = []
    private var frameSequence: [UInt32: UInt32] = [:]
    private var lastTransit: Double?
    private var jitterSeconds = 0.0
    private var roundTripSeconds = 0.0
    private var transits: [Double] = []
    private var transitCursor = 0

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        statistics.targetDelay = configuration.minimumDelay
    }

    private var frameSeconds: Double { configuration.frameDuration.asSeconds }

    /// When `poll` next has something to do (the next playout tick), or nil before any packet.
    public var nextDeadline: Duration? { nextFrame == nil ? nil : nextTick }

    /// A media packet arrived at `now`.
    public mutating func handle(sequence: UInt32, frameNumber: UInt32, payload: [UInt8], now: Duration) {
        statistics.received += 1
        let wasMissing = missing.removeValue(forKey: sequence)
        if let first = wasMissing?.firstSent {
            let sample = (now - first).asSeconds
            roundTripSeconds = roundTripSeconds == 0 ? sample : roundTripSeconds + (sample - roundTripSeconds) / 8
            statistics.nackRoundTrip = .seconds(roundTripSeconds)
        }
        // Every first arrival counts for jitter, late ones included (they are the reason to grow).
        // Packets that arrive after a NACK for them do not: their transit includes a round trip,
        // which the target covers separately. (A reordered original that comes after its NACK is
        // excluded too; the reorder holdoff keeps that rare.)
        // A second copy (duplicate, or a retransmission after the original came) is not counted.
        let firstCopy = seen.insert(sequence).inserted
        if firstCopy, wasMissing?.firstSent == nil { updateJitter(frameNumber: frameNumber, now: now) }
        if seen.count > 4 * configuration.maxBufferedFrames, let highest = highestSequence {
            // Keep only recent sequence numbers: anything older is late whatever it is.
            seen = seen.filter { Int64(highest) - Int64($0) < Int64(2 * configuration.maxBufferedFrames) }
        }
        if let next = nextFrame ?? resumeFrame, frameNumber < next {
            statistics.late += 1
            return
        }
        if buffer[frameNumber] != nil {
            statistics.duplicates += 1
            return
        }
        if nextFrame == nil {
            // The first packet (or the first after the stream went idle) starts the playout clock:
            // this frame plays one target delay from now.
            if let resume = resumeFrame { statistics.lost += Int(frameNumber - resume) }
            nextFrame = frameNumber
            nextTick = now + statistics.targetDelay
            resumeFrame = nil
            underrunTicks = 0
        } else if let next = nextFrame, Int64(frameNumber) - Int64(next) >= Int64(configuration.maxBufferedFrames) {
            statistics.tooEarly += 1
            return
        }
        if wasMissing?.firstSent != nil { nackedArrivals.insert(sequence) }
        buffer[frameNumber] = payload
        frameSequence[frameNumber] = sequence
        highestFrame = max(highestFrame ?? frameNumber, frameNumber)
        detectLoss(sequence: sequence, frameNumber: frameNumber, now: now)
        statistics.bufferDepth = buffer.count
    }

    /// Moves the playout clock to `now`: one `.play` per elapsed tick, then any NACK due.
    public mutating func poll(now: Duration) -> [Output] {
        var outputs: [Output] = []
        while var frame = nextFrame, nextTick <= now {
            let delay = currentDelay(frame: frame)
            let target = floorTransit() + statistics.targetDelay.asSeconds
            let underrun = highestFrame.map { frame > $0 } ?? true
            statistics.playoutDelay = .seconds(max(0, delay - floorTransit()))
            if buffer[frame] == nil, underrun || delay < target - frameSeconds {
                // Nothing at or after this frame has arrived (underrun), or too little is buffered:
                // play a concealment tick without consuming the frame, which delays playout by one
                // frame. A long underrun means the stream stopped: go idle until the next packet.
                if underrun { underrunTicks += 1 } else { underrunTicks = 0 }
                if underrunTicks > configuration.idleAfterUnderrunTicks {
                    resumeFrame = frame
                    nextFrame = nil
                    missing.removeAll()
                    break
                }
                statistics.stretched += 1
                outputs.append(.play(.conceal(frame: nil)))
                nextTick += configuration.frameDuration
                continue
            }
            underrunTicks = 0
            ticksSinceSkip += 1
            if delay > target + Double(configuration.skipExcessFrames) * frameSeconds, ticksSinceSkip > configuration.minimumTicksBetweenSkips,
               buffer[frame &+ 1] != nil, buffer[frame] != nil {
                // Far too much buffered: drop one frame to catch up (playing the next in its place).
                // Each skip loses 20 ms of audio, so skips are spaced out and need a clear excess.
                ticksSinceSkip = 0
                discard(frame)
                statistics.skipped += 1
                frame &+= 1
            }
            outputs.append(.play(playout(frame)))
            nextFrame = frame &+ 1
            nextTick += configuration.frameDuration
        }
        outputs += nackOutputs(now: now)
        statistics.bufferDepth = buffer.count
        return outputs
    }

    // MARK: Playout

    private mutating func playout(_ frame: UInt32) -> Playout {
        statistics.played += 1
        giveUpMissing(before: frame)
        if let payload = buffer.removeValue(forKey: frame) {
            if let sequence = frameSequence.removeValue(forKey: frame), nackedArrivals.remove(sequence) != nil {
                statistics.recoveredByNACK += 1
            }
            return .decode(frame: frame, payload: payload)
        }
        statistics.lost += 1
        if let next = buffer[frame &+ 1] {
            statistics.recoveredByFEC += 1
            return .decodeFEC(frame: frame, nextPayload: next)
        }
        statistics.concealed += 1
        return .conceal(frame: frame)
    }

    private mutating func discard(_ frame: UInt32) {
        buffer.removeValue(forKey: frame)
        if let sequence = frameSequence.removeValue(forKey: frame) { nackedArrivals.remove(sequence) }
    }

    /// How long after its media time frame `frame` is being played (media time = frame × 20 ms).
    private func currentDelay(frame: UInt32) -> Double {
        nextTick.asSeconds - Double(frame) * frameSeconds
    }

    /// The fastest transit (arrival − media time) among recent arrivals: the delay floor.
    private func floorTransit() -> Double { transits.min() ?? 0 }

    // MARK: Jitter

    private mutating func updateJitter(frameNumber: UInt32, now: Duration) {
        let transit = now.asSeconds - Double(frameNumber) * frameSeconds
        if let last = lastTransit {
            jitterSeconds += (abs(transit - last) - jitterSeconds) / 16
        }
        lastTransit = transit
        if transits.count < configuration.transitWindow {
            transits.append(transit)
        } else {
            transits[transitCursor] = transit
            transitCursor = (transitCursor + 1) % configuration.transitWindow
        }
        var target = frameSeconds + configuration.jitterMultiplier * jitterSeconds
        if configuration.nackEnabled { target += configuration.roundTripMultiplier * roundTripSeconds }
        target = min(max(target, configuration.minimumDelay.asSeconds), configuration.maximumDelay.asSeconds)
        statistics.jitter = .seconds(jitterSeconds)
        statistics.targetDelay = .seconds(target)
    }

    // MARK: Loss and NACK

    private mutating func detectLoss(sequence: UInt32, frameNumber: UInt32, now: Duration) {
        guard let highest = highestSequence else {
            highestSequence = sequence
            frameMinusSequence = Int64(frameNumber) - Int64(sequence)
            return
        }
        guard sequence > highest else { return }
        frameMinusSequence = Int64(frameNumber) - Int64(sequence)
        let gapStart = max(Int64(highest) + 1, Int64(sequence) - Int64(configuration.maxTrackedMissing))
        for missingSequence in gapStart ..< Int64(sequence) {
            missing[UInt32(missingSequence)] = Missing(detected: now)
        }
        highestSequence = sequence
        while missing.count > configuration.maxTrackedMissing, let oldest = missing.keys.min() {
            missing.removeValue(forKey: oldest)
        }
    }

    /// Stops asking for packets whose frame has been played.
    private mutating func giveUpMissing(before frame: UInt32) {
        for sequence in missing.keys where estimatedFrame(sequence) <= Int64(frame) {
            missing.removeValue(forKey: sequence)
        }
    }

    private func estimatedFrame(_ sequence: UInt32) -> Int64 { Int64(sequence) + frameMinusSequence }

    /// When the frame of `sequence` will be played.
    private func playoutTime(_ sequence: UInt32) -> Duration? {
        guard let next = nextFrame else { return nil }
        let ahead = estimatedFrame(sequence) - Int64(next)
        return nextTick + configuration.frameDuration * Int(ahead)
    }

    private mutating func nackOutputs(now: Duration) -> [Output] {
        guard configuration.nackEnabled else { return [] }
        let retry = roundTripSeconds > 0 ? Duration.seconds(roundTripSeconds * 1.5) : configuration.nackRetryInterval
        let expectedReturn = Duration.seconds(roundTripSeconds)
        let holdoff = max(configuration.reorderHoldoff, .seconds(jitterSeconds))
        var due: [UInt32] = []
        for (sequence, var entry) in missing {
            // Not after the playout deadline: a retransmission arriving after it is useless.
            guard let deadline = playoutTime(sequence), now + expectedReturn < deadline else { continue }
            guard entry.attempts < configuration.maxNackAttempts, now - entry.detected >= holdoff else { continue }
            if let last = entry.lastSent, now - last < retry { continue }
            entry.attempts += 1
            entry.lastSent = now
            if entry.firstSent == nil { entry.firstSent = now }
            missing[sequence] = entry
            due.append(sequence)
        }
        guard !due.isEmpty else { return [] }
        statistics.nacksSent += 1
        return [.nack(due.sorted())]
    }
}

extension Duration {
    /// Seconds as a Double (attosecond precision is far beyond what playout needs).
    var asSeconds: Double {
        let (whole, atto) = components
        return Double(whole) + Double(atto) * 1e-18
    }
}

extension OpusDecoder {
    /// Carries out a playout decision whose payloads are Opus packets (decrypt SFrame payloads
    /// before, e.g. by mapping the decision). Returns one frame of PCM.
    public func render(_ playout: VoiceReceiver.Playout) throws -> [Int16] {
        switch playout {
        case let .decode(_, payload): return try decode(payload)
        case let .decodeFEC(_, next): return try decodeFEC(nextPacket: next)
        case .conceal: return try decodeLost()
        }
    }
}
