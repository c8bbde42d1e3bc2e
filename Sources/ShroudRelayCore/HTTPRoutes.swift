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

    public init(version: String, configuration: RelayConfiguration) {
        self.version = version
        self.configuration = configuration
    }

    public func respond(method: String, path: String) -> Response {
        let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
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

    private func json(_ status: Int, _ body: String) -> Response {
        Response(status: status, contentType: "application/json", body: body)
    }
}
