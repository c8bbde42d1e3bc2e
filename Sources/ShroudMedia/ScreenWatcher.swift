import ShroudCrypto
import ShroudWire

/// The watcher's pipeline (issue 6, item 3), sans-IO on an injected clock: datagrams from the relay
/// → `VideoReceiver` (reassembly, decode order, NACKs, keyframe requests, receiver reports) →
/// SFrame open with the sharer's key → VP8 decode → pictures. Feed every datagram to `receive`,
/// call `poll` at `nextDeadline` (or every few milliseconds), and send the feedback datagrams both
/// return.
///
/// A frame that cannot be opened (its key has not arrived yet, or it does not authenticate) or
/// decoded stops decoding until a keyframe, which the receiver asks for at once: a watcher that
/// joined before the sharer's key reached it shows the first keyframe after the key.
public final class ScreenWatcher {
    public struct Picture: Sendable {
        public let frame: I420Frame
        public let layer: UInt8
        public let streamID: UInt32
        public let frameNumber: UInt32
        public let isKeyframe: Bool
        /// The encrypted frame's size (what the link carried).
        public let bytes: Int
        /// The decrypted VP8 frame (for IVF recordings).
        public let encoded: [UInt8]
    }

    public struct Statistics: Equatable, Sendable {
        public init() {}
        public var receiver = VideoReceiver.Statistics()
        /// Datagrams that did not parse, or that a watcher does not expect (feedback kinds).
        public var malformed = 0
        /// Frames whose key is unknown or that did not authenticate.
        public var undecryptable = 0
        /// Frames the SFrame replay window refused (a copy of a frame already opened).
        public var repeated = 0
        public var decodeErrors = 0
        public var pictures = 0
    }

    public private(set) var receiver: VideoReceiver
    public private(set) var watch: WatchStatistics
    private let keys: MediaKeyProvider
    private let sframe = SFrameReceiver()
    private var decoder: VP8Decoder?
    private var decoderStream: UInt32?
    private var counts = Statistics()
    /// The last keyframe that arrived before its key, shown once the key is there.
    private var pendingKeyframe: (frame: AssembledFrame, keyID: UInt64)?

    public init(keys: MediaKeyProvider, framesPerSecond: Int = 30) {
        self.keys = keys
        receiver = VideoReceiver(framesPerSecond: framesPerSecond)
        watch = WatchStatistics(framesPerSecond: framesPerSecond)
    }

    public var statistics: Statistics {
        var s = counts
        s.receiver = receiver.statistics
        return s
    }

    public var nextDeadline: Duration? { receiver.nextDeadline }

    /// One datagram from the relay.
    public func receive(_ datagram: [UInt8], now: Duration) throws -> (pictures: [Picture], feedback: [[UInt8]]) {
        guard let parsed = try? MediaDatagram(parsing: datagram), case let .media(packet) = parsed else {
            counts.malformed += 1
            return ([], [])
        }
        receiver.handle(packet, now: now)
        return try drain(now: now)
    }

    /// Feedback (and pictures) that came due without a datagram.
    public func poll(now: Duration) throws -> (pictures: [Picture], feedback: [[UInt8]]) {
        try drain(now: now)
    }

    public func snapshot(now: Duration) -> WatchStatistics.Snapshot { watch.snapshot(now: now) }

    private func drain(now: Duration) throws -> (pictures: [Picture], feedback: [[UInt8]]) {
        var pictures: [Picture] = []
        var feedback: [[UInt8]] = []
        if let pending = pendingKeyframe, keys.receiveKey(id: pending.keyID) != nil, receiver.streamID == pending.frame.streamID {
            pendingKeyframe = nil
            if let picture = try show(pending.frame, now: now) { pictures.append(picture) }
        }
        while let output = receiver.pollOutput(now: now) {
            switch output {
            case let .frame(frame):
                if let picture = try show(frame, now: now) { pictures.append(picture) }
            case let .nack(nack): feedback.append(nack.serialized())
            case let .keyframeRequest(request): feedback.append(request.serialized())
            case let .report(report):
                watch.reportSent(fractionLost: report.fractionLost)
                feedback.append(report.serialized())
            }
        }
        return (pictures, feedback)
    }

    private func show(_ frame: AssembledFrame, now: Duration) throws -> Picture? {
        let plaintext: [UInt8]
        switch open(frame.bytes) {
        case let .opened(bytes): plaintext = bytes
        case .repeated:
            // A copy of a frame already opened changes nothing.
            return nil
        case let .unknownKey(keyID):
            // Usually the sharer's key is still on its way: keep the keyframe to show it the
            // moment the key arrives, and ask for a fresh keyframe meanwhile.
            if frame.isKeyframe { pendingKeyframe = (frame, keyID) }
            receiver.frameUnusable(now: now)
            return nil
        case .refused:
            receiver.frameUnusable(now: now)
            return nil
        }
        if decoderStream != frame.streamID {
            // Another layer (a switch at a keyframe): a fresh decoder for its picture size.
            decoder = try VP8Decoder()
            decoderStream = frame.streamID
            watch.streamChanged()
        }
        guard let decoder, let picture = (try? decoder.decode(plaintext))?.last else {
            counts.decodeErrors += 1
            receiver.frameUnusable(now: now)
            return nil
        }
        if frame.isKeyframe { pendingKeyframe = nil }
        counts.pictures += 1
        watch.frameShown(frameNumber: frame.frameNumber, bytes: frame.bytes.count, layer: frame.layer,
                         width: picture.width, height: picture.height, now: now)
        return Picture(frame: picture, layer: frame.layer, streamID: frame.streamID, frameNumber: frame.frameNumber,
                       isKeyframe: frame.isKeyframe, bytes: frame.bytes.count, encoded: plaintext)
    }

    private enum Opening { case opened([UInt8]), repeated, unknownKey(UInt64), refused }

    private func open(_ frame: [UInt8]) -> Opening {
        var reader = ByteReader(frame)
        guard let header = try? SFrameHeader(from: &reader) else { counts.undecryptable += 1; return .refused }
        if !sframe.keyIDs.contains(header.keyID) {
            guard let key = keys.receiveKey(id: header.keyID) else { counts.undecryptable += 1; return .unknownKey(header.keyID) }
            // Keys the provider dropped (retired after a rotation) go first, so the receiver never fills up.
            for old in sframe.keyIDs where keys.receiveKey(id: old) == nil { sframe.removeKey(keyID: old) }
            guard (try? sframe.addKey(keyID: header.keyID, baseKey: key)) != nil else { counts.undecryptable += 1; return .refused }
        } else if keys.receiveKey(id: header.keyID) == nil {
            sframe.removeKey(keyID: header.keyID)
            counts.undecryptable += 1
            return .refused
        }
        do {
            return .opened(try sframe.open(frame).plaintext)
        } catch SFrameError.replayed, SFrameError.tooOld {
            counts.repeated += 1
            return .repeated
        } catch {
            counts.undecryptable += 1
            return .refused
        }
    }
}
