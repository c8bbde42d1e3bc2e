/// What the relay reports to its operator (`GET /admin/stats`, `GET /metrics`). Totals count since
/// the process started; gauges are current. Aggregates only: no key, channel or address appears.
public struct RelayStatistics: Sendable, Equatable {
    public var connections = 0
    public var authenticatedConnections = 0
    public var connectionsAccepted = 0
    public var connectionsRefused = 0
    public var framesReceived = 0
    public var requestsRateLimited = 0
    public var directMessagesAccepted = 0
    public var channelMessagesAccepted = 0
    public var deliveriesSent = 0
    public var slowConsumersClosed = 0

    public init() {}

    /// (name, help, type, value) for every figure, in a fixed order; type is "counter" or
    /// "gauge". `/admin/stats` and `/metrics` export exactly this list, so a new figure needs one
    /// line here and nothing else.
    public var figures: [(String, String, String, Int)] {
        [
            ("connections", "Open session connections", "gauge", connections),
            ("authenticated_connections", "Authenticated session connections", "gauge", authenticatedConnections),
            ("connections_accepted_total", "Session connections accepted", "counter", connectionsAccepted),
            ("connections_refused_total", "Session connections refused by a limit", "counter", connectionsRefused),
            ("frames_received_total", "Session frames received", "counter", framesReceived),
            ("requests_rate_limited_total", "Requests dropped by the rate limit", "counter", requestsRateLimited),
            ("direct_messages_accepted_total", "Sealed direct messages stored", "counter", directMessagesAccepted),
            ("channel_messages_accepted_total", "Channel messages stored", "counter", channelMessagesAccepted),
            ("deliveries_sent_total", "Direct and channel deliveries sent", "counter", deliveriesSent),
            ("slow_consumers_closed_total", "Connections closed for a full outbound queue", "counter", slowConsumersClosed),
        ]
    }

    /// One JSON object, keys as in `figures`.
    public var json: String {
        "{" + figures.map { "\"\($0.0)\":\($0.3)" }.joined(separator: ",") + "}"
    }
}
