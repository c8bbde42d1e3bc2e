import Crypto
import Foundation
import NIOPosix
import ShroudCrypto
import ShroudNet
import ShroudTestSupport
import ShroudWire
import Testing

/// The client's networked commands against the real relay binary on loopback (issue 4, client part).
@Suite(.serialized) struct MessagingEndToEndTests {
    let shroud = Binaries.path("shroud")
    let passphrase = ["SHROUD_PASSPHRASE": "a passphrase for tests"]

    private func newIdentity(_ home: String) throws -> String {
        let created = try run(shroud, ["--home", home, "id", "new", "--json"], environment: passphrase)
        #expect(created.status == 0, "\(created.stderr)")
        return try #require(created.jsonLines.first?["id"] as? String)
    }

    private func startRelay(in directory: String, port: Int = 0) throws -> (BackgroundProcess, Int) {
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", String(port)], directory: directory)
        let line = try relay.waitForLine(containing: "listening")
        guard let port = line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap({ Int($0.dropFirst(5)) }) else {
            throw TimedOut(command: "no port in \(line)")
        }
        return (relay, port)
    }

    @Test(.timeLimit(.minutes(3))) func connectPublishesPrekeysOnceAndPinsTheRelay() throws {
        let dir = TemporaryDirectory()
        let relayDir = dir.path + "/relay", otherRelayDir = dir.path + "/other-relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: otherRelayDir, withIntermediateDirectories: true)
        let alice = dir.path + "/alice"
        _ = try newIdentity(alice)

        var (relay, port) = try startRelay(in: relayDir)
        let first = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:\(port)", "connect", "--json"], environment: passphrase)
        #expect(first.status == 0, "\(first.stderr)")
        let published = try #require(first.jsonLines.first)
        #expect(published["one_time_published"] as? Int == 100)
        #expect(published["signed_published"] as? Bool == true)
        #expect(published["one_time_prekeys"] as? Int == 100)
        let binding = try #require(published["relay"] as? String)
        #expect(binding.hasPrefix("shroud-relay:"))

        // The profile remembers the server; the relay holds enough, so nothing more is published.
        let second = try run(shroud, ["--home", alice, "connect", "--json"], environment: passphrase)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.jsonLines.first?["one_time_published"] as? Int == 0)
        #expect(second.jsonLines.first?["signed_published"] as? Bool == false)
        #expect(second.jsonLines.first?["one_time_prekeys"] as? Int == 100)
        #expect(relay.stop(SIGTERM) == 0)

        // Another relay (another data directory, so another binding) on the same URL: refused
        // before anything is signed for it.
        (relay, _) = try startRelay(in: otherRelayDir, port: port)
        let refused = try run(shroud, ["--home", alice, "connect"], environment: passphrase)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("pinned"), "\(refused.stderr)")
        #expect(relay.stop(SIGTERM) == 0)

        // The original relay again (same relay id on disk): accepted.
        (relay, _) = try startRelay(in: relayDir, port: port)
        #expect(try run(shroud, ["--home", alice, "connect"], environment: passphrase).status == 0)
        #expect(relay.stop(SIGTERM) == 0)
    }

    @Test(.timeLimit(.minutes(1))) func badServerAddressesAreRefused() throws {
        let dir = TemporaryDirectory()
        let alice = dir.path + "/alice"
        _ = try newIdentity(alice)
        for bad in ["http://127.0.0.1:1", "ws://127.0.0.1:0", "ws://127.0.0.1:65536", "ws://", "wss://127.0.0.1:1"] {
            let result = try run(shroud, ["--home", alice, "--server", bad, "connect"], environment: passphrase)
            #expect(result.status == 1, "\(bad)")
            #expect(!result.stderr.isEmpty && result.stderr.split(separator: "\n").count == 1, "\(bad): \(result.stderr)")
        }
        // The highest port is accepted as an address (nothing listens there: a connection failure).
        let highest = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:65535", "connect"], environment: passphrase)
        #expect(highest.status == 1 && highest.stderr.contains("cannot reach"), "\(highest.stderr)")
        for wait in ["-1", "86401"] {
            let result = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:1", "msg", "read", "--wait", wait])
            #expect(result.status == 2, "--wait \(wait): \(result.stderr)")
        }
        let noRelay = try run(shroud, ["--home", alice, "connect"], environment: passphrase.merging(["SHROUD_SERVER": ""]) { $1 })
        #expect(noRelay.status == 1)
        #expect(noRelay.stderr.contains("--server"), "\(noRelay.stderr)")
    }

    /// Runs `shroud` with the profile `home` against the relay on `port`.
    private func shroudAt(_ home: String, _ port: Int, _ arguments: [String]) throws -> RunResult {
        try run(shroud, ["--home", home, "--server", "ws://127.0.0.1:\(port)"] + arguments, environment: passphrase, timeout: 60)
    }

    @Test(.timeLimit(.minutes(4))) func offlineMessagesSurviveARelaySIGKILLAndAreShownExactlyOnce() throws {
        let dir = TemporaryDirectory()
        let relayDir = dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        let alice = dir.path + "/alice", bob = dir.path + "/bob"
        let aliceID = try newIdentity(alice), bobID = try newIdentity(bob)
        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobID]).status == 0)
        #expect(try run(shroud, ["--home", bob, "contact", "add", "alice", aliceID]).status == 0)

        var (relay, port) = try startRelay(in: relayDir)
        // Bob publishes his agreement key and prekeys once, then goes offline.
        let connected = try shroudAt(bob, port, ["connect", "--json"])
        #expect(connected.status == 0, "\(connected.stderr)")
        #expect(connected.jsonLines.first?["signed_published"] as? Bool == true)

        let texts = ["first: hello bob", "second: ünïcödé ✓", "third: the last one"]
        for text in texts {
            let sent = try shroudAt(alice, port, ["msg", "send", "bob", text, "--json"])
            #expect(sent.status == 0, "\(sent.stderr)")
            #expect(sent.jsonLines.first?["sent"] as? Bool == true)
        }
        _ = relay.stop(SIGKILL)
        (relay, _) = try startRelay(in: relayDir, port: port)

        let read = try shroudAt(bob, port, ["msg", "read", "--json"])
        #expect(read.status == 0, "\(read.stderr)")
        #expect(read.jsonLines.map { $0["text"] as? String } == texts, "\(read.stdout) \(read.stderr)")
        #expect(read.jsonLines.allSatisfy { $0["from"] as? String == "alice" && $0["from_id"] as? String == aliceID })

        let again = try shroudAt(bob, port, ["msg", "read", "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.isEmpty, "a second read shows nothing: \(again.stdout)")

        // The longest text (256 KiB less the kind byte and the 8-byte sent-at, from standard input)
        // goes through; one byte more is refused.
        let longest = String(repeating: "x", count: 256 * 1024 - 9)
        let sentLongest = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:\(port)", "msg", "send", "bob", "-"],
                                  stdin: longest, environment: passphrase)
        #expect(sentLongest.status == 0, "\(sentLongest.stderr)")
        let tooLong = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:\(port)", "msg", "send", "bob", "-"],
                              stdin: longest + "x", environment: passphrase)
        #expect(tooLong.status == 1 && tooLong.stderr.contains("the most is 262135"), "\(tooLong.stderr)")
        let readLongest = try shroudAt(bob, port, ["msg", "read", "--json"])
        #expect(readLongest.jsonLines.map { $0["text"] as? String } == [longest], "\(readLongest.stdout.count) bytes of output")

        // A reply goes the other way over the now established session, shown for people.
        #expect(try shroudAt(bob, port, ["msg", "send", "alice", "got them"]).status == 0)
        let reply = try shroudAt(alice, port, ["msg", "read"])
        #expect(reply.status == 0, "\(reply.stderr)")
        #expect(reply.stdout.contains("alice") == false && reply.stdout.contains("bob: got them"), "\(reply.stdout)")
        #expect(relay.stop(SIGTERM) == 0)

        // The relay's files hold no message text and never Alice's identity next to a message.
        var files = Data()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: relayDir + "/data")) ?? [] {
            files += (try? Data(contentsOf: URL(fileURLWithPath: relayDir + "/data/" + name))) ?? Data()
        }
        #expect(!files.isEmpty)
        for text in texts + ["got them"] { #expect(files.range(of: Data(text.utf8)) == nil) }
    }

    @Test(.timeLimit(.minutes(4))) func changedAndUnknownContactsAreRefused() throws {
        let dir = TemporaryDirectory()
        let relayDir = dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        let alice = dir.path + "/alice", bob = dir.path + "/bob", bobNew = dir.path + "/bob-new"
        _ = try newIdentity(alice)
        let bobID = try newIdentity(bob), bobNewID = try newIdentity(bobNew)
        let (relay, port) = try startRelay(in: relayDir)
        #expect(try shroudAt(bobNew, port, ["connect"]).status == 0)

        let unknown = try shroudAt(alice, port, ["msg", "send", "carol", "hi"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("carol"), "\(unknown.stderr)")

        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobID]).status == 0)
        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobNewID, "--replace"]).status == 0)
        let changed = try shroudAt(alice, port, ["msg", "send", "bob", "hi"])
        #expect(changed.status == 1)
        #expect(changed.stderr.contains("verify"), "\(changed.stderr)")

        #expect(try run(shroud, ["--home", alice, "contact", "verify", "bob", "--yes"]).status == 0)
        let verified = try shroudAt(alice, port, ["msg", "send", "bob", "hi after verifying"])
        #expect(verified.status == 0, "\(verified.stderr)")
        let read = try shroudAt(bobNew, port, ["msg", "read", "--json"])
        #expect(read.jsonLines.map { $0["text"] as? String } == ["hi after verifying"], "\(read.stdout) \(read.stderr)")
        #expect(relay.stop(SIGTERM) == 0)
    }

    @Test(.timeLimit(.minutes(4)), arguments: [false, true])
    func listenPrintsMessagesAsTheyArriveUntilSIGTERM(idleFirst: Bool) throws {
        let dir = TemporaryDirectory()
        let relayDir = dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        let alice = dir.path + "/alice", bob = dir.path + "/bob"
        let aliceID = try newIdentity(alice), bobID = try newIdentity(bob)
        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobID]).status == 0)
        #expect(try run(shroud, ["--home", bob, "contact", "add", "alice", aliceID]).status == 0)
        let (relay, port) = try startRelay(in: relayDir)

        let (listener, lines) = try startCollectingOutput(shroud, ["--home", bob, "--server", "ws://127.0.0.1:\(port)", "listen", "--json"], environment: passphrase)
        defer { if listener.isRunning { kill(listener.processIdentifier, SIGKILL); listener.waitUntilExit() } }

        if idleFirst {
            // Longer than the relay's ping interval twice over: an unanswered ping would have closed it.
            sleep(65)
            #expect(listener.isRunning, "listen survives an idle minute")
        }
        // Bob's listener publishes his card and prekeys; Alice retries until it has.
        var sent = try shroudAt(alice, port, ["msg", "send", "bob", "live one"])
        let deadline = Date().addingTimeInterval(30)
        while sent.status != 0 && Date() < deadline {
            usleep(200_000)
            sent = try shroudAt(alice, port, ["msg", "send", "bob", "live one"])
        }
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(try shroudAt(alice, port, ["msg", "send", "bob", "live two"]).status == 0)

        let wanted = ["live one", "live two"]
        while Date() < deadline {
            let texts = lines.lines().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .compactMap { $0["text"] as? String }
            if texts == wanted { break }
            usleep(50_000)
        }
        let printed = lines.lines().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(printed.compactMap { $0["text"] as? String } == wanted)
        #expect(printed.allSatisfy { $0["from"] as? String == "alice" })

        kill(listener.processIdentifier, SIGTERM)
        let stopBy = Date().addingTimeInterval(10)
        while listener.isRunning && Date() < stopBy { usleep(20_000) }
        #expect(!listener.isRunning)
        #expect(listener.terminationStatus == 0)

        // What listen printed was acknowledged: nothing is left to read.
        let later = try shroudAt(bob, port, ["msg", "read", "--json"])
        #expect(later.status == 0 && later.stdout.isEmpty, "\(later.stdout) \(later.stderr)")
        #expect(relay.stop(SIGTERM) == 0)
    }

    /// Garbage that reaches a recipient through the relay (any bucket-sized blob is accepted) is
    /// reported once, acknowledged, and does not stop the real messages behind it.
    @Test(.timeLimit(.minutes(3))) func undecryptableDeliveriesAreReportedAndDropped() throws {
        let dir = TemporaryDirectory()
        let relayDir = dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        let alice = dir.path + "/alice", bob = dir.path + "/bob"
        _ = try newIdentity(alice)
        let bobID = try newIdentity(bob)
        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobID]).status == 0)
        let (relay, port) = try startRelay(in: relayDir)
        #expect(try shroudAt(bob, port, ["connect"]).status == 0)

        // Mallory, a bare session client, sends Bob two blobs that are not sealed envelopes.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let mallory = Curve25519.Signing.PrivateKey()
        let malloryKey = try IdentityKey(Array(mallory.publicKey.rawRepresentation))
        let connection = try SessionClientConnection.connectBlocking(host: "127.0.0.1", port: port, group: group)
        guard case let .challenge(nonce, deadline, binding) = try connection.nextBlocking().message else {
            throw WireError.invalid(field: "challenge", reason: "missing")
        }
        let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: malloryKey)
        try connection.sendBlocking(SessionFrame(requestID: 1, .authenticate(identity: malloryKey,
                                                                             signature: try Ed25519Signature(Array(mallory.signature(for: transcript))))))
        #expect(try connection.nextBlocking() == SessionFrame(requestID: 1, .ok))
        let bobKey = try IdentityKey(try IdentityID(parsing: bobID).signingKey)
        let garbage: [[UInt8]] = [[UInt8](repeating: 0xAB, count: 256), try BucketPadding.pad([1] + [UInt8](repeating: 7, count: 120))]
        for (index, blob) in garbage.enumerated() {
            try connection.sendBlocking(SessionFrame(requestID: UInt32(2 + index), .sendDirect(recipient: bobKey, blob: blob)))
            #expect(try connection.nextBlocking() == SessionFrame(requestID: UInt32(2 + index), .ok))
        }
        try? connection.channel.close().wait()
        #expect(try shroudAt(alice, port, ["msg", "send", "bob", "the real one"]).status == 0)

        let read = try shroudAt(bob, port, ["msg", "read", "--json"])
        #expect(read.status == 0, "\(read.stderr)")
        #expect(read.jsonLines.map { $0["text"] as? String } == ["the real one"])
        #expect(read.stderr.components(separatedBy: "dropped undecryptable message").count - 1 == 2, "\(read.stderr)")
        let again = try shroudAt(bob, port, ["msg", "read", "--json"])
        #expect(again.status == 0 && again.stdout.isEmpty && again.stderr.isEmpty, "\(again.stdout) \(again.stderr)")
        #expect(relay.stop(SIGTERM) == 0)
    }
}
