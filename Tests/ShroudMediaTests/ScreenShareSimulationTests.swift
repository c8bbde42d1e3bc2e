import Testing
import ShroudRelayCore
import ShroudTestSupport
import ShroudWire
@testable import ShroudMedia

/// The screen-sharing cores together on virtual time, with the real codec: a `SimulcastEncoder`
/// (720p + 360p) → packetizer → relay (`LayerSelector`, one `RetransmissionCache` per stream) →
/// per-viewer downlinks → `VideoReceiver` → `VP8Decoder`. Feedback flows back: NACKs to the relay's
/// cache, receiver reports to the selector and the sender, keyframe requests from the selector
/// (and from receivers, through the selector) to the sender. No sockets: the links are queues
/// with seeded loss and delay.
@Suite("Screen share simulation")
struct ScreenShareSimulationTests {
    struct Datagram { var at: Duration; var bytes: [UInt8]; var viewer: Int? }

    final class Viewer {
        var receiver = VideoReceiver()
        let decoder: VP8Decoder
        var handle: LayerSelector.Viewer
        var loss = 0.0
        var sizes: [(at: Duration, width: Int)] = []
        var decodeErrors = 0
        var frames = 0
        var lastPicture: I420Frame?
        var lastFrameNumber: UInt32 = 0
        init(handle: LayerSelector.Viewer) throws {
            self.handle = handle
            decoder = try VP8Decoder()
        }
    }

    @Test func aLossyViewerMovesToTheLowerLayerAndBackWhileAnotherKeepsTheTopLayer() throws {
        var random = SplitMix64(seed: 2026)
        let encoder = try SimulcastEncoder(top: .p720, streamID: { 0x700 + UInt32($0) })
        var packetizers = [UInt32: MediaPacketizer]()
        var caches = [UInt32: RetransmissionCache]()
        for layer in encoder.layers {
            packetizers[layer.streamID] = try MediaPacketizer(streamID: layer.streamID)
            caches[layer.streamID] = try RetransmissionCache(capacity: RetransmissionCache.maxCapacity)
        }
        var selector = LayerSelector()
        let steady = try Viewer(handle: selector.addViewer(maximumLayer: 1, now: .zero))
        let lossy = try Viewer(handle: selector.addViewer(maximumLayer: 1, now: .zero))
        let viewers = [steady, lossy]
        let pictures = try (0 ..< 4).map { try textLikePicture(width: 1280, height: 720, offset: $0 * 8) }
        var downlink: [Datagram] = []   // relay → viewer
        var uplink: [Datagram] = []     // viewer → relay (NACKs, reports, keyframe requests)
        func send(_ bytes: [UInt8], to viewer: Int, now: Duration) {
            guard Double(random.next() % 10_000) / 10_000 >= viewers[viewer].loss else { return }
            downlink.append(Datagram(at: now + .milliseconds(10 + Int(random.next() % 6)), bytes: bytes, viewer: viewer))
        }
        func relay(_ bytes: [UInt8], now: Duration) throws {
            let header = try MediaRoutingHeader(parsing: bytes)
            try caches[header.streamID]?.store(sequence: header.sequence, datagram: bytes)
            selector.observe(header, now: now)
            for (index, viewer) in viewers.enumerated() where selector.forwards(header, to: viewer.handle) {
                send(bytes, to: index, now: now)
            }
        }
        func drainSelector(now: Duration) {
            while let output = selector.pollOutput(now: now) {
                if case .keyframeRequest(let request) = output { encoder.keyframeRequested(streamID: request.streamID) }
            }
        }

        let lossStarts = Duration.seconds(3), lossEnds = Duration.seconds(10)
        for ms in 0 ..< 21_000 {
            let now = Duration.milliseconds(ms)
            lossy.loss = now >= lossStarts && now < lossEnds ? 0.2 : 0
            if ms % 33 == 0 {
                for layerFrame in try encoder.encode(pictures[(ms / 33) % 4]) {
                    guard var packetizer = packetizers[layerFrame.streamID] else { continue }
                    let packets = try packetizer.packetize(frame: layerFrame.frame.data, frameNumber: UInt32(ms / 33),
                                                           isKeyframe: layerFrame.frame.isKeyframe, layer: layerFrame.layer)
                    packetizers[layerFrame.streamID] = packetizer
                    for packet in packets { try relay(packet.serialized(), now: now) }
                }
            }
            drainSelector(now: now)
            let arrived = downlink.filter { $0.at <= now }
            downlink.removeAll { $0.at <= now }
            for datagram in arrived {
                guard let index = datagram.viewer else { continue }
                viewers[index].receiver.handle(try MediaPacket(parsing: datagram.bytes), now: now)
            }
            for (index, viewer) in viewers.enumerated() {
                while let output = viewer.receiver.pollOutput(now: now) {
                    switch output {
                    case .frame(let frame):
                        viewer.frames += 1
                        do {
                            if let picture = try viewer.decoder.decode(frame.bytes).last {
                                if viewer.sizes.last?.width != picture.width { viewer.sizes.append((now, picture.width)) }
                                viewer.lastPicture = picture
                                viewer.lastFrameNumber = frame.frameNumber
                            }
                        } catch { viewer.decodeErrors += 1 }
                    case .nack(let nack):
                        uplink.append(Datagram(at: now + .milliseconds(10), bytes: nack.serialized(), viewer: index))
                    case .report(let report):
                        uplink.append(Datagram(at: now + .milliseconds(10), bytes: report.serialized(), viewer: index))
                    case .keyframeRequest(let request):
                        uplink.append(Datagram(at: now + .milliseconds(10), bytes: request.serialized(), viewer: index))
                    }
                }
            }
            let toRelay = uplink.filter { $0.at <= now }
            uplink.removeAll { $0.at <= now }
            for datagram in toRelay {
                guard let index = datagram.viewer else { continue }
                let viewer = viewers[index]
                if let nack = try? NackPacket(parsing: datagram.bytes) {
                    for bytes in caches[nack.streamID]?.answer(nack).resend ?? [] { send(Array(bytes), to: index, now: now) }
                } else if let report = try? ReceiverReport(parsing: datagram.bytes) {
                    selector.receiverReport(fractionLost: report.fractionLost, from: viewer.handle, now: now)
                    try encoder.receiverReport(streamID: report.streamID, fractionLost: report.fractionLost,
                                               jitter: .microseconds(Int(report.jitterMicroseconds)), now: now)
                } else if (try? KeyframeRequest(parsing: datagram.bytes)) != nil {
                    selector.keyframeWanted(by: viewer.handle)
                }
            }
            drainSelector(now: now)
        }

        print("steady viewer: \(steady.frames) frames, sizes \(steady.sizes); lossy viewer: \(lossy.frames) frames, sizes \(lossy.sizes); \(selector.statistics)")
        // The steady viewer: 720p from its first keyframe to the end, every frame decodable.
        #expect(steady.sizes.map(\.width) == [1280])
        #expect(steady.decodeErrors == 0 && steady.frames > 600)
        // The lossy viewer: 720p, then 360p within 2 s of the loss starting, then 720p again within
        // 3 s of the upshift window after the loss ends.
        #expect(lossy.sizes.map(\.width) == [1280, 640, 1280])
        if lossy.sizes.count == 3 {
            #expect(lossy.sizes[1].at > lossStarts && lossy.sizes[1].at < lossStarts + .seconds(2))
            #expect(lossy.sizes[2].at > lossEnds + LayerSelector.upshiftAfter && lossy.sizes[2].at < lossEnds + LayerSelector.upshiftAfter + .seconds(3))
        }
        #expect(lossy.decodeErrors == 0)
        #expect(selector.statistics.downshifts == 1 && selector.statistics.upshifts == 1)
        // Still readable at the end on both (the scrolling pattern at 720p).
        for viewer in viewers {
            let picture = try #require(viewer.lastPicture)
            let expected = pictures[Int(viewer.lastFrameNumber) % 4]
            let psnr = try PictureQuality(reference: expected, reconstruction: picture).lumaPSNR
            print("last picture: \(psnr) dB")
            #expect(psnr > 25)
        }
    }
}
