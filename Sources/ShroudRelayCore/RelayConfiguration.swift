/// The relay's configuration (DESIGN.md §5). Every setting has one name, `SC_…`, and is resolved
/// from three layers in order of precedence: command-line flags, then the process environment, then
/// a `.env` file in the working directory. Resolution is pure: callers pass the three layers in.
public struct RelayConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var mediaPort: Int
    public var databaseURL: String
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    public var maxConnections: Int
    public var maxConnectionsPerIP: Int
    /// How long a queued message waits for its recipient before it expires, in seconds.
    public var messageTTLSeconds: Int
    public var iceStunURL: String?
    public var iceTurnURL: String?
    public var iceTurnSecret: String?
    public var adminToken: String?

    public static let defaultPort = 8443
    public static let defaultDatabaseURL = "sqlite://./data/shroud.db"
    public static let defaultMaxConnections = 2000
    public static let defaultMaxConnectionsPerIP = 10
    public static let defaultMessageTTLSeconds = 30 * 24 * 3600

    /// Every recognised key. Unknown `SC_` keys in the environment or `.env` are reported as
    /// errors, so a misspelt setting is never silently ignored.
    public enum Key: String, CaseIterable, Sendable {
        case host = "SC_HOST"
        case port = "SC_PORT"
        case mediaPort = "SC_MEDIA_PORT"
        case databaseURL = "SC_DATABASE_URL"
        case tlsCert = "SC_TLS_CERT"
        case tlsKey = "SC_TLS_KEY"
        case maxConnections = "SC_MAX_CONNECTIONS"
        case maxConnectionsPerIP = "SC_MAX_CONNECTIONS_PER_IP"
        case messageTTL = "SC_MESSAGE_TTL"
        case iceStunURL = "SC_ICE_STUN_URL"
        case iceTurnURL = "SC_ICE_TURN_URL"
        case iceTurnSecret = "SC_ICE_TURN_SECRET"
        case adminToken = "SC_ADMIN_TOKEN"
    }

    /// Where a value came from, for error messages and the start-up log.
    public enum Source: String, Sendable { case flag, environment, dotEnv = ".env", defaultValue = "default" }

    /// Resolves the configuration. `flags` holds values given on the command line, keyed like the
    /// environment (`SC_PORT`); `dotEnv` is the text of `.env` if one exists.
    public static func resolve(flags: [Key: String], environment: [String: String], dotEnv: String?) throws -> RelayConfiguration {
        let fileValues = try dotEnv.map(DotEnv.parse) ?? [:]
        for name in environment.keys.sorted() where name.hasPrefix("SC_") && Key(rawValue: name) == nil {
            throw ConfigurationError.unknownKey(name, source: .environment)
        }
        for name in fileValues.keys.sorted() where name.hasPrefix("SC_") && Key(rawValue: name) == nil {
            throw ConfigurationError.unknownKey(name, source: .dotEnv)
        }
        func lookup(_ key: Key) -> (String, Source)? {
            if let v = flags[key] { return (v, .flag) }
            if let v = environment[key.rawValue] { return (v, .environment) }
            if let v = fileValues[key.rawValue] { return (v, .dotEnv) }
            return nil
        }
        func string(_ key: Key) -> String? {
            guard let (value, _) = lookup(key), !value.isEmpty else { return nil }
            return value
        }
        func integer(_ key: Key, default fallback: Int, range: ClosedRange<Int>) throws -> Int {
            guard let (text, source) = lookup(key), !text.isEmpty else { return fallback }
            guard let value = Int(text), range.contains(value) else {
                throw ConfigurationError.invalidValue(key, text, source: source,
                                                      expected: "an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }

        var config = RelayConfiguration(
            host: string(.host) ?? "0.0.0.0",
            port: try integer(.port, default: defaultPort, range: 0...65535),
            mediaPort: 0,
            databaseURL: string(.databaseURL) ?? defaultDatabaseURL,
            tlsCertificatePath: string(.tlsCert),
            tlsKeyPath: string(.tlsKey),
            maxConnections: try integer(.maxConnections, default: defaultMaxConnections, range: 1...1_000_000),
            maxConnectionsPerIP: try integer(.maxConnectionsPerIP, default: defaultMaxConnectionsPerIP, range: 1...1_000_000),
            messageTTLSeconds: 0,
            iceStunURL: string(.iceStunURL),
            iceTurnURL: string(.iceTurnURL),
            iceTurnSecret: string(.iceTurnSecret),
            adminToken: string(.adminToken))
        config.mediaPort = try integer(.mediaPort, default: config.port, range: 0...65535)
        if let (text, source) = lookup(.messageTTL), !text.isEmpty {
            guard let seconds = Duration.parseSeconds(text), seconds > 0 else {
                throw ConfigurationError.invalidValue(.messageTTL, text, source: source,
                                                      expected: "a duration such as 3600, 90m, 24h or 30d")
            }
            config.messageTTLSeconds = seconds
        } else {
            config.messageTTLSeconds = defaultMessageTTLSeconds
        }
        if (config.tlsCertificatePath == nil) != (config.tlsKeyPath == nil) {
            throw ConfigurationError.incomplete("SC_TLS_CERT and SC_TLS_KEY must be set together")
        }
        guard config.databaseURL.hasPrefix("sqlite://") || config.databaseURL.hasPrefix("postgres://")
            || config.databaseURL.hasPrefix("postgresql://") else {
            throw ConfigurationError.invalidValue(.databaseURL, config.databaseURL, source: lookup(.databaseURL)?.1 ?? .defaultValue,
                                                  expected: "sqlite://PATH or postgres://…")
        }
        return config
    }

    public var usesTLS: Bool { tlsCertificatePath != nil }
}

public enum ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownKey(String, source: RelayConfiguration.Source)
    case invalidValue(RelayConfiguration.Key, String, source: RelayConfiguration.Source, expected: String)
    case malformedDotEnv(line: Int, reason: String)
    case incomplete(String)

    public var description: String {
        switch self {
        case let .unknownKey(name, source):
            return "unknown setting \(name) in \(source.rawValue)"
        case let .invalidValue(key, value, source, expected):
            return "invalid \(key.rawValue)=\"\(value)\" (from \(source.rawValue)): expected \(expected)"
        case let .malformedDotEnv(line, reason):
            return ".env line \(line): \(reason)"
        case let .incomplete(reason):
            return reason
        }
    }
}

/// The `.env` format: `KEY=VALUE` lines, `#` comments, blank lines, an optional `export ` prefix,
/// and values optionally wrapped in single or double quotes (no interpolation).
public enum DotEnv {
    public static func parse(_ text: String) throws -> [String: String] {
        var values: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine)
            line = line.drop(while: { $0 == " " || $0 == "\t" })
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = line.dropFirst("export ".count) }
            guard let equals = line.firstIndex(of: "=") else {
                throw ConfigurationError.malformedDotEnv(line: index + 1, reason: "expected KEY=VALUE")
            }
            let key = line[..<equals].trimmingCharacters(in: " \t")
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw ConfigurationError.malformedDotEnv(line: index + 1, reason: "invalid key \"\(key)\"")
            }
            var value = line[line.index(after: equals)...].trimmingCharacters(in: " \t")
            if let quote = value.first, quote == "\"" || quote == "'" {
                guard value.count >= 2, value.last == quote else {
                    throw ConfigurationError.malformedDotEnv(line: index + 1, reason: "unterminated quote")
                }
                value = String(value.dropFirst().dropLast())
            } else if let hash = inlineCommentStart(value) {
                value = String(value[..<hash]).trimmingCharacters(in: " \t")
            }
            values[key] = value
        }
        return values
    }
}

/// Where an unquoted value's trailing ` # comment` starts, if it has one.
private func inlineCommentStart(_ value: String) -> String.Index? {
    var previous: Character?
    for index in value.indices {
        if value[index] == "#", previous == " " || previous == "\t" { return index }
        previous = value[index]
    }
    return nil
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

extension Duration {
    /// Parses "3600", "3600s", "90m", "24h" or "30d" into seconds.
    public static func parseSeconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last, let multiplier = units[unit] {
            guard let value = Int(text.dropLast()), value >= 0, value <= Int.max / multiplier else { return nil }
            return value * multiplier
        }
        return Int(text)
    }
}
