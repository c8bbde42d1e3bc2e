import Foundation
import ShroudTestSupport
import Testing

/// The relay serving `wss://` and HTTPS with a certificate from a private CA made by openssl, and
/// the client trusting it only through SHROUD_CA_FILE.
@Suite(.serialized) struct TLSEndToEndTests {
    let shroud = Binaries.path("shroud")
    let passphrase = ["SHROUD_PASSPHRASE": "a passphrase for tests"]

    /// A CA and a server certificate for localhost and 127.0.0.1 signed by it, in `directory`.
    private func makeCertificates(in directory: String) throws {
        let openssl = "/usr/bin/openssl"
        func step(_ arguments: [String]) throws {
            let result = try run(openssl, arguments, directory: directory)
            #expect(result.status == 0, "openssl \(arguments.joined(separator: " ")): \(result.stderr)")
        }
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: directory + "/server.ext", atomically: true, encoding: .utf8)
        try step(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
                  "-out", "ca.pem", "-days", "2", "-subj", "/CN=Shroud Test CA"])
        try step(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
                  "-out", "server.csr", "-subj", "/CN=localhost"])
        try step(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                  "-out", "server.pem", "-days", "2", "-extfile", "server.ext"])
        // A second, unrelated key: the relay must refuse it with this certificate.
        try step(["genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key"])
    }

    private func startRelay(in directory: String, certificates: String) throws -> (BackgroundProcess, Int) {
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"],
                                          environment: ["SC_TLS_CERT": certificates + "/server.pem", "SC_TLS_KEY": certificates + "/server.key"],
                                          directory: directory)
        let line = try relay.waitForLine(containing: "listening")
        guard let port = line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap({ Int($0.dropFirst(5)) }) else {
            throw TimedOut(command: "no port in \(line)")
        }
        return (relay, port)
    }

    @Test(.timeLimit(.minutes(4))) func messagesTravelOverWSSWithAPrivateCA() throws {
        let dir = TemporaryDirectory()
        let certificates = dir.path + "/certificates", relayDir = dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: certificates, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        try makeCertificates(in: certificates)
        let trusting = passphrase.merging(["SHROUD_CA_FILE": certificates + "/ca.pem"]) { $1 }

        let alice = dir.path + "/alice", bob = dir.path + "/bob"
        func newIdentity(_ home: String) throws -> String {
            let created = try run(shroud, ["--home", home, "id", "new", "--json"], environment: passphrase)
            #expect(created.status == 0, "\(created.stderr)")
            return try #require(created.jsonLines.first?["id"] as? String)
        }
        let aliceID = try newIdentity(alice), bobID = try newIdentity(bob)
        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobID]).status == 0)
        #expect(try run(shroud, ["--home", bob, "contact", "add", "alice", aliceID]).status == 0)

        let (relay, port) = try startRelay(in: relayDir, certificates: certificates)
        let server = "wss://localhost:\(port)"
        // HTTPS on the same port: /info says TLS is on.
        let info = try run("/usr/bin/curl", ["-sS", "--cacert", certificates + "/ca.pem", "https://localhost:\(port)/info"])
        #expect(info.status == 0 && info.stdout.contains(#""tls":true"#), "\(info.stdout) \(info.stderr)")

        let connected = try run(shroud, ["--home", bob, "--server", server, "connect", "--json"], environment: trusting)
        #expect(connected.status == 0, "\(connected.stderr)")
        let sent = try run(shroud, ["--home", alice, "--server", server, "msg", "send", "bob", "over TLS", "--json"], environment: trusting)
        #expect(sent.status == 0, "\(sent.stderr)")
        let read = try run(shroud, ["--home", bob, "--server", server, "msg", "read", "--json"], environment: trusting)
        #expect(read.status == 0, "\(read.stderr)")
        #expect(read.jsonLines.map { $0["text"] as? String } == ["over TLS"], "\(read.stdout)")

        // Without the CA the relay's certificate is not trusted: one line, exit 1, nothing sent.
        let refused = try run(shroud, ["--home", alice, "--server", server, "msg", "send", "bob", "untrusted"], environment: passphrase)
        #expect(refused.status == 1)
        #expect(refused.stderr.split(separator: "\n").count == 1 && refused.stderr.contains("not trusted"), "\(refused.stderr)")
        // Plain ws:// to a TLS port fails too, rather than talking in clear.
        let plain = try run(shroud, ["--home", alice, "--server", "ws://localhost:\(port)", "msg", "send", "bob", "clear"], environment: trusting)
        #expect(plain.status == 1 && plain.stderr.split(separator: "\n").count == 1, "\(plain.stderr)")
        #expect(relay.stop(SIGTERM) == 0)
    }

    @Test(.timeLimit(.minutes(2))) func badCertificatesOrKeysStopTheRelayWithOneLine() throws {
        let dir = TemporaryDirectory()
        try makeCertificates(in: dir.path)
        try "not a certificate\n".write(toFile: dir.path + "/garbage.pem", atomically: true, encoding: .utf8)
        let cases: [(cert: String, key: String, mentions: String)] = [
            (dir.path + "/missing.pem", dir.path + "/server.key", "missing.pem"),
            (dir.path + "/server.pem", dir.path + "/missing.key", "missing.key"),
            (dir.path + "/garbage.pem", dir.path + "/server.key", "garbage.pem"),
            (dir.path + "/server.pem", dir.path + "/garbage.pem", "garbage.pem"),
            (dir.path + "/server.pem", dir.path + "/other.key", "other.key"),
        ]
        for (cert, key, mentions) in cases {
            let result = try run(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"],
                                 environment: ["SC_TLS_CERT": cert, "SC_TLS_KEY": key], directory: dir.path, timeout: 20)
            #expect(result.status == 2, "\(cert) \(key): \(result.stderr)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1 && result.stderr.contains(mentions), "\(result.stderr)")
        }
    }
}
