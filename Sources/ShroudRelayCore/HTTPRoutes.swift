import ShroudWire

/// The relay's plain HTTP endpoints, decided here without I/O; ShroudNet carries them out.
public struct HTTPRoutes: Sendable {
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var contentType: String
        public var body: String

        public init(status: Int, contentType: String, body: String) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    public static let protocolVersion = 1
    public let version: String
    public let configuration: RelayConfiguration
    /// Writes `/metrics` from a statistics snapshot (the network layer's swift-metrics exporter).
    public let metricsText: @Sendable (RelayStatistics) -> String

    public init(version: String, configuration: RelayConfiguration, metricsText: @escaping @Sendable (RelayStatistics) -> String) {
        self.version = version
        self.configuration = configuration
        self.metricsText = metricsText
    }

    /// The admin endpoints, served only when SC_ADMIN_TOKEN is set and the request carries
    /// `Authorization: Bearer TOKEN`.
    public static let adminRoutes: Set<String> = ["/admin/stats", "/metrics"]

    /// Whether the request is for an admin endpoint (the adapter then fetches statistics first).
    public static func isAdminRoute(_ path: String) -> Bool {
        adminRoutes.contains(path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path)
    }

    public func respond(method: String, path: String, authorization: String? = nil, statistics: RelayStatistics? = nil) -> Response {
        let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        if Self.adminRoutes.contains(route) {
            return admin(method: method, route: route, authorization: authorization, statistics: statistics)
        }
        switch (method, route) {
        case ("GET", "/health"), ("HEAD", "/health"):
            return json(200, #"{"status":"ok"}"#)
        case ("GET", "/info"), ("HEAD", "/info"):
            // Only what a client needs to connect; nothing about users, rooms or load.
            return json(200, """
                {"name":"shroud-relay","version":"\(version)","protocol":\(Self.protocolVersion),\
                "websocket_path":"/ws","media_port":\(configuration.mediaPort),"tls":\(configuration.usesTLS)}
                """)
        case (_, "/health"), (_, "/info"):
            return json(405, #"{"error":"method not allowed"}"#)
        default:
            return json(404, #"{"error":"not found"}"#)
        }
    }

    private func admin(method: String, route: String, authorization: String?, statistics: RelayStatistics?) -> Response {
        // Without a configured token the endpoints do not exist, so nothing reveals they could.
        guard let token = configuration.adminToken else { return json(404, #"{"error":"not found"}"#) }
        guard let authorization, authorization.hasPrefix("Bearer "),
              constantTimeEquals(Array(authorization.utf8.dropFirst("Bearer ".count)), Array(token.utf8)) else {
            return json(401, #"{"error":"unauthorized"}"#)
        }
        guard method == "GET" || method == "HEAD" else { return json(405, #"{"error":"method not allowed"}"#) }
        guard let statistics else { return json(503, #"{"error":"statistics unavailable"}"#) }
        if route == "/metrics" {
            return Response(status: 200, contentType: "text/plain; version=0.0.4", body: metricsText(statistics))
        }
        return json(200, statistics.json)
    }

    private func json(_ status: Int, _ body: String) -> Response {
        Response(status: status, contentType: "application/json", body: body)
    }
}
