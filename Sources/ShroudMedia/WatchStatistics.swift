/// The figures a screen watcher shows (issue 6, item 4: fps, bitrate, layer, loss, frame delay),
/// computed from what it received. Pure: time is a `Duration` since any fixed origin.
///
/// - **fps** and **bitrate**: frames shown and their bytes within the last `window`.
/// - **layer** and **size**: of the last frame shown.
/// - **loss**: the fraction lost of the last receiver report, in percent.
/// - **frame delay**: how much later than the earliest frame the last one arrived, against its
///   media time (frame number × frame interval): the queueing and jitter a frame met on its way,
///   measurable without synchronised clocks. Its floor is the lowest transit in the last
///   `delayFloorFrames` frames, so a stream that settles is not blamed for an early spike.
public struct WatchStatistics: Sendable {
    public static let window: Duration = .seconds(1)
    /// Frames whose transit forms the delay floor: 10 s at 30 fps.
    public static let delayFloorFrames = 300

    public struct Snapshot: Equatable, Sendable {
        public var framesPerSecond: Int
        public var bitsPerSecond: Int
        public var layer: UInt8?
        public var width: Int
        public var height: Int
        public var lossPercent: Double
        public var frameDelay: Duration
    }

    public let frameInterval: Duration
    private var recent: [(at: Duration, bytes: Int)] = []
    private var transits: [Duration] = []
    private var last: (layer: UInt8, width: Int, height: Int, transit: Duration)?
    private var lossPercent = 0.0

    public init(framesPerSecond: Int = 30) {
        frameInterval = .seconds(1) / max(1, framesPerSecond)
    }

    /// A frame was decoded and shown.
    public mutating func frameShown(frameNumber: UInt32, bytes: Int, layer: UInt8, width: Int, height: Int, now: Duration) {
        recent.append((now, bytes))
        recent.removeAll { now - $0.at >= Self.window }
        let transit = now - frameInterval * Int(frameNumber)
        transits.append(transit)
        if transits.count > Self.delayFloorFrames { transits.removeFirst(transits.count - Self.delayFloorFrames) }
        last = (layer, width, height, transit)
    }

    /// The stream changed (another layer, another stream id): media times start over.
    public mutating func streamChanged() {
        transits.removeAll()
    }

    public mutating func reportSent(fractionLost: UInt8) {
        lossPercent = Double(fractionLost) * 100 / 256
    }

    public func snapshot(now: Duration) -> Snapshot {
        let inWindow = recent.filter { now - $0.at < Self.window }
        let floor = transits.min() ?? .zero
        return Snapshot(framesPerSecond: inWindow.count, bitsPerSecond: inWindow.reduce(0) { $0 + $1.bytes } * 8,
                        layer: last?.layer, width: last?.width ?? 0, height: last?.height ?? 0, lossPercent: lossPercent,
                        frameDelay: last.map { $0.transit - floor } ?? .zero)
    }
}
