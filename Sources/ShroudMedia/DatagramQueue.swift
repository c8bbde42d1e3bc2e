import Foundation

/// Datagrams handed from a transport's receive thread to the media thread of a screen share or
/// watch, which takes them in batches (waiting a little when there are none). Bounded: past
/// `capacity` held datagrams new ones are dropped and counted, because a media thread that far
/// behind is better repaired by NACKs and keyframes than by a queue that grows without bound.
public final class DatagramQueue: @unchecked Sendable {
    /// 2 s of a 1080p share at its highest bitrate (5 Mbit/s top layer + 1 Mbit/s 360p in
    /// 1,200-byte datagrams is about 625 per second) with room for a keyframe burst.
    public static let capacity = 4096
    private let condition = NSCondition()
    private var items: [[UInt8]] = []
    private var droppedCount = 0

    public init() {}

    public var dropped: Int {
        condition.lock(); defer { condition.unlock() }
        return droppedCount
    }

    public func push(_ datagram: [UInt8]) {
        condition.lock()
        if items.count < Self.capacity { items.append(datagram) } else { droppedCount += 1 }
        condition.signal()
        condition.unlock()
    }

    /// Everything queued, in arrival order; when nothing is, waits up to `timeout` for the first.
    public func take(waiting timeout: Duration = .zero) -> [[UInt8]] {
        condition.lock()
        defer { condition.unlock() }
        if items.isEmpty, timeout > .zero {
            let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) * 1e-18
            _ = condition.wait(until: Date().addingTimeInterval(seconds))
        }
        let taken = items
        items.removeAll(keepingCapacity: true)
        return taken
    }
}
