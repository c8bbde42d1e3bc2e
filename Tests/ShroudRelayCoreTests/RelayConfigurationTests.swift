import ShroudWire
import Testing
@testable import ShroudRelayCore

@Suite struct RelayConfigurationTests {
    @Test func defaultsMatchTheDesignContract() throws {
        let config = try RelayConfiguration.resolve(flags: [:], environment: [:], dotEnv: nil)
        #expect(config.host == "0.0.0.0")
        #expect(config.port == 8443)
        #expect(config.mediaPort == 8443)
        #expect(config.databaseURL == "sqlite://./data/shroud.db")
        #expect(config.maxConnections == 2000)
        #expect(config.maxConnectionsPerIP == 10)
        #expect(config.usesTLS == false)
        #expect(config.adminToken == nil)
    }

    @Test func flagsBeatEnvironmentWhichBeatsDotEnv() throws {
        let dotEnv = """
            # comment
            SC_PORT=1000
            export SC_HOST="127.0.0.2"
            SC_MAX_CONNECTIONS=5   # inline comment
            SC_ADMIN_TOKEN='s3cret # not a comment'
            """
        let fromFile = try RelayConfiguration.resolve(flags: [:], environment: [:], dotEnv: dotEnv)
        #expect(fromFile.port == 1000)
        #expect(fromFile.mediaPort == 1000, "the media port follows the port unless set")
        #expect(fromFile.host == "127.0.0.2")
        #expect(fromFile.maxConnections == 5)
        #expect(fromFile.adminToken == "s3cret # not a comment")

        let fromEnv = try RelayConfiguration.resolve(flags: [:], environment: ["SC_PORT": "2000", "PATH": "/bin"], dotEnv: dotEnv)
        #expect(fromEnv.port == 2000)
        let fromFlag = try RelayConfiguration.resolve(flags: [.port: "3000", .mediaPort: "3001"],
                                                      environment: ["SC_PORT": "2000"], dotEnv: dotEnv)
        #expect(fromFlag.port == 3000)
        #expect(fromFlag.mediaPort == 3001)
    }

    @Test func rejectsBadValuesWithTheirSource() {
        #expect(throws: ConfigurationError.invalidValue(.port, "70000", source: .environment,
                                                        expected: "an integer in 0...65535")) {
            try RelayConfiguration.resolve(flags: [:], environment: ["SC_PORT": "70000"], dotEnv: nil)
        }
        #expect(throws: ConfigurationError.self) {
            try RelayConfiguration.resolve(flags: [.maxConnectionsPerIP: "0"], environment: [:], dotEnv: nil)
        }
        #expect(throws: ConfigurationError.unknownKey("SC_PROT", source: .dotEnv)) {
            try RelayConfiguration.resolve(flags: [:], environment: [:], dotEnv: "SC_PROT=1")
        }
        #expect(throws: ConfigurationError.incomplete("SC_TLS_CERT and SC_TLS_KEY must be set together")) {
            try RelayConfiguration.resolve(flags: [.tlsCert: "/x.pem"], environment: [:], dotEnv: nil)
        }
        #expect(throws: ConfigurationError.self) {
            try RelayConfiguration.resolve(flags: [.databaseURL: "mysql://x"], environment: [:], dotEnv: nil)
        }
    }

    @Test func malformedDotEnvNamesTheLine() {
        #expect(throws: ConfigurationError.malformedDotEnv(line: 2, reason: "expected KEY=VALUE")) {
            try DotEnv.parse("A=1\nnot a setting\n")
        }
        #expect(throws: ConfigurationError.malformedDotEnv(line: 1, reason: "unterminated quote")) {
            try DotEnv.parse("A=\"open")
        }
        #expect(throws: ConfigurationError.self) { try DotEnv.parse("BAD KEY=1") }
    }

    @Test func messageTTLAcceptsUnits() throws {
        for (text, seconds) in [("3600", 3600), ("90m", 5400), ("24h", 86400), ("30d", 2_592_000), ("45s", 45)] {
            let config = try RelayConfiguration.resolve(flags: [.messageTTL: text], environment: [:], dotEnv: nil)
            #expect(config.messageTTLSeconds == seconds)
        }
        for bad in ["", "x", "-5", "0", "10w", "99999999999999999999d"] where !bad.isEmpty {
            #expect(throws: ConfigurationError.self) {
                try RelayConfiguration.resolve(flags: [.messageTTL: bad], environment: [:], dotEnv: nil)
            }
        }
    }
}

@Suite struct HTTPRoutesTests {
    let routes = HTTPRoutes(version: "9.9", configuration: try! RelayConfiguration.resolve(flags: [:], environment: [:], dotEnv: nil),
                            metricsText: { _ in "" })

    @Test func healthAndInfo() {
        #expect(routes.respond(method: "GET", path: "/health") == .init(status: 200, contentType: "application/json", body: #"{"status":"ok"}"#))
        let info = routes.respond(method: "GET", path: "/info?x=1")
        #expect(info.status == 200)
        #expect(info.body.contains(#""version":"9.9""#))
        #expect(info.body.contains(#""media_port":8443"#))
    }

    @Test func unknownPathsAndMethods() {
        #expect(routes.respond(method: "GET", path: "/admin/stats").status == 404)
        #expect(routes.respond(method: "POST", path: "/health").status == 405)
        #expect(routes.respond(method: "GET", path: "").status == 404)
    }
}

@Suite struct AdminRoutesTests {
    private func routes(token: String?) throws -> HTTPRoutes {
        var flags: [RelayConfiguration.Key: String] = [:]
        if let token { flags[.adminToken] = token }
        // The metrics text itself is the exporter's (ShroudNetTests); here only who may see it.
        return HTTPRoutes(version: "1", configuration: try RelayConfiguration.resolve(flags: flags, environment: [:], dotEnv: nil),
                          metricsText: { "deliveries \($0.deliveriesSent) direct \($0.directMessagesAccepted)" })
    }

    @Test func adminEndpointsNeedTheBearerToken() throws {
        var stats = RelayStatistics()
        stats.connections = 3
        stats.directMessagesAccepted = 7
        #expect(try routes(token: nil).respond(method: "GET", path: "/admin/stats", authorization: "Bearer x", statistics: stats).status == 404)
        let r = try routes(token: "s3cret-token")
        #expect(r.respond(method: "GET", path: "/admin/stats", statistics: stats).status == 401)
        #expect(r.respond(method: "GET", path: "/metrics", authorization: "Bearer s3cret-tokeN", statistics: stats).status == 401)
        #expect(r.respond(method: "GET", path: "/metrics", authorization: "s3cret-token", statistics: stats).status == 401)
        #expect(r.respond(method: "GET", path: "/metrics", authorization: "Bearer s3cret-token2", statistics: stats).status == 401)
        #expect(r.respond(method: "POST", path: "/metrics", authorization: "Bearer s3cret-token", statistics: stats).status == 405)
        #expect(r.respond(method: "GET", path: "/metrics", authorization: "Bearer s3cret-token", statistics: nil).status == 503)

        let json = r.respond(method: "GET", path: "/admin/stats?x", authorization: "Bearer s3cret-token", statistics: stats)
        #expect(json.status == 200 && json.contentType == "application/json")
        #expect(json.body.hasPrefix(#"{"connections":3,"#) && json.body.contains(#""direct_messages_accepted_total":7"#))
        let metrics = r.respond(method: "GET", path: "/metrics", authorization: "Bearer s3cret-token", statistics: stats)
        #expect(metrics.status == 200 && metrics.contentType.hasPrefix("text/plain"))
        #expect(metrics.body == "deliveries 0 direct 7")
    }

    @Test func constantTimeComparison() {
        #expect(constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        #expect(!constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
        #expect(!constantTimeEquals(Array("abc".utf8), Array("ab".utf8)))
        #expect(!constantTimeEquals([], [0]))
        // Lengths differing by a multiple of 256, padded with zeros, are still different.
        #expect(!constantTimeEquals([1], [1] + [UInt8](repeating: 0, count: 256)))
        #expect(constantTimeEquals([], []))
    }
}
