import ShroudWire

/// Limits of the relay's blind byte pipes (docs/PROTOCOL.md §7, "Relay pipe"), named constants
/// with tests at and one past each.
public struct PipeLimits: Sendable, Equatable {
    /// Pipes (open or waiting for their second end) on the whole relay.
    public var maximumPipes: Int = defaultMaximumPipes
    /// Pipes one connection may be in at once.
    public var maximumPipesPerConnection: Int = defaultMaximumPipesPerConnection
    /// Bytes of `pipeData` each end of one pipe may send per second, sustained, and in a burst.
    public var bytesPerSecond: UInt64 = defaultBytesPerSecond
    public var burstBytes: UInt64 = defaultBurstBytes

    public static let defaultMaximumPipes = 64
    public static let defaultMaximumPipesPerConnection = 2
    public static let defaultBytesPerSecond: UInt64 = 1 << 30
    public static let defaultBurstBytes: UInt64 = 64 << 20

    public init() {}
}

/// A token bucket on bytes, refilled from the time given (milliseconds): the per-pipe rate limit.
public struct ByteBucket: Sendable, Equatable {
    public let capacity: UInt64
    public let perSecond: UInt64
    private var tokens: UInt64
    private var lastRefill: UInt64

    public init(capacity: UInt64, perSecond: UInt64, now: UInt64) {
        self.capacity = capacity
        self.perSecond = perSecond
        tokens = capacity
        lastRefill = now
    }

    /// Takes `count` bytes if the bucket holds them.
    public mutating func take(_ count: UInt64, now: UInt64) -> Bool {
        if now > lastRefill {
            // Elapsed time capped at a day: the product stays far from overflow.
            let elapsed = min(now - lastRefill, 86_400_000)
            let refill = elapsed.multipliedReportingOverflow(by: perSecond)
            tokens = refill.overflow ? capacity : min(capacity, tokens + refill.partialValue / 1000)
            lastRefill = now
        }
        guard tokens >= count else { return false }
        tokens -= count
        return true
    }
}

/// The pipe table, sans-IO: which connections are the two ends of which pipe. It never sees what
/// flows through a pipe; the relay core asks it where a frame goes and whether the sender may send it.
public struct RelayPipes: Sendable {
    public enum OpenOutcome: Equatable, Sendable {
        /// The first end is in; the pipe waits for the second.
        case waiting
        /// The second end is in: tell both (`pipeReady`).
        case ready(other: ConnectionID)
        case refused(SessionErrorCode, String)
    }

    public enum ForwardOutcome: Equatable, Sendable {
        case forward(to: ConnectionID)
        /// The pipe does not exist, lacks its second end, or the sender is not in it.
        case refused(SessionErrorCode, String)
        /// The sender broke the rate limit: the pipe is closed; tell these connections.
        case closed(notify: [ConnectionID])
    }

    private struct Pipe: Sendable {
        var ends: [ConnectionID]
        var buckets: [ByteBucket]
    }

    public let limits: PipeLimits
    private var pipes: [PipeID: Pipe] = [:]
    private var byConnection: [ConnectionID: Set<PipeID>] = [:]

    public init(limits: PipeLimits) { self.limits = limits }

    public var count: Int { pipes.count }
    public var openCount: Int { pipes.values.filter { $0.ends.count == 2 }.count }

    public mutating func open(_ pipe: PipeID, by connection: ConnectionID, now: UInt64) -> OpenOutcome {
        if var existing = pipes[pipe] {
            guard existing.ends.count == 1, existing.ends[0] != connection else {
                return .refused(.alreadyExists, existing.ends.contains(connection) ? "already in this pipe" : "the pipe has both ends")
            }
            guard byConnection[connection, default: []].count < limits.maximumPipesPerConnection else {
                return .refused(.limitExceeded, "at most \(limits.maximumPipesPerConnection) pipes per connection")
            }
            existing.ends.append(connection)
            existing.buckets.append(ByteBucket(capacity: limits.burstBytes, perSecond: limits.bytesPerSecond, now: now))
            pipes[pipe] = existing
            byConnection[connection, default: []].insert(pipe)
            return .ready(other: existing.ends[0])
        }
        guard pipes.count < limits.maximumPipes else { return .refused(.limitExceeded, "the relay has \(limits.maximumPipes) pipes") }
        guard byConnection[connection, default: []].count < limits.maximumPipesPerConnection else {
            return .refused(.limitExceeded, "at most \(limits.maximumPipesPerConnection) pipes per connection")
        }
        pipes[pipe] = Pipe(ends: [connection], buckets: [ByteBucket(capacity: limits.burstBytes, perSecond: limits.bytesPerSecond, now: now)])
        byConnection[connection, default: []].insert(pipe)
        return .waiting
    }

    /// Where `pipeData` of `bytes` from `connection` goes; `rateLimited` is false for `pipeAck`,
    /// which is small and bounded by the data it acknowledges.
    public mutating func forward(_ pipe: PipeID, bytes: Int, from connection: ConnectionID, rateLimited: Bool, now: UInt64) -> ForwardOutcome {
        guard var existing = pipes[pipe], let side = existing.ends.firstIndex(of: connection) else {
            return .refused(.notFound, "not in this pipe")
        }
        guard existing.ends.count == 2 else { return .refused(.notFound, "the pipe has no second end yet") }
        if rateLimited, !existing.buckets[side].take(UInt64(bytes), now: now) {
            let ends = existing.ends
            remove(pipe)
            return .closed(notify: ends)
        }
        pipes[pipe] = existing
        return .forward(to: existing.ends[1 - side])
    }

    /// `connection` leaves `pipe`; returns the other end to tell, if any. Nil result and false:
    /// the connection was not in the pipe.
    public mutating func close(_ pipe: PipeID, by connection: ConnectionID) -> (member: Bool, other: ConnectionID?) {
        guard let existing = pipes[pipe], existing.ends.contains(connection) else { return (false, nil) }
        remove(pipe)
        return (true, existing.ends.first { $0 != connection })
    }

    /// The connection went away: every pipe it was in closes; returns (pipe, other end) to tell.
    public mutating func disconnected(_ connection: ConnectionID) -> [(PipeID, ConnectionID)] {
        var notices: [(PipeID, ConnectionID)] = []
        for pipe in (byConnection[connection] ?? []).sorted(by: { $0.bytes.lexicographicallyPrecedes($1.bytes) }) {
            if let other = close(pipe, by: connection).other { notices.append((pipe, other)) }
        }
        byConnection[connection] = nil
        return notices
    }

    private mutating func remove(_ pipe: PipeID) {
        guard let existing = pipes.removeValue(forKey: pipe) else { return }
        for end in existing.ends {
            byConnection[end]?.remove(pipe)
            if byConnection[end]?.isEmpty == true { byConnection[end] = nil }
        }
    }
}
