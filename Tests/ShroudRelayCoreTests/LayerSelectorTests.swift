import Testing
import ShroudWire
import ShroudTestSupport
@testable import ShroudRelayCore

/// A simulated sharer: layers 0 (360p, stream 100) and 2 (1080p, stream 102) unless told otherwise,
/// one packet per fragment with consecutive sequence numbers per stream.
struct SimulcastSource {
    var streams: [MediaLayer: UInt32] = [0: 100, 2: 102]
    var sequences: [UInt32: UInt32] = [:]
    var frames: [UInt32: UInt32] = [:]

    /// The routing headers of one frame of `layer` in `fragments` fragments.
    mutating func frame(layer: MediaLayer, keyframe: Bool = false, fragments: Int = 1) throws -> [MediaRoutingHeader] {
        let stream = streams[layer] ?? 0
        let frame = frames[stream, default: 0]
        frames[stream] = frame + 1
        var headers: [MediaRoutingHeader] = []
        for index in 0 ..< fragments {
            let sequence = sequences[stream, default: 0]
            sequences[stream] = sequence + 1
            let packet = try MediaPacket(streamID: stream, sequence: sequence, frameNumber: frame, fragmentIndex: index,
                                         fragmentCount: fragments, isKeyframe: keyframe, layer: layer, payload: [0xA5, UInt8(index)])
            headers.append(try MediaRoutingHeader(parsing: packet.serialized()))
        }
        return headers
    }
}

extension Duration {
    static func ms(_ value: Int) -> Duration { .milliseconds(value) }
}

@Suite("Layer selector")
struct LayerSelectorTests {
    func drain(_ selector: inout LayerSelector, now: Duration) -> [LayerSelector.Output] {
        var outputs: [LayerSelector.Output] = []
        while let output = selector.pollOutput(now: now) { outputs.append(output) }
        return outputs
    }

    func requests(_ outputs: [LayerSelector.Output]) -> [KeyframeRequest] {
        outputs.compactMap { if case .keyframeRequest(let request) = $0 { request } else { nil } }
    }

    /// Feeds one frame of each layer (delta frames) so the selector knows both layers.
    func announceLayers(_ selector: inout LayerSelector, _ source: inout SimulcastSource, now: Duration) throws {
        for layer in source.streams.keys.sorted() {
            for header in try source.frame(layer: layer) { selector.observe(header, now: now) }
        }
    }

    @Test func aJoiningViewerGetsNothingUntilTheKeyframeOfItsLayerThenOnlyThatLayer() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        try announceLayers(&selector, &source, now: .zero)
        let viewer = try selector.addViewer(maximumLayer: 2, now: .zero)
        #expect(selector.targetLayer(of: viewer) == 2 && selector.currentLayer(of: viewer) == nil)
        #expect(requests(drain(&selector, now: .zero)) == [try KeyframeRequest(streamID: 102, layer: 2)])

        // Delta frames of both layers and a keyframe of the other layer: nothing is forwarded.
        for header in try source.frame(layer: 2, fragments: 3) + source.frame(layer: 0, keyframe: true, fragments: 2) {
            selector.observe(header, now: .ms(10))
            #expect(!selector.forwards(header, to: viewer))
        }
        // The keyframe of layer 2: the switch happens at its first fragment, every fragment goes through.
        let keyframe = try source.frame(layer: 2, keyframe: true, fragments: 4)
        for header in keyframe {
            selector.observe(header, now: .ms(40))
            #expect(selector.forwards(header, to: viewer))
        }
        #expect(drain(&selector, now: .ms(40)) == [.switched(viewer, from: nil, to: 2)])
        #expect(selector.currentLayer(of: viewer) == 2)
        for header in try source.frame(layer: 2, fragments: 2) { selector.observe(header, now: .ms(70)); #expect(selector.forwards(header, to: viewer)) }
        for header in try source.frame(layer: 0) { selector.observe(header, now: .ms(70)); #expect(!selector.forwards(header, to: viewer)) }
        // Nobody waits any more: no further keyframe requests, ever.
        #expect(drain(&selector, now: .seconds(10)).isEmpty)
        #expect(selector.nextDeadline == nil)
    }

    @Test func onlyTheFirstFragmentOfAKeyframeSwitches() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        try announceLayers(&selector, &source, now: .zero)
        let viewer = try selector.addViewer(maximumLayer: 2, now: .zero)
        _ = drain(&selector, now: .zero)
        // Fragment 0 of this keyframe was lost before the relay: the viewer stays waiting.
        let keyframe = try source.frame(layer: 2, keyframe: true, fragments: 3)
        for header in keyframe.dropFirst() {
            selector.observe(header, now: .ms(30))
            #expect(!selector.forwards(header, to: viewer))
        }
        #expect(selector.currentLayer(of: viewer) == nil)
        // …so the request is repeated once the interval has passed.
        #expect(requests(drain(&selector, now: LayerSelector.keyframeRequestInterval)).count == 1)
        // A late fragment of an older frame after the switch is not forwarded.
        let next = try source.frame(layer: 2, keyframe: true)
        selector.observe(next[0], now: .ms(600))
        #expect(selector.forwards(next[0], to: viewer))
        selector.observe(keyframe[0], now: .ms(601))
        #expect(!selector.forwards(keyframe[0], to: viewer))
    }

    @Test func requestsAreCoalescedAcrossViewersAndRateLimitedPerLayer() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        try announceLayers(&selector, &source, now: .zero)
        let interval = LayerSelector.keyframeRequestInterval
        var viewers: [LayerSelector.Viewer] = []
        for joined in 0 ..< 5 {
            viewers.append(try selector.addViewer(maximumLayer: 2, now: .ms(joined * 10)))
            let sent = requests(drain(&selector, now: .ms(joined * 10)))
            // One request for the first joiner; the next four share it.
            #expect(sent.count == (joined == 0 ? 1 : 0))
        }
        #expect(selector.nextDeadline == interval)
        // One nanosecond before the interval: still held; at the interval: repeated once.
        #expect(drain(&selector, now: interval - .nanoseconds(1)).isEmpty)
        #expect(requests(drain(&selector, now: interval)) == [try KeyframeRequest(streamID: 102, layer: 2)])
        #expect(drain(&selector, now: interval).isEmpty)
        // The keyframe arrives: all five switch at once, and the need is gone.
        for header in try source.frame(layer: 2, keyframe: true, fragments: 2) { selector.observe(header, now: interval + .ms(20)) }
        let outputs = drain(&selector, now: interval + .ms(20))
        #expect(outputs.count == 5 && requests(outputs).isEmpty)
        #expect(viewers.allSatisfy { selector.currentLayer(of: $0) == 2 })
        #expect(drain(&selector, now: .seconds(30)).isEmpty)
        // A viewer joining for the other layer is a different layer: not held back by layer 2's timer.
        let small = try selector.addViewer(maximumLayer: 0, now: interval + .ms(30))
        #expect(requests(drain(&selector, now: interval + .ms(30))) == [try KeyframeRequest(streamID: 100, layer: 0)])
        #expect(selector.targetLayer(of: small) == 0)
        #expect(selector.statistics.keyframeRequests == 3)
    }

    @Test func aViewersMaximumQualityCapsItsLayerAndRaisingItSwitchesAtTheNextKeyframe() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        try announceLayers(&selector, &source, now: .zero)
        let viewer = try selector.addViewer(maximumLayer: 0, now: .zero)
        #expect(requests(drain(&selector, now: .zero)).map(\.layer) == [0])
        for header in try source.frame(layer: 0, keyframe: true) + source.frame(layer: 2, keyframe: true) {
            selector.observe(header, now: .ms(10))
            #expect(selector.forwards(header, to: viewer) == (header.layer == 0))
        }
        // A cap of 1 with layers 0 and 2: 0 is the highest layer under it.
        try selector.setMaximumLayer(1, for: viewer)
        #expect(selector.targetLayer(of: viewer) == 0)
        try selector.setMaximumLayer(2, for: viewer)
        #expect(selector.targetLayer(of: viewer) == 2)
        _ = drain(&selector, now: .ms(20))
        // Until layer 2's keyframe the viewer keeps its old layer: no gap.
        for header in try source.frame(layer: 0) + source.frame(layer: 2) {
            selector.observe(header, now: .ms(30))
            #expect(selector.forwards(header, to: viewer) == (header.layer == 0))
        }
        for header in try source.frame(layer: 2, keyframe: true) + source.frame(layer: 0) {
            selector.observe(header, now: .ms(60))
            #expect(selector.forwards(header, to: viewer) == (header.layer == 2))
        }
        #expect(drain(&selector, now: .ms(60)).contains(.switched(viewer, from: 0, to: 2)))
        #expect(throws: WireError.self) { try selector.setMaximumLayer(8, for: viewer) }
        #expect(throws: WireError.self) { try selector.addViewer(maximumLayer: 8, now: .zero) }
        #expect(try selector.addViewer(maximumLayer: 7, now: .zero).index == 1)
    }

    /// Puts one viewer on layer 2 and returns it.
    func viewerOnTopLayer(_ selector: inout LayerSelector, _ source: inout SimulcastSource) throws -> LayerSelector.Viewer {
        try announceLayers(&selector, &source, now: .zero)
        let viewer = try selector.addViewer(maximumLayer: 2, now: .zero)
        #expect(requests(drain(&selector, now: .zero)).map(\.layer) == [2])
        for header in try source.frame(layer: 2, keyframe: true) { selector.observe(header, now: .zero) }
        _ = drain(&selector, now: .zero)
        return viewer
    }

    @Test func sustainedLossMovesAViewerDownButOneBurstDoesNot() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        let viewer = try viewerOnTopLayer(&selector, &source)
        let lossy = LayerSelector.downshiftLoss
        // Just under the threshold never counts, however long.
        for step in 1 ... 40 { selector.receiverReport(fractionLost: lossy - 1, from: viewer, now: .ms(step * 500)) }
        #expect(selector.targetLayer(of: viewer) == 2)
        // One lossy report, then a clean one, then lossy again: the run restarts. (Lossy reports
        // further apart than the window do not form a run either: the next run starts at 40 s.)
        var now = Duration.seconds(30)
        selector.receiverReport(fractionLost: 255, from: viewer, now: now)
        selector.receiverReport(fractionLost: 0, from: viewer, now: now + .ms(500))
        selector.receiverReport(fractionLost: lossy, from: viewer, now: now + LayerSelector.downshiftAfter + .ms(500))
        #expect(selector.targetLayer(of: viewer) == 2)
        // A sustained run: the second report one nanosecond short of the window is not enough…
        now = .seconds(40)
        selector.receiverReport(fractionLost: lossy, from: viewer, now: now)
        selector.receiverReport(fractionLost: lossy, from: viewer, now: now + LayerSelector.downshiftAfter - .nanoseconds(1))
        #expect(selector.targetLayer(of: viewer) == 2)
        // …at the window it is.
        selector.receiverReport(fractionLost: lossy, from: viewer, now: now + LayerSelector.downshiftAfter)
        #expect(selector.targetLayer(of: viewer) == 0)
        #expect(selector.statistics.downshifts == 1)
        // The viewer keeps layer 2 until layer 0's keyframe, which the relay asks for.
        #expect(requests(drain(&selector, now: now + .seconds(1))) == [try KeyframeRequest(streamID: 100, layer: 0)])
        for header in try source.frame(layer: 2) { selector.observe(header, now: now + .seconds(1)); #expect(selector.forwards(header, to: viewer)) }
        for header in try source.frame(layer: 0, keyframe: true) { selector.observe(header, now: now + .seconds(1)); #expect(selector.forwards(header, to: viewer)) }
        #expect(selector.currentLayer(of: viewer) == 0)
        // Still lossy at the lowest layer: nowhere further down, nothing changes.
        for step in 0 ..< 10 { selector.receiverReport(fractionLost: 200, from: viewer, now: now + .seconds(2) + .ms(step * 500)) }
        #expect(selector.targetLayer(of: viewer) == 0 && selector.statistics.downshifts == 1)
    }

    @Test func sustainedRecoveryMovesTheViewerBackUpWithHysteresis() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        let viewer = try viewerOnTopLayer(&selector, &source)
        selector.receiverReport(fractionLost: 100, from: viewer, now: .seconds(1))
        selector.receiverReport(fractionLost: 100, from: viewer, now: .seconds(2))
        #expect(selector.targetLayer(of: viewer) == 0)
        #expect(requests(drain(&selector, now: .seconds(2))).map(\.layer) == [0])
        for header in try source.frame(layer: 0, keyframe: true) { selector.observe(header, now: .seconds(2)) }
        #expect(selector.currentLayer(of: viewer) == 0)
        let clean = LayerSelector.upshiftLoss
        // Clean reports for just under the upshift window: stays down.
        let start = Duration.seconds(3)
        var t = start
        while t < start + LayerSelector.upshiftAfter {
            selector.receiverReport(fractionLost: clean, from: viewer, now: t)
            t += .ms(500)
        }
        selector.receiverReport(fractionLost: clean, from: viewer, now: start + LayerSelector.upshiftAfter - .nanoseconds(1))
        #expect(selector.targetLayer(of: viewer) == 0)
        // A report between the thresholds breaks the clean run: the window starts over.
        selector.receiverReport(fractionLost: clean + 1, from: viewer, now: start + LayerSelector.upshiftAfter - .ms(1))
        selector.receiverReport(fractionLost: clean, from: viewer, now: start + LayerSelector.upshiftAfter)
        #expect(selector.targetLayer(of: viewer) == 0)
        let restart = start + LayerSelector.upshiftAfter
        selector.receiverReport(fractionLost: 0, from: viewer, now: restart + LayerSelector.upshiftAfter)
        #expect(selector.targetLayer(of: viewer) == 2)
        #expect(selector.statistics.upshifts == 1)
        #expect(requests(drain(&selector, now: restart + LayerSelector.upshiftAfter)).map(\.layer) == [2])
    }

    @Test func layersLearnedLateAndRestartedStreams() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        // A viewer that joins before any packet has no target and nothing to request.
        let viewer = try selector.addViewer(maximumLayer: 2, now: .zero)
        #expect(selector.targetLayer(of: viewer) == nil && drain(&selector, now: .zero).isEmpty && selector.nextDeadline == nil)
        for header in try source.frame(layer: 0) { selector.observe(header, now: .ms(5)) }
        #expect(selector.targetLayer(of: viewer) == 0 && selector.availableLayers == 0b001)
        #expect(requests(drain(&selector, now: .ms(5))).map(\.layer) == [0])
        for header in try source.frame(layer: 2) { selector.observe(header, now: .ms(6)) }
        #expect(selector.targetLayer(of: viewer) == 2 && selector.availableLayers == 0b101)
        #expect(requests(drain(&selector, now: .ms(6))).map(\.layer) == [2])
        for header in try source.frame(layer: 2, keyframe: true) { selector.observe(header, now: .ms(40)) }
        #expect(selector.currentLayer(of: viewer) == 2)
        _ = drain(&selector, now: .ms(40))
        // The sharer restarts layer 2 under a new stream id: the viewer waits for its keyframe.
        source.streams[2] = 202
        let restarted = try source.frame(layer: 2)
        selector.observe(restarted[0], now: .ms(70))
        #expect(!selector.forwards(restarted[0], to: viewer))
        #expect(requests(drain(&selector, now: .ms(70))) == [try KeyframeRequest(streamID: 202, layer: 2)])
        for header in try source.frame(layer: 2, keyframe: true) {
            selector.observe(header, now: .ms(100))
            #expect(selector.forwards(header, to: viewer))
        }
    }

    @Test func aViewersOwnKeyframeRequestIsForwardedAndRateLimited() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        let viewer = try viewerOnTopLayer(&selector, &source)
        selector.keyframeWanted(by: viewer)
        // The join request went out at 0: this one is held for the interval.
        #expect(drain(&selector, now: .ms(100)).isEmpty)
        #expect(selector.nextDeadline == LayerSelector.keyframeRequestInterval)
        #expect(requests(drain(&selector, now: .ms(500))) == [try KeyframeRequest(streamID: 102, layer: 2)])
        // Asked again and answered by a keyframe before the interval: nothing is sent.
        selector.keyframeWanted(by: viewer)
        for header in try source.frame(layer: 2, keyframe: true) { selector.observe(header, now: .ms(700)) }
        #expect(drain(&selector, now: .seconds(5)).isEmpty)
    }

    @Test func removedViewersAndTheViewerLimit() throws {
        var selector = LayerSelector()
        var source = SimulcastSource()
        try announceLayers(&selector, &source, now: .zero)
        let viewer = try selector.addViewer(maximumLayer: 2, now: .zero)
        selector.removeViewer(viewer)
        #expect(drain(&selector, now: .zero).isEmpty)
        let header = try source.frame(layer: 2, keyframe: true)[0]
        selector.observe(header, now: .ms(1))
        #expect(!selector.forwards(header, to: viewer) && selector.currentLayer(of: viewer) == nil)
        #expect(!selector.forwards(header, to: LayerSelector.Viewer(index: 9_999)))
        var full = LayerSelector()
        for _ in 0 ..< LayerSelector.maxViewers { _ = try full.addViewer(maximumLayer: 0, now: .zero) }
        #expect(throws: WireError.tooLarge(field: "viewers", size: LayerSelector.maxViewers + 1, limit: LayerSelector.maxViewers)) {
            try full.addViewer(maximumLayer: 0, now: .zero)
        }
        // A freed slot is reused, so the limit counts viewers present, not viewers ever seen.
        full.removeViewer(LayerSelector.Viewer(index: 17))
        #expect(try full.addViewer(maximumLayer: 0, now: .zero).index == 17)
    }

    /// A seeded simulation: a sender answering keyframe requests after a delay, viewers joining,
    /// leaving, changing quality and reporting random loss. Invariants checked on every packet:
    /// each viewer's packets come from one stream at a time, each stream it is switched to starts
    /// at the first fragment of a keyframe, and requests for a layer are never closer than the interval.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func simulationKeepsTheInvariants(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var selector = LayerSelector()
        var source = SimulcastSource()
        var viewers: [LayerSelector.Viewer] = []
        var lastStream: [Int: UInt32] = [:]
        var lastRequestAt: [MediaLayer: Duration] = [:]
        var keyframeDue: [MediaLayer: Duration] = [:]
        var lossyPath: [Int: Bool] = [:]
        var switches = 0
        for tick in 0 ..< 3_000 {
            let now = Duration.ms(tick * 33)
            switch random.next() % 100 {
            case 0 ..< 3 where viewers.count < 12:
                viewers.append(try selector.addViewer(maximumLayer: MediaLayer(random.next() % 3), now: now))
            case 3 where !viewers.isEmpty && random.next() % 4 == 0:
                let leaving = viewers.remove(at: Int(random.next() % UInt64(viewers.count)))
                selector.removeViewer(leaving)
                lastStream[leaving.index] = nil
                lossyPath[leaving.index] = nil
            case 4 ..< 7 where !viewers.isEmpty:
                // A viewer's path turns lossy or recovers.
                let viewer = viewers[Int(random.next() % UInt64(viewers.count))]
                lossyPath[viewer.index] = !(lossyPath[viewer.index] ?? false)
            case 8 where !viewers.isEmpty:
                try selector.setMaximumLayer(MediaLayer(random.next() % 3), for: viewers[Int(random.next() % UInt64(viewers.count))])
            default: break
            }
            if tick % 15 == 0 {
                // Every viewer reports every 500 ms: 10–40 % loss on a lossy path, 0–2 % otherwise.
                for viewer in viewers {
                    let loss = (lossyPath[viewer.index] ?? false) ? 26 + random.next() % 77 : random.next() % 6
                    selector.receiverReport(fractionLost: UInt8(loss), from: viewer, now: now)
                }
            }
            for layer in [MediaLayer(0), 2] {
                let keyframe = keyframeDue[layer].map { now >= $0 } ?? (tick % 300 == 0)
                if keyframe { keyframeDue[layer] = nil }
                for header in try source.frame(layer: layer, keyframe: keyframe, fragments: 1 + Int(random.next() % 4)) {
                    selector.observe(header, now: now)
                    for viewer in viewers where selector.forwards(header, to: viewer) {
                        if lastStream[viewer.index] != header.streamID {
                            #expect(header.isKeyframe && header.isFirstFragment, "switched into stream \(header.streamID) mid-frame")
                            lastStream[viewer.index] = header.streamID
                            switches += 1
                        }
                    }
                }
            }
            while let output = selector.pollOutput(now: now) {
                guard case .keyframeRequest(let request) = output else { continue }
                if let last = lastRequestAt[request.layer] { #expect(now - last >= LayerSelector.keyframeRequestInterval) }
                lastRequestAt[request.layer] = now
                // The sender answers after 50 ms; 10 % of requests are lost on the way.
                if random.next() % 10 != 0, keyframeDue[request.layer] == nil { keyframeDue[request.layer] = now + .ms(50) }
            }
        }
        #expect(switches > 10)
        #expect(selector.statistics.downshifts > 0 && selector.statistics.upshifts > 0)
    }
}
