import Glibc

/// A source of monotonic time that can also wait. Injected into `PacedScreenCapture` so the pacing
/// logic is tested on virtual time, without sleeping.
public protocol PacingClock {
    /// Nanoseconds since an arbitrary fixed origin; never goes backwards.
    func nowNanoseconds() -> UInt64
    /// Returns no earlier than `deadline` (in the clock's nanoseconds).
    func sleep(untilNanoseconds deadline: UInt64)
}

/// `CLOCK_MONOTONIC` and `clock_nanosleep` with an absolute deadline (no drift from wake-up lag).
public struct MonotonicPacingClock: PacingClock, Sendable {
    public init() {}

    public func nowNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public func sleep(untilNanoseconds deadline: UInt64) {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
    }
}

/// Decides when each frame is due at a fixed frame rate. Pure: time comes in as a parameter.
///
/// Frame *n* is due at `start + n × interval`, so lag in one frame does not shift the ones after
/// it. When capture falls more than one whole interval behind, the missed slots are skipped (and
/// counted) instead of being captured in a burst: a screen share wants the newest picture, not a
/// backlog.
public struct FramePacer: Equatable, Sendable {
    /// The frame rates accepted: a still share at 1 fps up to 120 fps.
    public static let frameRates: ClosedRange<Int> = 1...120

    public let framesPerSecond: Int
    public let intervalNanoseconds: UInt64
    /// When the next frame is due, or `nil` before the first frame.
    public private(set) var nextDue: UInt64?
    /// Slots skipped because capture was running late.
    public private(set) var framesSkipped = 0

    public init(framesPerSecond: Int) throws {
        guard Self.frameRates.contains(framesPerSecond) else {
            throw MediaError.device("frame rate \(framesPerSecond) is outside \(Self.frameRates.lowerBound)–\(Self.frameRates.upperBound) fps")
        }
        self.framesPerSecond = framesPerSecond
        self.intervalNanoseconds = 1_000_000_000 / UInt64(framesPerSecond)
    }

    /// How long to wait at `now` before the next frame: `nil` means capture now.
    public func wait(at now: UInt64) -> UInt64? {
        guard let nextDue, nextDue > now else { return nil }
        return nextDue - now
    }

    /// Records that a frame was taken at `now` and schedules the next one.
    public mutating func frameTaken(at now: UInt64) {
        guard let due = nextDue else {
            nextDue = now + intervalNanoseconds
            return
        }
        var next = due + intervalNanoseconds
        if now >= next {
            // Late by at least one whole interval: drop the missed slots and restart from now.
            let missed = (now - due) / intervalNanoseconds
            framesSkipped += Int(missed)
            next = now + intervalNanoseconds
        }
        nextDue = next
    }
}

/// A `ScreenCapturer` driven at a frame rate by a `FramePacer` and a `PacingClock`.
public final class PacedScreenCapture<Clock: PacingClock> {
    public let capturer: ScreenCapturer
    public private(set) var pacer: FramePacer
    private let clock: Clock

    public init(capturer: ScreenCapturer, framesPerSecond: Int, clock: Clock) throws {
        self.capturer = capturer
        self.pacer = try FramePacer(framesPerSecond: framesPerSecond)
        self.clock = clock
    }

    /// Waits until the next frame is due, captures it, and lends it to `body` with its capture
    /// time (clock nanoseconds).
    public func withNextFrame<R>(_ body: (BorrowedScreenFrame, UInt64) throws -> R) throws -> R {
        let now = clock.nowNanoseconds()
        if let wait = pacer.wait(at: now) {
            clock.sleep(untilNanoseconds: now + wait)
        }
        let takenAt = clock.nowNanoseconds()
        pacer.frameTaken(at: takenAt)
        return try capturer.withNextFrame { try body($0, takenAt) }
    }
}

extension PacedScreenCapture where Clock == MonotonicPacingClock {
    public convenience init(capturer: ScreenCapturer, framesPerSecond: Int) throws {
        try self.init(capturer: capturer, framesPerSecond: framesPerSecond, clock: MonotonicPacingClock())
    }
}
