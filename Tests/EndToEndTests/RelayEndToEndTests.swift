import Foundation
import ShroudTestSupport
import Testing

@Suite(.serialized) struct RelayEndToEndTests {
    @Test(.timeLimit(.minutes(2))) func startsAnswersHealthAndStopsCleanlyOnSIGTERM() throws {
        let dir = TemporaryDirectory()
        // Configuration from .env in the working directory, overridden by the environment.
        try "SC_PORT=1\nSC_HOST=127.0.0.1\n".write(toFile: dir.path + "/.env", atomically: true, encoding: .utf8)
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), [], environment: ["SC_PORT": "0"], directory: dir.path)
        let line = try relay.waitForLine(containing: "listening")
        let port = try #require(line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap { Int($0.dropFirst(5)) })
        #expect(line.contains("address=127.0.0.1"), "SC_HOST came from .env")

        let health = try httpGet(port: port, path: "/health")
        #expect(health.status.contains("200"))
        #expect(health.body == #"{"status":"ok"}"#)
        let info = try httpGet(port: port, path: "/info")
        #expect(info.body.contains(#""name":"shroud-relay""#))
        #expect(try httpGet(port: port, path: "/missing").status.contains("404"))

        #expect(relay.stop(SIGTERM) == 0, "a SIGTERM is a clean shutdown")
        #expect(relay.stderrLines.contains(where: { $0.contains("stopped") }))
    }

    @Test(.timeLimit(.minutes(1))) func tellsSystemdWhenReadyAndWhenStopping() throws {
        let dir = TemporaryDirectory()
        let notify = try NotificationSocket(name: dir.path + "/notify")
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"],
                                          environment: ["NOTIFY_SOCKET": notify.name], directory: dir.path)
        let ready = try #require(notify.receive())
        #expect(ready.hasPrefix("READY=1\nSTATUS=listening on port "))
        #expect(ready.contains("MAINPID=\(relay.process.processIdentifier)"))
        #expect(relay.stop(SIGTERM) == 0)
        #expect(notify.receive() == "STOPPING=1\n")
    }

    @Test func configurationErrorsAreUsageErrors() throws {
        let dir = TemporaryDirectory()
        let badPort = try run(Binaries.path("shroud-relay"), [], environment: ["SC_PORT": "99999"], directory: dir.path)
        #expect(badPort.status == 2)
        #expect(badPort.stderr.contains("SC_PORT"))
        #expect(badPort.stderr.split(separator: "\n").count == 1, "one line: \(badPort.stderr)")

        try "SC_PORT 8443\n".write(toFile: dir.path + "/.env", atomically: true, encoding: .utf8)
        let badFile = try run(Binaries.path("shroud-relay"), [], directory: dir.path)
        #expect(badFile.status == 2)
        #expect(badFile.stderr.contains(".env line 1"))

        let unknownFlag = try run(Binaries.path("shroud-relay"), ["--prot", "1"], directory: dir.path)
        #expect(unknownFlag.status == 2)

        // Never serve in clear while the operator asked for TLS.
        let clean = TemporaryDirectory()
        let tls = try run(Binaries.path("shroud-relay"), ["--tls-cert", "/c.pem", "--tls-key", "/k.pem"], directory: clean.path)
        #expect(tls.status == 2)
        #expect(tls.stderr.contains("TLS"))
    }

    @Test func aTakenPortIsARuntimeFailure() throws {
        let dir = TemporaryDirectory()
        let first = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"], directory: dir.path)
        let line = try first.waitForLine(containing: "listening")
        let port = try #require(line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).map { String($0.dropFirst(5)) })
        let second = try run(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", port], directory: dir.path, timeout: 30)
        #expect(second.status == 1)
        #expect(second.stderr.contains("shroud-relay:"))
        _ = first.stop()
    }
}
