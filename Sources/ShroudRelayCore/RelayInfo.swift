/// What `GET /info` tells a client about this relay.
public struct RelayInfo: Sendable, Equatable {
    public var name: String
    public var version: String
    public init(name: String = "shroud-relay", version: String) {
        self.name = name
        self.version = version
    }
}
