/// Splits encrypted frames into media packets that fit the datagram budget, numbering packets
/// consecutively per stream.
public struct MediaPacketizer: Sendable {
    public let streamID: UInt32
    /// The sequence number the next packet gets (2^32 once the stream is exhausted).
    public private(set) var nextSequence: UInt64
    /// Payload bytes per packet; smaller than the maximum when a path needs room (e.g. a tunnel).
    public let maxPayloadBytes: Int

    public init(streamID: UInt32, firstSequence: UInt32 = 0, maxPayloadBytes: Int = MediaPacket.maxPayloadBytes) throws {
        guard (1 ... MediaPacket.maxPayloadBytes).contains(maxPayloadBytes) else {
            throw WireError.invalid(field: "packet payload size", reason: "\(maxPayloadBytes) is outside 1...\(MediaPacket.maxPayloadBytes)")
        }
        self.streamID = streamID
        self.nextSequence = UInt64(firstSequence)
        self.maxPayloadBytes = maxPayloadBytes
    }

    /// Cuts `frame` into equal-as-possible fragments (so no tiny last packet), in order.
    public mutating func packetize(frame: [UInt8], frameNumber: UInt32, isKeyframe: Bool = false, layer: MediaLayer = 0) throws -> [MediaPacket] {
        guard !frame.isEmpty else { throw WireError.invalid(field: "frame", reason: "empty") }
        let count = (frame.count + maxPayloadBytes - 1) / maxPayloadBytes
        guard count <= MediaPacket.maxFragmentsPerFrame else {
            throw WireError.tooLarge(field: "frame", size: frame.count, limit: MediaPacket.maxFragmentsPerFrame * maxPayloadBytes)
        }
        guard nextSequence + UInt64(count) <= UInt64(UInt32.max) + 1 else {
            throw WireError.invalid(field: "sequence number", reason: "stream \(streamID) would wrap; start a new stream")
        }
        let base = frame.count / count, extra = frame.count % count
        var packets: [MediaPacket] = []
        packets.reserveCapacity(count)
        var start = 0
        for index in 0 ..< count {
            let length = base + (index < extra ? 1 : 0)
            packets.append(try MediaPacket(streamID: streamID, sequence: UInt32(truncatingIfNeeded: nextSequence + UInt64(index)), frameNumber: frameNumber,
                                           fragmentIndex: index, fragmentCount: count, isKeyframe: isKeyframe, layer: layer,
                                           payload: Array(frame[start ..< start + length])))
            start += length
        }
        nextSequence += UInt64(count)
        return packets
    }
}

/// A frame put back together from its packets.
public struct AssembledFrame: Hashable, Sendable {
    public var streamID: UInt32
    public var frameNumber: UInt32
    public var isKeyframe: Bool
    public var layer: MediaLayer
    /// Sequence numbers of the first and last fragment.
    public var sequences: ClosedRange<UInt32>
    public var bytes: [UInt8]
}

/// What the assembler did with a packet.
public enum AssemblyResult: Hashable, Sendable {
    /// The packet completed its frame.
    case complete(AssembledFrame)
    /// Stored; the frame still misses fragments.
    case pending
    /// A fragment already held, or of a frame already completed or expired.
    case duplicate
    /// Disagrees with the other fragments of its frame (count, keyframe flag, layer, sequence).
    case inconsistent
    /// Dropped to stay within the limits (see `FrameAssembler.Limits`).
    case overLimit
}

/// Puts frames back together from packets of one stream that arrive in any order, duplicated or
/// not at all. Memory is bounded: at most `maxFramesInProgress` frames and `maxBytesInProgress`
/// payload bytes are held; a frame incomplete for `incompleteTimeout` is dropped by `expire(now:)`.
/// When a new frame would exceed a limit, the oldest frame in progress is dropped to make room
/// (newer media is worth more than older).
public struct FrameAssembler: Sendable {
    public struct Limits: Sendable, Hashable {
        public var maxFramesInProgress: Int
        public var maxBytesInProgress: Int
        public var incompleteTimeout: Duration
        /// Finished frame numbers remembered so late duplicates are recognised.
        public var rememberedFinishedFrames: Int

        /// Defaults: 16 frames (a video burst at 30 fps plus voice), 2 MiB (several keyframes),
        /// 1 s (far beyond any playout deadline), and the last 256 finished frames.
        public static let standard = Limits(maxFramesInProgress: 16, maxBytesInProgress: 2 << 20,
                                            incompleteTimeout: .seconds(1), rememberedFinishedFrames: 256)

        public init(maxFramesInProgress: Int, maxBytesInProgress: Int, incompleteTimeout: Duration, rememberedFinishedFrames: Int) {
            self.maxFramesInProgress = maxFramesInProgress
            self.maxBytesInProgress = maxBytesInProgress
            self.incompleteTimeout = incompleteTimeout
            self.rememberedFinishedFrames = rememberedFinishedFrames
        }
    }

    private struct Partial: Sendable {
        var firstSeen: Duration
        var first: MediaPacket
        var fragments: [[UInt8]?]
        var received: Int
        var bytes: Int
    }

    public let limits: Limits
    private var partial: [UInt32: Partial] = [:]
    private var finished: Set<UInt32> = []
    private var finishedOrder: [UInt32] = []
    public private(set) var bytesInProgress = 0
    public var framesInProgress: Int { partial.count }
    /// Frames dropped by timeout or to make room.
    public private(set) var droppedFrames = 0

    public init(limits: Limits = .standard) {
        self.limits = limits
    }

    public mutating func insert(_ packet: MediaPacket, now: Duration) -> AssemblyResult {
        if finished.contains(packet.frameNumber) { return .duplicate }
        if packet.payload.count > limits.maxBytesInProgress { return .overLimit }
        if var frame = partial[packet.frameNumber] {
            let head = frame.first
            let expectedSequence = Int64(head.sequence) - Int64(head.fragmentIndex) + Int64(packet.fragmentIndex)
            guard packet.fragmentCount == head.fragmentCount, packet.isKeyframe == head.isKeyframe,
                  packet.layer == head.layer, Int64(packet.sequence) == expectedSequence else { return .inconsistent }
            if frame.fragments[packet.fragmentIndex] != nil { return .duplicate }
            makeRoom(for: packet.payload.count, keeping: packet.frameNumber)
            if bytesInProgress + packet.payload.count > limits.maxBytesInProgress {
                drop(packet.frameNumber)
                return .overLimit
            }
            frame.fragments[packet.fragmentIndex] = packet.payload
            frame.received += 1
            frame.bytes += packet.payload.count
            bytesInProgress += packet.payload.count
            if frame.received == head.fragmentCount { return .complete(finish(frame)) }
            partial[packet.frameNumber] = frame
            return .pending
        }
        guard Int64(packet.sequence) - Int64(packet.fragmentIndex) >= 0,
              Int64(packet.sequence) - Int64(packet.fragmentIndex) + Int64(packet.fragmentCount) - 1 <= Int64(UInt32.max) else {
            return .inconsistent
        }
        var frame = Partial(firstSeen: now, first: packet, fragments: Array(repeating: nil, count: packet.fragmentCount),
                            received: 1, bytes: packet.payload.count)
        frame.fragments[packet.fragmentIndex] = packet.payload
        if packet.fragmentCount == 1 { return .complete(finish(frame)) }
        while partial.count >= limits.maxFramesInProgress, dropOldest(except: nil) {}
        makeRoom(for: packet.payload.count, keeping: nil)
        guard bytesInProgress + packet.payload.count <= limits.maxBytesInProgress else { return .overLimit }
        bytesInProgress += packet.payload.count
        partial[packet.frameNumber] = frame
        return .pending
    }

    /// Drops frames incomplete for longer than the timeout; returns their frame numbers.
    public mutating func expire(now: Duration) -> [UInt32] {
        let stale = partial.filter { now - $0.value.firstSeen >= limits.incompleteTimeout }.keys.sorted()
        for number in stale { drop(number) }
        return stale
    }

    private mutating func finish(_ frame: Partial) -> AssembledFrame {
        let head = frame.first
        if partial.removeValue(forKey: head.frameNumber) != nil { bytesInProgress -= frame.bytes }
        remember(head.frameNumber)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(frame.bytes)
        for fragment in frame.fragments { bytes += fragment ?? [] }
        let firstSequence = head.sequence &- UInt32(head.fragmentIndex)
        return AssembledFrame(streamID: head.streamID, frameNumber: head.frameNumber, isKeyframe: head.isKeyframe, layer: head.layer,
                              sequences: firstSequence ... firstSequence &+ UInt32(head.fragmentCount - 1), bytes: bytes)
    }

    private mutating func remember(_ number: UInt32) {
        finished.insert(number)
        finishedOrder.append(number)
        if finishedOrder.count > limits.rememberedFinishedFrames {
            finished.remove(finishedOrder.removeFirst())
        }
    }

    private mutating func makeRoom(for bytes: Int, keeping: UInt32?) {
        while bytesInProgress + bytes > limits.maxBytesInProgress, dropOldest(except: keeping) {}
    }

    /// Drops the frame in progress seen first; false when there is none to drop.
    private mutating func dropOldest(except keeping: UInt32?) -> Bool {
        guard let oldest = partial.filter({ $0.key != keeping }).min(by: { ($0.value.firstSeen, $0.key) < ($1.value.firstSeen, $1.key) })?.key else {
            return false
        }
        drop(oldest)
        return true
    }

    private mutating func drop(_ number: UInt32) {
        guard let frame = partial.removeValue(forKey: number) else { return }
        bytesInProgress -= frame.bytes
        droppedFrames += 1
        remember(number)
    }
}
