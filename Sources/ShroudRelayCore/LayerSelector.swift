import ShroudWire

/// Which simulcast layer each viewer of one screen share receives (issue 6, item 2), decided from
/// the cleartext routing header alone: the relay never sees a pixel.
///
/// One selector per share (one sender's video streams, one stream id per layer). Layers are the
/// 3-bit layer field of the media header; a sender that numbers them by quality (0 = 360p,
/// 1 = 720p, 2 = 1080p, docs/MEDIA.md) lets a viewer's quality request be a layer cap directly.
/// A selector learns which layers exist, and each layer's stream id, from the packets it sees.
///
/// Rules (docs/PROTOCOL.md §4):
/// - A viewer's **target** is the highest layer seen that is at most `min(cap, lossCeiling)`, or
///   the lowest layer seen when none is that low. The cap is what the viewer asked for; the loss
///   ceiling is moved by its receiver reports.
/// - A viewer **switches** to its target only at the first fragment of a keyframe of the target
///   layer; from that frame on it gets that stream and nothing of the old one. Until then it keeps
///   receiving the old layer, so a switch never leaves a gap.
/// - While a viewer waits for a switch (it joined, or its target changed) the selector asks the
///   sender for a keyframe of the target layer: one request per layer covers every waiting viewer,
///   and a layer is asked at most once per `keyframeRequestInterval`; the request is repeated at
///   that interval until the keyframe arrives (a request can be lost).
/// - **Sustained loss** (`minimumReportsToShift` reports at or above `downshiftLoss`, spanning
///   `downshiftAfter`, no two further apart than that, with no clean report between) lowers the
///   ceiling below the current target;
///   **sustained recovery** (reports at or below `upshiftLoss` spanning `upshiftAfter`) raises it
///   one layer again. The wide gap between the thresholds and windows is the hysteresis.
///
/// Sans-IO: time is a `Duration` since any fixed origin. After each input, drain `pollOutput(now:)`
/// until it returns nil; call it again at `nextDeadline`. The per-packet path (`observe`, then
/// `forwards` per viewer) reads fixed arrays and allocates nothing (a switch event goes into an
/// output queue whose capacity is reserved up front); it loops over viewers only on the first
/// fragment of a keyframe that some viewer is waiting for, or for a layer or stream not seen before.
public struct LayerSelector: Sendable {
    /// Fraction lost (in 1/256, as in `ReceiverReport`) at or above which a report counts as lossy:
    /// 26/256 ≈ 10 %, where VP8 at screen bitrates starts to freeze on NACK round trips.
    public static let downshiftLoss: UInt8 = 26
    /// Fraction lost at or below which a report counts as clean: 5/256 ≈ 2 %, which NACK repairs.
    public static let upshiftLoss: UInt8 = 5
    /// Loss must last this long before a viewer is moved down: two or three reports, not one burst.
    public static let downshiftAfter: Duration = .seconds(1)
    /// A viewer must be clean this long before it is moved back up: long against the downshift
    /// window so a link at its limit does not flap between layers (each flap costs a keyframe).
    public static let upshiftAfter: Duration = .seconds(8)
    /// Reports needed within a run before it moves a viewer (one report is never "sustained").
    public static let minimumReportsToShift = 2
    /// At most one keyframe request per layer in this interval: a 1080p keyframe costs about three
    /// frames of budget, so many joiners must not each cost one. Half a second keeps a late
    /// joiner's first picture within a second even when the previous request was just sent.
    public static let keyframeRequestInterval: Duration = .milliseconds(500)
    /// Viewers per share; a room never holds more members than this.
    public static let maxViewers = 256
    static let layerSlots = Int(MediaPacket.maxLayer) + 1

    /// A viewer's handle, valid until `removeViewer`; its index may be reused afterwards.
    public struct Viewer: Hashable, Sendable {
        public let index: Int
    }

    /// What the caller must do, in order.
    public enum Output: Equatable, Sendable {
        /// Send this keyframe request to the sharer.
        case keyframeRequest(KeyframeRequest)
        /// A viewer now receives another layer (nil before its first); for statistics and logs.
        case switched(Viewer, from: MediaLayer?, to: MediaLayer)
    }

    public struct Statistics: Equatable, Sendable {
        public var switches = 0
        public var downshifts = 0
        public var upshifts = 0
        public var keyframeRequests = 0
    }

    struct Layer {
        var seen = false
        var streamID: UInt32 = 0
        /// A viewer asked for a keyframe of this layer itself (unrepairable loss).
        var keyframeAsked = false
        var lastRequest: Duration?
        var waitingViewers = 0
    }

    struct ViewerState {
        var cap: MediaLayer
        var lossCeiling: MediaLayer = MediaPacket.maxLayer
        var target: MediaLayer?
        var current: MediaLayer?
        var currentStream: UInt32 = 0
        var startFrame: UInt32 = 0
        var lossyRunStart: Duration?
        var lastLossyReport: Duration?
        var lossyReports = 0
        var cleanRunStart: Duration?
        var cleanReports = 0
    }

    private var layers = [Layer](repeating: Layer(), count: layerSlots)
    private var viewers: [ViewerState?] = []
    private var outputs: [Output] = []
    private var nextOutput = 0
    public private(set) var statistics = Statistics()

    public init() {
        viewers.reserveCapacity(16)
        outputs.reserveCapacity(32)
    }

    // MARK: Viewers

    /// A member starts watching; `maximumLayer` is the highest layer it wants (its quality).
    public mutating func addViewer(maximumLayer: MediaLayer, now: Duration) throws -> Viewer {
        guard maximumLayer <= MediaPacket.maxLayer else {
            throw WireError.invalid(field: "layer", reason: "\(maximumLayer) is above \(MediaPacket.maxLayer)")
        }
        let state = ViewerState(cap: maximumLayer)
        let index: Int
        if let free = viewers.firstIndex(where: { $0 == nil }) {
            index = free
            viewers[free] = state
        } else {
            guard viewers.count < Self.maxViewers else {
                throw WireError.tooLarge(field: "viewers", size: viewers.count + 1, limit: Self.maxViewers)
            }
            index = viewers.count
            viewers.append(state)
        }
        retarget(index)
        return Viewer(index: index)
    }

    public mutating func removeViewer(_ viewer: Viewer) {
        guard viewers.indices.contains(viewer.index), viewers[viewer.index] != nil else { return }
        viewers[viewer.index] = nil
        recount()
    }

    /// The viewer asked for another quality.
    public mutating func setMaximumLayer(_ layer: MediaLayer, for viewer: Viewer) throws {
        guard layer <= MediaPacket.maxLayer else {
            throw WireError.invalid(field: "layer", reason: "\(layer) is above \(MediaPacket.maxLayer)")
        }
        guard viewers.indices.contains(viewer.index), viewers[viewer.index] != nil else { return }
        viewers[viewer.index]?.cap = layer
        retarget(viewer.index)
    }

    /// The layer a viewer receives now (nil until its first keyframe).
    public func currentLayer(of viewer: Viewer) -> MediaLayer? {
        guard viewers.indices.contains(viewer.index) else { return nil }
        return viewers[viewer.index]?.current
    }

    /// The layer a viewer will switch to at that layer's next keyframe.
    public func targetLayer(of viewer: Viewer) -> MediaLayer? {
        guard viewers.indices.contains(viewer.index) else { return nil }
        return viewers[viewer.index]?.target
    }

    /// The layers seen so far, as a bit set (bit n = layer n).
    public var availableLayers: UInt8 {
        var mask: UInt8 = 0
        for layer in 0 ..< Self.layerSlots where layers[layer].seen { mask |= 1 << layer }
        return mask
    }

    // MARK: Per packet

    /// Call for every media packet of the share, before `forwards`. Learns layers and stream ids,
    /// and switches waiting viewers at the first fragment of a keyframe of their target layer.
    public mutating func observe(_ header: MediaRoutingHeader, now: Duration) {
        let layer = Int(header.layer)
        if !layers[layer].seen || layers[layer].streamID != header.streamID {
            // A new layer, or the sender restarted a layer with a new stream id: rare, so a full
            // pass over the viewers is fine here.
            let isNewLayer = !layers[layer].seen
            layers[layer].seen = true
            layers[layer].streamID = header.streamID
            // Requests for the old stream do not hold back one for the new stream.
            layers[layer].lastRequest = nil
            if isNewLayer {
                for index in viewers.indices where viewers[index] != nil { retarget(index, recounting: false) }
            }
            recount()
        }
        guard header.isKeyframe, header.isFirstFragment else { return }
        layers[layer].keyframeAsked = false
        guard layers[layer].waitingViewers > 0 else { return }
        for index in viewers.indices {
            guard let state = viewers[index], state.target == header.layer,
                  state.current != header.layer || state.currentStream != header.streamID else { continue }
            viewers[index]?.current = header.layer
            viewers[index]?.currentStream = header.streamID
            viewers[index]?.startFrame = header.frameNumber
            statistics.switches += 1
            outputs.append(.switched(Viewer(index: index), from: state.current, to: header.layer))
        }
        layers[layer].waitingViewers = 0
    }

    /// Whether `viewer` receives this packet: its current layer's stream, from the frame it switched
    /// at. Constant time, no allocation.
    public func forwards(_ header: MediaRoutingHeader, to viewer: Viewer) -> Bool {
        guard viewers.indices.contains(viewer.index), let state = viewers[viewer.index] else { return false }
        return state.current == header.layer && state.currentStream == header.streamID
            && header.frameNumber >= state.startFrame
    }

    // MARK: Feedback from viewers

    /// A receiver report from a viewer about the stream it receives.
    public mutating func receiverReport(fractionLost: UInt8, from viewer: Viewer, now: Duration) {
        guard viewers.indices.contains(viewer.index), var state = viewers[viewer.index] else { return }
        if fractionLost >= Self.downshiftLoss {
            state.cleanRunStart = nil
            state.cleanReports = 0
            // Lossy reports further apart than the window are separate bursts, not one run.
            if let last = state.lastLossyReport, now - last > Self.downshiftAfter {
                state.lossyRunStart = nil
                state.lossyReports = 0
            }
            let start = state.lossyRunStart ?? now
            state.lossyRunStart = start
            state.lastLossyReport = now
            state.lossyReports += 1
            if state.lossyReports >= Self.minimumReportsToShift, now - start >= Self.downshiftAfter {
                state.lossyRunStart = nil
                state.lossyReports = 0
                if let target = state.target, let lower = highestSeen(below: target) {
                    state.lossCeiling = lower
                    statistics.downshifts += 1
                }
            }
        } else if fractionLost <= Self.upshiftLoss {
            state.lossyRunStart = nil
            state.lossyReports = 0
            let start = state.cleanRunStart ?? now
            state.cleanRunStart = start
            state.cleanReports += 1
            if state.cleanReports >= Self.minimumReportsToShift, now - start >= Self.upshiftAfter,
               state.lossCeiling < MediaPacket.maxLayer {
                state.cleanRunStart = nil
                state.cleanReports = 0
                // One layer up at a time; once nothing seen lies above, the ceiling is lifted
                // entirely, so a layer the sender adds later is not held back by old loss.
                let target = state.target ?? 0
                if let higher = lowestSeen(above: target), lowestSeen(above: higher) != nil {
                    state.lossCeiling = higher
                } else {
                    state.lossCeiling = MediaPacket.maxLayer
                }
            }
        } else {
            // Between the thresholds: not clean, so recovery starts over; a lossy run goes on.
            state.cleanRunStart = nil
            state.cleanReports = 0
        }
        let before = state.target
        viewers[viewer.index] = state
        retarget(viewer.index)
        if let before, let after = viewers[viewer.index]?.target, after > before { statistics.upshifts += 1 }
    }

    /// A viewer lost a frame it cannot repair and asks for a keyframe of the layer it receives.
    public mutating func keyframeWanted(by viewer: Viewer) {
        guard viewers.indices.contains(viewer.index), let layer = viewers[viewer.index]?.current else { return }
        layers[Int(layer)].keyframeAsked = true
    }

    // MARK: Outputs

    /// The next thing to do, or nil; keyframe requests become due here (coalesced, rate-limited).
    public mutating func pollOutput(now: Duration) -> Output? {
        if nextOutput < outputs.count {
            let output = outputs[nextOutput]
            nextOutput += 1
            if nextOutput == outputs.count {
                outputs.removeAll(keepingCapacity: true)
                nextOutput = 0
            }
            return output
        }
        for index in 0 ..< Self.layerSlots {
            let layer = layers[index]
            guard layer.seen, layer.waitingViewers > 0 || layer.keyframeAsked else { continue }
            if let last = layer.lastRequest, now - last < Self.keyframeRequestInterval { continue }
            guard let request = try? KeyframeRequest(streamID: layer.streamID, layer: MediaLayer(index)) else { continue }
            layers[index].lastRequest = now
            layers[index].keyframeAsked = false
            statistics.keyframeRequests += 1
            return .keyframeRequest(request)
        }
        return nil
    }

    /// When a held-back keyframe request becomes due, if one is waiting.
    public var nextDeadline: Duration? {
        var earliest: Duration?
        for layer in layers where layer.seen && (layer.waitingViewers > 0 || layer.keyframeAsked) {
            guard let last = layer.lastRequest else { continue }
            let due = last + Self.keyframeRequestInterval
            earliest = earliest.map { min($0, due) } ?? due
        }
        return earliest
    }

    // MARK: Internals

    private func highestSeen(atMost limit: MediaLayer) -> MediaLayer? {
        var layer = Int(limit)
        while layer >= 0 {
            if layers[layer].seen { return MediaLayer(layer) }
            layer -= 1
        }
        return nil
    }

    private func highestSeen(below layer: MediaLayer) -> MediaLayer? {
        layer == 0 ? nil : highestSeen(atMost: layer - 1)
    }

    private func lowestSeen(above layer: MediaLayer) -> MediaLayer? {
        var candidate = Int(layer) + 1
        while candidate < Self.layerSlots {
            if layers[candidate].seen { return MediaLayer(candidate) }
            candidate += 1
        }
        return nil
    }

    private mutating func retarget(_ index: Int, recounting: Bool = true) {
        guard let state = viewers[index] else { return }
        let limit = min(state.cap, state.lossCeiling)
        let target = highestSeen(atMost: limit) ?? lowestSeen(above: limit)
        viewers[index]?.target = target
        if recounting { recount() }
    }

    /// Recomputes how many viewers wait for each layer's keyframe (after a rare change).
    private mutating func recount() {
        for index in 0 ..< Self.layerSlots { layers[index].waitingViewers = 0 }
        for state in viewers {
            guard let state, let target = state.target else { continue }
            let layer = Int(target)
            if state.current != target || state.currentStream != layers[layer].streamID {
                layers[layer].waitingViewers += 1
            }
        }
    }
}
