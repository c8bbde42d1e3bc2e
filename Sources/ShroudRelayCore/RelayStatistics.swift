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
    // Media plane (MediaRoomCore): gauges, then counters.
    public var mediaRooms = 0
    public var mediaParticipants = 0
    public var mediaBindings = 0
    public var mediaPacketsReceived = 0
    public var mediaPacketsForwarded = 0
    public var mediaBindsAccepted = 0
    public var mediaDroppedUnbound = 0
    public var mediaDroppedMalformed = 0
    public var mediaDroppedOversized = 0
    public var mediaDroppedRateLimited = 0
    public var mediaDroppedForeignStream = 0
    public var mediaDroppedUnknownStream = 0
    public var mediaNacksAnswered = 0
    public var mediaRetransmissionsSent = 0
    public var mediaRetransmissionsGone = 0
    // Screen rooms (MediaRoomCore with LayerSelector): gauges, then counters.
    public var mediaScreenRooms = 0
    public var mediaScreenWatchers = 0
    public var mediaLayerSwitches = 0
    public var mediaLayerDownshifts = 0
    public var mediaLayerUpshifts = 0
    public var mediaKeyframeRequests = 0
    public var mediaWatcherKeyframeRequests = 0

    public init() {}

    mutating func include(_ media: MediaStatistics) {
        mediaRooms = media.rooms
        mediaParticipants = media.participants
        mediaBindings = media.bindings
        mediaPacketsReceived = media.packetsReceived
        mediaPacketsForwarded = media.packetsForwarded
        mediaBindsAccepted = media.bindsAccepted
        mediaDroppedUnbound = media.droppedUnbound
        mediaDroppedMalformed = media.droppedMalformed
        mediaDroppedOversized = media.droppedOversized
        mediaDroppedRateLimited = media.droppedRateLimited
        mediaDroppedForeignStream = media.droppedForeignStream
        mediaDroppedUnknownStream = media.droppedUnknownStream
        mediaNacksAnswered = media.nacksAnswered
        mediaRetransmissionsSent = media.retransmissionsSent
        mediaRetransmissionsGone = media.retransmissionsGone
        mediaScreenRooms = media.screenRooms
        mediaScreenWatchers = media.screenWatchers
        mediaLayerSwitches = media.layerSwitches
        mediaLayerDownshifts = media.layerDownshifts
        mediaLayerUpshifts = media.layerUpshifts
        mediaKeyframeRequests = media.keyframeRequestsSent
        mediaWatcherKeyframeRequests = media.keyframeRequestsFromWatchers
    }

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
            ("media_rooms", "Voice and screen rooms with at least one participant", "gauge", mediaRooms),
            ("media_participants", "Voice and screen room participants", "gauge", mediaParticipants),
            ("media_bindings", "UDP addresses bound to participants", "gauge", mediaBindings),
            ("media_packets_received_total", "Media datagrams received (UDP and session)", "counter", mediaPacketsReceived),
            ("media_packets_forwarded_total", "Media datagrams forwarded to participants", "counter", mediaPacketsForwarded),
            ("media_binds_accepted_total", "Bind datagrams accepted", "counter", mediaBindsAccepted),
            ("media_dropped_unbound_total", "Datagrams dropped: unbound address or bad token", "counter", mediaDroppedUnbound),
            ("media_dropped_malformed_total", "Datagrams dropped: malformed or truncated", "counter", mediaDroppedMalformed),
            ("media_dropped_oversized_total", "Datagrams dropped: above 1200 bytes", "counter", mediaDroppedOversized),
            ("media_dropped_rate_limited_total", "Datagrams dropped: sender above its packet rate", "counter", mediaDroppedRateLimited),
            ("media_dropped_foreign_stream_total", "Datagrams dropped: stream id not the sender's", "counter", mediaDroppedForeignStream),
            ("media_dropped_unknown_stream_total", "Feedback dropped: stream not in the sender's room", "counter", mediaDroppedUnknownStream),
            ("media_nacks_answered_total", "NACKs answered from the retransmission cache", "counter", mediaNacksAnswered),
            ("media_retransmissions_sent_total", "Packets resent from the retransmission cache", "counter", mediaRetransmissionsSent),
            ("media_retransmissions_gone_total", "NACKed packets no longer in the cache", "counter", mediaRetransmissionsGone),
            ("media_screen_rooms", "Screen rooms with at least one participant", "gauge", mediaScreenRooms),
            ("media_screen_watchers", "Watchers in screen rooms", "gauge", mediaScreenWatchers),
            ("media_layer_switches_total", "Watchers switched to another layer (at a keyframe)", "counter", mediaLayerSwitches),
            ("media_layer_downshifts_total", "Watchers moved down a layer for sustained loss", "counter", mediaLayerDownshifts),
            ("media_layer_upshifts_total", "Watchers moved up a layer after recovering", "counter", mediaLayerUpshifts),
            ("media_keyframe_requests_total", "Keyframe requests the relay sent to sharers", "counter", mediaKeyframeRequests),
            ("media_watcher_keyframe_requests_total", "Keyframe requests received from watchers", "counter", mediaWatcherKeyframeRequests),
        ]
    }

    /// One JSON object, keys as in `figures`.
    public var json: String {
        "{" + figures.map { "\"\($0.0)\":\($0.3)" }.joined(separator: ",") + "}"
    }
}
