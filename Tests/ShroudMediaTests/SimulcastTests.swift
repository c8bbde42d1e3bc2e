import Testing
import ShroudTestSupport
@testable import ShroudMedia

@Suite("Bitrate controller")
struct BitrateControllerTests {
    let bounds = VideoQuality.p1080.bitrateBounds

    @Test func lossAtTheThresholdDecreasesOneBelowDoesNot() {
        var controller = BitrateController(bounds: bounds)
        #expect(controller.bitrate == 2_500_000)
        // Below the decrease threshold but above the increase one: held.
        #expect(controller.receiverReport(fractionLost: BitrateController.decreaseLoss - 1, jitter: .zero, now: .zero) == nil)
        let lowered = controller.receiverReport(fractionLost: BitrateController.decreaseLoss, jitter: .zero, now: .seconds(1))
        // Half the loss fraction: 26/256 / 2 ≈ 5.1 %.
        #expect(lowered == Int(2_500_000 * (1 - 0.5 * 26.0 / 256)))
    }

    @Test func decreasesAreHeldOffAndClampedAtTheMinimum() {
        var controller = BitrateController(bounds: bounds)
        _ = controller.receiverReport(fractionLost: 128, jitter: .zero, now: .zero)
        let afterOne = controller.bitrate
        #expect(afterOne == 1_875_000)
        // Another lossy report just inside the hold-off changes nothing; at the hold-off it does.
        #expect(controller.receiverReport(fractionLost: 128, jitter: .zero, now: BitrateController.decreaseHoldoff - .nanoseconds(1)) == nil)
        #expect(controller.receiverReport(fractionLost: 128, jitter: .zero, now: BitrateController.decreaseHoldoff) != nil)
        for step in 2 ..< 40 { _ = controller.receiverReport(fractionLost: 255, jitter: .zero, now: .milliseconds(500 * step)) }
        #expect(controller.bitrate == bounds.minimum)
    }

    @Test func probesUpSlowlyAfterSettlingAndStopsAtTheMaximum() {
        var controller = BitrateController(bounds: bounds)
        _ = controller.receiverReport(fractionLost: 100, jitter: .zero, now: .zero)
        let lowered = controller.bitrate
        // Clean reports every 500 ms: nothing until `probeAfterDecrease`, then one step per second.
        var increases: [Duration] = []
        var now = Duration.zero
        while now < .seconds(10) {
            now += .milliseconds(500)
            if controller.receiverReport(fractionLost: 0, jitter: .milliseconds(2), now: now) != nil { increases.append(now) }
        }
        #expect(increases.first == BitrateController.probeAfterDecrease)
        #expect(zip(increases, increases.dropFirst()).allSatisfy { $1 - $0 >= BitrateController.increaseInterval })
        #expect(increases.count == 8)
        #expect(controller.bitrate > lowered && Double(controller.bitrate) < Double(lowered) * 1.5)
        for step in 0 ..< 200 { _ = controller.receiverReport(fractionLost: 0, jitter: .zero, now: now + .seconds(step)) }
        #expect(controller.bitrate == bounds.maximum)
    }

    @Test func risingDelayDecreasesAndNoisyDelayDoesNot() {
        var controller = BitrateController(bounds: bounds)
        // A rise of exactly the threshold over four reports, never falling: a building queue.
        let rising: [Duration] = [.milliseconds(2), .milliseconds(5), .milliseconds(9), .milliseconds(12)]
        var changed: Int?
        for (step, jitter) in rising.enumerated() {
            changed = controller.receiverReport(fractionLost: 10, jitter: jitter, now: .milliseconds(500 * step))
        }
        #expect(controller.delayIsRising == false) // the trend is cleared after it acted
        #expect(changed == Int(2_500_000 * BitrateController.delayDecreaseFactor))
        // One millisecond short of the threshold, or one fall inside the window: no decrease.
        var short = BitrateController(bounds: bounds)
        for (step, ms) in [2, 5, 9, 11].enumerated() { _ = short.receiverReport(fractionLost: 10, jitter: .milliseconds(ms), now: .seconds(step)) }
        #expect(short.bitrate == 2_500_000)
        var noisy = BitrateController(bounds: bounds)
        for (step, ms) in [2, 15, 9, 30].enumerated() { _ = noisy.receiverReport(fractionLost: 10, jitter: .milliseconds(ms), now: .seconds(step)) }
        #expect(noisy.bitrate == 2_500_000)
    }

    /// A link of fixed capacity on a virtual clock: what exceeds it is lost, reports every 500 ms.
    /// The controller settles near the capacity rather than far below or above it.
    @Test(arguments: [1_200_000, 3_000_000])
    func settlesNearTheCapacityOfAConstrainedLink(capacity: Int) {
        var controller = BitrateController(bounds: bounds)
        var rates: [Int] = []
        for step in 1 ... 240 {
            let rate = controller.bitrate
            let loss = rate > capacity ? Double(rate - capacity) / Double(rate) : 0
            _ = controller.receiverReport(fractionLost: UInt8(min(255, (loss * 256).rounded())), jitter: .zero,
                                          now: .milliseconds(500 * step))
            rates.append(controller.bitrate)
        }
        let lastMinute = rates.suffix(120)
        let average = Double(lastMinute.reduce(0, +)) / Double(lastMinute.count)
        #expect(average > Double(capacity) * 0.8 && average < Double(capacity) * 1.12, "average \(average)")
        #expect(rates.allSatisfy { bounds.minimum ... bounds.maximum ~= $0 })
    }

    @Test func boundsAndLayersOfEachQuality() {
        for quality in VideoQuality.allCases {
            let b = quality.bitrateBounds
            #expect(b.minimum < b.start && b.start < b.maximum)
            #expect(VP8Encoder.bitrateRange.contains(b.minimum) && VP8Encoder.bitrateRange.contains(b.maximum))
            #expect(VideoQuality(layer: quality.layer) == quality)
        }
        #expect(VideoQuality(layer: 3) == nil)
    }
}

/// A 1080p picture with text-like detail: thin dark strokes on light rows, shifted by `offset`
/// rows (a scroll).
func textLikePicture(width: Int = 1920, height: Int = 1080, offset: Int = 0) throws -> I420Frame {
    var picture = try I420Frame(width: width, height: height, luma: 220)
    for y in 0 ..< height {
        let row = (y + offset) % 24
        guard row >= 4, row < 17 else { continue }
        for x in 0 ..< width where (x / 2 + (y + offset) / 24 * 7) % 9 < 2 || (x % 11 == 0 && row % 3 == 0) {
            picture.y[y * width + x] = 30
        }
    }
    return picture
}

@Suite("Simulcast encoder")
struct SimulcastEncoderTests {
    @Test func aTopLayerAndA360pLayerFromOneCapture() throws {
        let encoder = try SimulcastEncoder(top: .p1080, streamID: { 0x5000 + UInt32($0) })
        #expect(encoder.layers.map(\.layer) == [0, 2])
        #expect(encoder.layers.map(\.streamID) == [0x5000, 0x5002])
        let source = try Fixtures.screen("screen-text")
        let decoders = [try VP8Decoder(), try VP8Decoder()]
        var last: [UInt8: I420Frame] = [:]
        for index in 0 ..< 30 {
            let frames = try encoder.encode(source)
            #expect(frames.map(\.layer) == [0, 2])
            #expect(frames.allSatisfy { $0.frame.isKeyframe == (index == 0) })
            for (slot, frame) in frames.enumerated() { last[frame.layer] = try decoders[slot].decode(frame.frame.data).first }
        }
        let small = try #require(last[0]), full = try #require(last[2])
        #expect(small.width == 640 && small.height == 360)
        #expect(full.width == 1920 && full.height == 1080)
        let reference360 = try ColorConversion.scale(source, width: 640, height: 360, filter: .box)
        let psnrFull = try PictureQuality(reference: source, reconstruction: full).lumaPSNR
        let psnrSmall = try PictureQuality(reference: reference360, reconstruction: small).lumaPSNR
        // The bar of the single-encoder VP8 tests: ≥ 35 dB after one second of a still text screen.
        print("simulcast still text after 30 frames: 1080p \(psnrFull) dB, 360p \(psnrSmall) dB")
        #expect(psnrFull >= 35 && psnrSmall >= 35)
        #expect(encoder.layers.allSatisfy { $0.frames == 30 && $0.keyframes == 1 && $0.bytes > 0 })
    }

    @Test func keyframesOnRequestPerLayer() throws {
        let encoder = try SimulcastEncoder(top: .p720, streamID: { 7 + UInt32($0) })
        #expect(encoder.layers.map(\.layer) == [0, 1])
        let source = try textLikePicture(width: 1280, height: 720)
        for _ in 0 ..< 3 { _ = try encoder.encode(source) }
        #expect(encoder.keyframeRequested(streamID: 8))   // layer 1
        #expect(!encoder.keyframeRequested(streamID: 99)) // not ours
        let frames = try encoder.encode(source)
        #expect(frames.map(\.frame.isKeyframe) == [false, true])
        #expect(try encoder.encode(source).map(\.frame.isKeyframe) == [false, false])
        #expect(encoder.layers.map(\.size) == [PixelSize(width: 640, height: 360), PixelSize(width: 1280, height: 720)])
    }

    @Test func receiverReportsAdaptOnlyTheirLayer() throws {
        let encoder = try SimulcastEncoder(top: .p1080, streamID: { 100 + UInt32($0) })
        _ = try encoder.encode(try textLikePicture())
        // The first report opens layer 2's window; the one a window's length later closes it.
        #expect(try encoder.receiverReport(streamID: 102, fractionLost: 128, jitter: .zero, now: .seconds(1)) == nil)
        let lowered = try encoder.receiverReport(streamID: 102, fractionLost: 128, jitter: .zero, now: .seconds(1) + LayerReportWindow.length)
        #expect(lowered == 1_875_000)
        #expect(encoder.layers.map(\.bitrate) == [500_000, 1_875_000])
        #expect(try encoder.receiverReport(streamID: 55, fractionLost: 255, jitter: .zero, now: .seconds(2)) == nil)
        // The encoder keeps working at the new rate.
        #expect(try encoder.encode(try textLikePicture(offset: 3)).count == 2)
    }

    @Test func oneLossyWatcherAmongCleanOnesDoesNotCutTheLayer() throws {
        let encoder = try SimulcastEncoder(top: .p720, streamID: { 100 + UInt32($0) })
        let start = encoder.layers[0].bitrate
        // Three watchers of layer 0 report every 500 ms; one of them loses half its packets.
        var now = Duration.zero
        for _ in 0 ..< 10 {
            for loss: UInt8 in [0, 128, 0] { _ = try encoder.receiverReport(streamID: 100, fractionLost: loss, jitter: .zero, now: now) }
            now += .milliseconds(500)
        }
        // Never cut (reacting to each report alone would have halved it several times).
        let held = encoder.layers[0].bitrate
        #expect(held >= start)
        // Two of the three lossy: the window's median is lossy and the layer backs off.
        for _ in 0 ..< 3 {
            for loss: UInt8 in [128, 128, 0] { _ = try encoder.receiverReport(streamID: 100, fractionLost: loss, jitter: .zero, now: now) }
            now += .milliseconds(500)
        }
        #expect(encoder.layers[0].bitrate < held)
    }

    @Test func aReportWindowClosesAtItsLengthAndNotBefore() {
        var window = LayerReportWindow()
        #expect(window.add(fractionLost: 200, jitter: .milliseconds(9), now: .seconds(5)) == nil)
        #expect(window.add(fractionLost: 10, jitter: .milliseconds(1), now: .seconds(5) + LayerReportWindow.length - .nanoseconds(1)) == nil)
        let closed = window.add(fractionLost: 20, jitter: .milliseconds(3), now: .seconds(5) + LayerReportWindow.length)
        #expect(closed?.fractionLost == 20 && closed?.jitter == .milliseconds(3))
        // The next window opened at the close: a single lossy report a window later is its median.
        #expect(window.add(fractionLost: 90, jitter: .zero, now: .seconds(5) + LayerReportWindow.length * 2)?.fractionLost == 90)
    }

    @Test func reportsPastAWindowsLimitAreIgnored() {
        var window = LayerReportWindow()
        for _ in 0 ..< LayerReportWindow.maximumReports { _ = window.add(fractionLost: 0, jitter: .zero, now: .zero) }
        #expect(window.ignored == 0)
        _ = window.add(fractionLost: 255, jitter: .zero, now: .zero)
        #expect(window.ignored == 1)
        #expect(window.add(fractionLost: 255, jitter: .zero, now: LayerReportWindow.length)?.fractionLost == 0)
    }

    @Test func a360pShareHasOneLayerAndAResizeStartsAFreshKeyframe() throws {
        let single = try SimulcastEncoder(top: .p360, streamID: { UInt32($0) })
        #expect(single.layers.map(\.quality) == [.p360])
        #expect(try single.encode(try textLikePicture(width: 1280, height: 720)).map(\.frame.isKeyframe) == [true])
        #expect(try single.encode(try textLikePicture(width: 1280, height: 720)).map(\.frame.isKeyframe) == [false])
        // Same shape, larger: the 360p picture is the same size, so the encoder carries on.
        #expect(try single.encode(try textLikePicture(width: 1920, height: 1080)).map(\.frame.isKeyframe) == [false])
        // Another shape: a new encoder at the new size, which starts with a keyframe.
        let frames = try single.encode(try textLikePicture(width: 1280, height: 1024))
        #expect(frames.map(\.frame.isKeyframe) == [true])
        #expect(single.layers[0].size == PixelSize(width: 450, height: 360))
        let grown = try SimulcastEncoder(top: .p1080, streamID: { UInt32($0) })
        _ = try grown.encode(try textLikePicture(width: 1280, height: 720))
        #expect(grown.layers.map(\.size) == [PixelSize(width: 640, height: 360), PixelSize(width: 1280, height: 720)])
        #expect(try grown.encode(try textLikePicture()).map(\.frame.isKeyframe) == [false, true])
        #expect(throws: MediaError.self) { try SimulcastEncoder(top: .p720, streamID: { _ in 1 }) }
        #expect(throws: MediaError.self) { try SimulcastEncoder(top: .p720, fps: 0, streamID: { UInt32($0) }) }
    }

    @Test func encodesACapturedScreen() throws {
        let server = try XvfbServer(width: 1280, height: 720)
        let display = try X11Display(name: server.displayName)
        let capturer = try ScreenCapturer(display: display, source: .rootWindow)
        let encoder = try SimulcastEncoder(top: .p720, streamID: { UInt32($0) })
        let frames = try capturer.withNextFrame { try encoder.encode($0) }
        #expect(frames.map(\.layer) == [0, 1] && frames.allSatisfy(\.frame.isKeyframe))
    }
}
