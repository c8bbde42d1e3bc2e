/// The bitrates one simulcast layer may use, in bits per second at 30 fps.
public struct BitrateBounds: Equatable, Sendable {
    public var minimum: Int
    public var start: Int
    public var maximum: Int

    public init(minimum: Int, start: Int, maximum: Int) {
        self.minimum = minimum
        self.start = start
        self.maximum = maximum
    }
}

extension VideoQuality {
    /// Per-layer bounds. The start is the bitrate the PSNR tests hold to ≥ 35 dB on text (the
    /// quality's `defaultBitrate`); the minimum is where 13 px text is still legible after a
    /// second of a still screen; the maximum is twice the start, which a scrolling screen uses.
    public var bitrateBounds: BitrateBounds {
        switch self {
        case .p360: return BitrateBounds(minimum: 150_000, start: defaultBitrate, maximum: 1_000_000)
        case .p720: return BitrateBounds(minimum: 400_000, start: defaultBitrate, maximum: 2_400_000)
        case .p1080: return BitrateBounds(minimum: 800_000, start: defaultBitrate, maximum: 5_000_000)
        }
    }

    /// The simulcast layer number of this quality: 0, 1, 2 from the smallest. A viewer's quality
    /// request is then directly the highest layer it wants.
    public var layer: UInt8 {
        switch self {
        case .p360: return 0
        case .p720: return 1
        case .p1080: return 2
        }
    }

    public init?(layer: UInt8) {
        guard let quality = Self.allCases.first(where: { $0.layer == layer }) else { return nil }
        self = quality
    }
}

/// Sender-side bitrate adaptation for one video layer, driven by the receiver reports of that
/// layer's stream (docs/MEDIA.md, "Simulcast sender"). Pure: time comes in as a `Duration` since any
/// fixed origin.
///
/// - **Loss** at or above `decreaseLoss`: the rate drops by half the loss fraction (a 20 % loss
///   costs 10 %), as in GCC's loss-based controller.
/// - **Rising delay**: the reports carry inter-arrival jitter, not one-way delay, so a queue building
///   up in the path is seen as jitter that grows over the last `delayTrendReports` reports by at
///   least `delayRiseThreshold`; the rate drops to `delayDecreaseFactor` of itself.
/// - A decrease happens at most once per `decreaseHoldoff` (several viewers' reports about the same
///   congestion arrive together).
/// - **Probing up**: with loss at or below `increaseLoss` and no rising delay, the rate grows by
///   `increaseFactor` at most once per `increaseInterval`, and not until `probeAfterDecrease` has
///   passed since the last decrease.
/// - Between the loss thresholds the rate holds. The rate stays within the layer's bounds.
public struct BitrateController: Sendable {
    /// 26/256 ≈ 10 %: NACK can no longer repair this within a frame interval or two.
    public static let decreaseLoss: UInt8 = 26
    /// 5/256 ≈ 2 %: repaired by NACK, so the path has room.
    public static let increaseLoss: UInt8 = 5
    public static let decreaseHoldoff: Duration = .milliseconds(500)
    public static let increaseInterval: Duration = .seconds(1)
    public static let probeAfterDecrease: Duration = .seconds(3)
    /// 5 % per second: 1 Mbit/s reaches 2 Mbit/s in about 14 s, slow enough not to cause the loss
    /// it would then have to back off from.
    public static let increaseFactor = 1.05
    public static let delayDecreaseFactor = 0.85
    public static let delayRiseThreshold: Duration = .milliseconds(10)
    public static let delayTrendReports = 4

    public let bounds: BitrateBounds
    public private(set) var bitrate: Int
    private var lastDecrease: Duration?
    private var lastIncrease: Duration?
    private var jitters: [Duration] = []

    public init(bounds: BitrateBounds) {
        self.bounds = bounds
        bitrate = min(max(bounds.start, bounds.minimum), bounds.maximum)
        jitters.reserveCapacity(Self.delayTrendReports)
    }

    /// Whether the last `delayTrendReports` jitter values never fall and grow by the threshold.
    public var delayIsRising: Bool {
        guard jitters.count == Self.delayTrendReports, let first = jitters.first, let last = jitters.last else { return false }
        for index in 1 ..< jitters.count where jitters[index] < jitters[index - 1] { return false }
        return last - first >= Self.delayRiseThreshold
    }

    /// Takes one receiver report; returns the new bitrate when it changed.
    public mutating func receiverReport(fractionLost: UInt8, jitter: Duration, now: Duration) -> Int? {
        if jitters.count == Self.delayTrendReports { jitters.removeFirst() }
        jitters.append(jitter)
        let previous = bitrate
        let mayDecrease = lastDecrease.map { now - $0 >= Self.decreaseHoldoff } ?? true
        if fractionLost >= Self.decreaseLoss {
            if mayDecrease {
                let loss = Double(fractionLost) / 256
                bitrate = Int(Double(bitrate) * (1 - 0.5 * loss))
                lastDecrease = now
            }
        } else if delayIsRising {
            if mayDecrease {
                bitrate = Int(Double(bitrate) * Self.delayDecreaseFactor)
                lastDecrease = now
                // The queue needs a new trend to blame before the next decrease.
                jitters.removeAll(keepingCapacity: true)
            }
        } else if fractionLost <= Self.increaseLoss {
            let settled = lastDecrease.map { now - $0 >= Self.probeAfterDecrease } ?? true
            let spaced = lastIncrease.map { now - $0 >= Self.increaseInterval } ?? true
            if settled, spaced, bitrate < bounds.maximum {
                bitrate = Int((Double(bitrate) * Self.increaseFactor).rounded(.up))
                lastIncrease = now
            }
        }
        bitrate = min(max(bitrate, bounds.minimum), bounds.maximum)
        return bitrate == previous ? nil : bitrate
    }
}

/// One layer's receiver reports, gathered over `length` and handed to the `BitrateController` as
/// one report: the median loss and median jitter of the window (docs/MEDIA.md, "Simulcast sender").
/// Every watcher of a layer reports on the same stream; reacting to each report alone would let one
/// lossy watcher (say, one the relay is about to move down) cut the layer's bitrate for all. The
/// lower median means a layer backs off only when at least half of its reports in the window are
/// lossy; with a single watcher it is that watcher's own loss. Pure: time is a parameter.
public struct LayerReportWindow: Sendable {
    /// Two report intervals of a watcher (`VideoReceiver.reportInterval`, 500 ms): each watcher
    /// contributes about two reports, and the controller still reacts within a second.
    public static let length: Duration = .seconds(1)
    /// Reports kept in one window: more than the relay forwards in `length` from its largest room
    /// (256 watchers, one report per 400 ms each: 640). Reports past it are counted and ignored.
    public static let maximumReports = 1_024

    private var losses: [UInt8] = []
    private var jitters: [Duration] = []
    private var opened: Duration?
    public private(set) var ignored = 0

    public init() {}

    /// Adds one report. When the window (opened by its first report, or by the previous window's
    /// close) has lasted `length`, returns the window's median loss and jitter and opens the next.
    public mutating func add(fractionLost: UInt8, jitter: Duration, now: Duration) -> (fractionLost: UInt8, jitter: Duration)? {
        if opened == nil { opened = now }
        if losses.count < Self.maximumReports {
            losses.append(fractionLost)
            jitters.append(jitter)
        } else {
            ignored += 1
        }
        guard let opened, now - opened >= Self.length else { return nil }
        losses.sort()
        jitters.sort()
        let median = (losses[(losses.count - 1) / 2], jitters[(jitters.count - 1) / 2])
        losses.removeAll(keepingCapacity: true)
        jitters.removeAll(keepingCapacity: true)
        self.opened = now
        return median
    }
}
