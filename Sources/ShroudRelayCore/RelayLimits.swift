import ShroudWire

/// Every limit the relay core enforces (docs/PROTOCOL.md §2, "Limits"). The defaults are the named
/// constants; the first three come from the configuration (SC_MAX_CONNECTIONS,
/// SC_MAX_CONNECTIONS_PER_IP, SC_MESSAGE_TTL).
public struct RelayLimits: Sendable, Equatable {
    public var maximumConnections: Int
    public var maximumConnectionsPerIP: Int
    /// How long a queued direct or channel message is kept, in milliseconds.
    public var messageTTLMilliseconds: UInt64 {
        didSet { messageTTLMilliseconds = min(messageTTLMilliseconds, Self.maximumMessageTTLMilliseconds) }
    }
    /// How long a new connection has to answer the challenge.
    public var authenticationTimeoutMilliseconds: UInt64 = defaultAuthenticationTimeoutMilliseconds
    /// Requests a connection may send in a burst, and the sustained rate (token bucket).
    public var requestBurst: Int = defaultRequestBurst
    public var requestsPerSecond: Int = defaultRequestsPerSecond
    /// New connections one IP address may open in a burst, and the sustained rate (token bucket).
    public var connectionBurstPerIP: Int = defaultConnectionBurstPerIP
    public var connectionsPerSecondPerIP: Int = defaultConnectionsPerSecondPerIP
    /// Frames and bytes handed to a connection but not yet written; past either the connection is
    /// closed (slow consumer) instead of slowing everyone else down.
    public var maximumOutboundFrames: Int = defaultMaximumOutboundFrames
    public var maximumOutboundBytes: Int = defaultMaximumOutboundBytes
    /// Deliveries (direct and channel) sent to one connection and not yet acknowledged; more are
    /// sent as acknowledgements arrive.
    public var deliveryWindow: Int = defaultDeliveryWindow
    /// Direct messages waiting for one recipient.
    public var maximumQueuedPerRecipient: Int = defaultMaximumQueuedPerRecipient
    /// One-time prekeys held for one identity.
    public var maximumOneTimePrekeys: Int = defaultMaximumOneTimePrekeys
    public var maximumMembersPerChannel: Int = SessionLimits.maximumMembersPerChannel
    /// Blind byte pipes for file transfers (`RelayPipes`).
    public var pipes = PipeLimits()
    /// How often `tick` deletes expired messages and invites.
    public var expirySweepIntervalMilliseconds: UInt64 = defaultExpirySweepIntervalMilliseconds

    public static let defaultAuthenticationTimeoutMilliseconds: UInt64 = 10_000
    public static let defaultRequestBurst = 200
    public static let defaultRequestsPerSecond = 100
    public static let defaultConnectionBurstPerIP = 20
    public static let defaultConnectionsPerSecondPerIP = 5
    public static let defaultMaximumOutboundFrames = 1024
    public static let defaultMaximumOutboundBytes = 16 << 20
    public static let defaultDeliveryWindow = 64
    public static let defaultMaximumQueuedPerRecipient = 10_000
    public static let defaultMaximumOneTimePrekeys = 500
    public static let defaultExpirySweepIntervalMilliseconds: UInt64 = 60_000
    /// The longest message lifetime honoured (100 years); a longer SC_MESSAGE_TTL is cut to it so
    /// that `now + ttl` can never overflow.
    public static let maximumMessageTTLMilliseconds: UInt64 = 100 * 365 * 86_400_000

    public init(maximumConnections: Int = RelayConfiguration.defaultMaxConnections,
                maximumConnectionsPerIP: Int = RelayConfiguration.defaultMaxConnectionsPerIP,
                messageTTLMilliseconds: UInt64 = UInt64(RelayConfiguration.defaultMessageTTLSeconds) * 1000) {
        self.maximumConnections = maximumConnections
        self.maximumConnectionsPerIP = maximumConnectionsPerIP
        self.messageTTLMilliseconds = min(messageTTLMilliseconds, Self.maximumMessageTTLMilliseconds)
    }

    public init(configuration: RelayConfiguration) {
        self.init(maximumConnections: configuration.maxConnections,
                  maximumConnectionsPerIP: configuration.maxConnectionsPerIP,
                  messageTTLMilliseconds: UInt64(clamping: configuration.messageTTLSeconds)
                      .multipliedReportingOverflow(by: 1000).overflow ? Self.maximumMessageTTLMilliseconds
                      : UInt64(clamping: configuration.messageTTLSeconds) * 1000)
    }
}

/// A token bucket on integer milli-tokens: holds at most `capacity` tokens, refills at `perSecond`,
/// and each request takes one. Time is a parameter (milliseconds), so tests run on a virtual clock.
public struct TokenBucket: Sendable, Equatable {
    public let capacity: Int
    public let perSecond: Int
    private var milliTokens: Int
    private var lastRefill: UInt64

    public init(capacity: Int, perSecond: Int, now: UInt64) {
        self.capacity = capacity
        self.perSecond = perSecond
        milliTokens = capacity * 1000
        lastRefill = now
    }

    /// Takes one token if there is one.
    public mutating func take(now: UInt64) -> Bool {
        if now > lastRefill {
            // perSecond tokens per 1000 ms = perSecond milli-tokens per ms; cap the elapsed time so
            // the product cannot overflow after a long idle period.
            let elapsed = Int(min(now - lastRefill, 86_400_000))
            milliTokens = min(capacity * 1000, milliTokens + elapsed * perSecond)
            lastRefill = now
        }
        guard milliTokens >= 1000 else { return false }
        milliTokens -= 1000
        return true
    }
}
