/// One captured screen in, one VP8 frame per simulcast layer out (issue 6, item 1): the chosen top
/// quality and a 360p layer, each with its own encoder tuned for screen content, its own stream id
/// and layer number (`VideoQuality.layer`), its own bitrate controller and keyframes on request.
/// With a 360p top quality there is one layer.
///
/// Each capture is converted to I420 once at its own size, then box-scaled to each layer's size
/// (box averaging keeps thin text strokes). If the captured size changes (a resized window), a
/// layer whose output size changes gets a new encoder, whose first frame is a keyframe.
public final class SimulcastEncoder {
    public struct Layer: Equatable, Sendable {
        public let quality: VideoQuality
        public let layer: UInt8
        public let streamID: UInt32
        /// The picture size of the last frame encoded (zero before the first).
        public internal(set) var size: PixelSize
        public internal(set) var bitrate: Int
        public internal(set) var frames = 0
        public internal(set) var keyframes = 0
        public internal(set) var bytes = 0
    }

    /// One encoded frame of one layer.
    public struct LayerFrame: Sendable {
        public let layer: UInt8
        public let streamID: UInt32
        public let frame: EncodedVideoFrame
    }

    public let fps: Int
    public private(set) var layers: [Layer]
    private var encoders: [VP8Encoder?]
    private var controllers: [BitrateController]
    private var reportWindows: [LayerReportWindow]
    private var keyframeWanted: [Bool]
    private let cpuUsed: Int
    private let threads: Int

    /// - Parameters:
    ///   - top: the highest quality offered; a 360p layer is added below it unless it is 360p.
    ///   - streamID: the stream id of each layer, from its layer number (the caller keeps them
    ///     unique per share, e.g. a random base plus the layer).
    public init(top: VideoQuality, fps: Int = 30, threads: Int = 1, cpuUsed: Int = -6,
                streamID: (UInt8) -> UInt32) throws {
        guard VP8Encoder.fpsRange.contains(fps) else { throw MediaError.codec("VP8 fps \(fps) is outside \(VP8Encoder.fpsRange)") }
        let qualities: [VideoQuality] = top == .p360 ? [.p360] : [.p360, top]
        layers = qualities.map {
            Layer(quality: $0, layer: $0.layer, streamID: streamID($0.layer), size: PixelSize(width: 0, height: 0),
                  bitrate: $0.bitrateBounds.start)
        }
        guard Set(layers.map(\.streamID)).count == layers.count else {
            throw MediaError.codec("simulcast layers need distinct stream ids")
        }
        encoders = qualities.map { _ in nil }
        controllers = qualities.map { BitrateController(bounds: $0.bitrateBounds) }
        reportWindows = qualities.map { _ in LayerReportWindow() }
        keyframeWanted = qualities.map { _ in false }
        self.fps = fps
        self.cpuUsed = cpuUsed
        self.threads = threads
    }

    private func index(ofStream stream: UInt32) -> Int? { layers.firstIndex { $0.streamID == stream } }

    /// The relay (or a viewer) asked for a keyframe on this stream: the layer's next frame is one.
    /// Returns false for a stream that is not ours.
    @discardableResult
    public func keyframeRequested(streamID: UInt32) -> Bool {
        guard let index = index(ofStream: streamID) else { return false }
        keyframeWanted[index] = true
        return true
    }

    /// A receiver report about one of our streams: joins the layer's report window; when the
    /// window closes, its median adapts that layer's bitrate (`LayerReportWindow`). Returns the
    /// new bitrate when it changed (nil too for a stream that is not ours).
    @discardableResult
    public func receiverReport(streamID: UInt32, fractionLost: UInt8, jitter: Duration, now: Duration) throws -> Int? {
        guard let index = index(ofStream: streamID) else { return nil }
        guard let median = reportWindows[index].add(fractionLost: fractionLost, jitter: jitter, now: now),
              let bitrate = controllers[index].receiverReport(fractionLost: median.fractionLost, jitter: median.jitter, now: now)
        else { return nil }
        try encoders[index]?.setBitrate(bitrate)
        layers[index].bitrate = bitrate
        return bitrate
    }

    /// Encodes one capture for every layer.
    public func encode(_ capture: BorrowedScreenFrame, pts: Int64? = nil) throws -> [LayerFrame] {
        // Odd capture sizes are cropped by one pixel so that conversion sees even dimensions.
        let picture = try ColorConversion.bgraToI420(capture.pixels, width: capture.width & ~1, height: capture.height & ~1,
                                                     stride: capture.stride)
        return try encode(picture, pts: pts)
    }

    /// Encodes one full-size picture for every layer.
    public func encode(_ picture: I420Frame, pts: Int64? = nil) throws -> [LayerFrame] {
        var out: [LayerFrame] = []
        out.reserveCapacity(layers.count)
        for index in layers.indices {
            let target = layers[index].quality.outputSize(sourceWidth: picture.width, sourceHeight: picture.height)
            let scaled = target.width == picture.width && target.height == picture.height
                ? picture
                : try ColorConversion.scale(picture, width: target.width, height: target.height, filter: .box)
            let encoder = try encoderFor(index, size: target)
            let force = keyframeWanted[index]
            keyframeWanted[index] = false
            for frame in try encoder.encode(scaled, forceKeyframe: force, pts: pts) {
                layers[index].frames += 1
                layers[index].bytes += frame.data.count
                if frame.isKeyframe { layers[index].keyframes += 1 }
                out.append(LayerFrame(layer: layers[index].layer, streamID: layers[index].streamID, frame: frame))
            }
        }
        return out
    }

    private func encoderFor(_ index: Int, size: PixelSize) throws -> VP8Encoder {
        if let encoder = encoders[index], encoder.width == size.width, encoder.height == size.height { return encoder }
        let encoder = try VP8Encoder(width: size.width, height: size.height, bitrate: controllers[index].bitrate, fps: fps,
                                     threads: threads, cpuUsed: cpuUsed, screenContent: true)
        encoders[index] = encoder
        layers[index].size = size
        return encoder
    }
}
