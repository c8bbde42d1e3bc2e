import Foundation
import ShroudTestSupport
import Testing

/// Channels with the real binaries on loopback (issue 4, client side): private channels, invites
/// (single use, expiry), sender keys distributed over the pairwise sessions and replaced when a
/// member leaves or is kicked, exactly-once display, and a relay that never sees names or text.
@Suite(.serialized) struct ChannelEndToEndTests {
    let shroud = Binaries.path("shroud")
    let passphrase = ["SHROUD_PASSPHRASE": "a passphrase for tests"]

    private func newIdentity(_ home: String) throws -> String {
        let created = try run(shroud, ["--home", home, "id", "new", "--json"], environment: passphrase)
        #expect(created.status == 0, "\(created.stderr)")
        return try #require(created.jsonLines.first?["id"] as? String)
    }

    private func startRelay(in directory: String) throws -> (BackgroundProcess, Int) {
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"], directory: directory)
        let line = try relay.waitForLine(containing: "listening")
        guard let port = line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap({ Int($0.dropFirst(5)) }) else {
            throw TimedOut(command: "no port in \(line)")
        }
        return (relay, port)
    }

    /// Runs `shroud --json` with the profile `home` against the relay on `port`.
    private func at(_ home: String, _ port: Int, _ arguments: [String]) throws -> RunResult {
        try run(shroud, ["--home", home, "--server", "ws://127.0.0.1:\(port)", "--json"] + arguments, environment: passphrase, timeout: 60)
    }

    /// `arguments` must succeed; returns its JSON lines.
    @discardableResult
    private func ok(_ home: String, _ port: Int, _ arguments: [String]) throws -> [[String: Any]] {
        let result = try at(home, port, arguments)
        #expect(result.status == 0, "\(arguments): \(result.stderr)")
        return result.jsonLines
    }

    /// `arguments` must fail with exit 1 and a one-line reason containing `reason`.
    private func refused(_ home: String, _ port: Int, _ arguments: [String], _ reason: String) throws {
        let result = try at(home, port, arguments)
        #expect(result.status == 1, "\(arguments) should fail: \(result.stdout)")
        #expect(result.stderr.contains(reason) && result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
    }

    private func texts(_ lines: [[String: Any]]) -> [String] { lines.compactMap { $0["text"] as? String } }

    @Test(.timeLimit(.minutes(6))) func privateChannelWithInvitesLeaveAndKick() throws {
        let dir = TemporaryDirectory()
        let relayDir = dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        let alice = dir.path + "/alice", bob = dir.path + "/bob", carol = dir.path + "/carol", dave = dir.path + "/dave"
        let erin = dir.path + "/erin"
        _ = try newIdentity(erin)
        let aliceID = try newIdentity(alice)
        _ = try newIdentity(bob)
        _ = try newIdentity(carol)
        let daveID = try newIdentity(dave)
        #expect(try run(shroud, ["--home", bob, "contact", "add", "alice", aliceID]).status == 0)
        let (relay, port) = try startRelay(in: relayDir)
        defer { _ = relay.stop(SIGKILL) }

        let name = "plans-4f2a9c"
        let created = try #require(try ok(alice, port, ["channel", "create", name, "--private"]).first)
        let channel = try #require(created["channel"] as? String)
        #expect(channel.count == 32)

        // A single-use invite: Bob gets in, Carol is refused with a reason.
        let single = try #require(try ok(alice, port, ["channel", "invite", name]).first?["invite"] as? String)
        #expect(single.hasPrefix("shroud-invite-1."))
        let joined = try #require(try ok(bob, port, ["channel", "join", single]).first)
        #expect(joined["channel"] as? String == channel && joined["name"] as? String == name)
        try refused(carol, port, ["channel", "join", single], "invite")

        // An invite that expired is refused too.
        let shortLived = try #require(try ok(alice, port, ["channel", "invite", channel, "--ttl", "1s"]).first?["invite"] as? String)
        Thread.sleep(forTimeInterval: 2.5)
        try refused(carol, port, ["channel", "join", shortLived], "invite")

        // The largest use count and lifetime are accepted.
        let widest = try #require(try ok(alice, port, ["channel", "invite", name, "--uses", "1000", "--ttl", "30d"]).first)
        #expect(widest["uses"] as? Int == 1000)
        let widestInvite = try #require(widest["invite"] as? String)
        let double = try #require(try ok(alice, port, ["channel", "invite", name, "--uses", "2", "--ttl", "1h"]).first?["invite"] as? String)
        try ok(carol, port, ["channel", "join", double])
        try ok(dave, port, ["channel", "join", double])
        let members = try ok(alice, port, ["channel", "members", name])
        #expect(members.count == 4)
        #expect(members.compactMap { $0["role"] as? String }.sorted() == ["member", "member", "member", "owner"])

        // The first send creates Alice's sender key and gives it to the three others.
        let first = try #require(try ok(alice, port, ["channel", "send", name, "hello from alice"]).first)
        #expect(first["rotated"] as? Bool == true && first["distributed"] as? Int == 3)
        let again = try #require(try ok(alice, port, ["channel", "send", name, "second from alice"]).first)
        #expect(again["rotated"] as? Bool == false && again["distributed"] as? Int == 0)
        try ok(bob, port, ["channel", "send", name, "hi from bob"])

        let bobRead = try ok(bob, port, ["channel", "read", name])
        #expect(texts(bobRead) == ["hello from alice", "second from alice"])
        #expect(bobRead.first?["from"] as? String == "alice" && bobRead.first?["channel"] as? String == channel)
        #expect(bobRead.first?["sent_at"] is Int && bobRead.first?["received_at"] is Int)
        #expect(texts(try ok(carol, port, ["channel", "read", channel])) == ["hello from alice", "second from alice", "hi from bob"])
        // Exactly once: nothing the second time.
        #expect(texts(try ok(bob, port, ["channel", "read", name])).isEmpty)
        #expect(texts(try ok(carol, port, ["channel", "read", name])).isEmpty)
        // Sender keys travel as direct messages, but `msg read` shows none of them.
        #expect(texts(try ok(carol, port, ["msg", "read"])).isEmpty)

        // Bob leaves: Alice's next send replaces her key, and only Carol and Dave get the new one.
        try ok(bob, port, ["channel", "leave", name])
        let afterLeave = try #require(try ok(alice, port, ["channel", "send", name, "after bob left"]).first)
        #expect(afterLeave["rotated"] as? Bool == true && afterLeave["distributed"] as? Int == 2)
        #expect(texts(try ok(carol, port, ["channel", "read", name])) == ["after bob left"])
        try refused(bob, port, ["channel", "read", name], "not a member")
        try refused(bob, port, ["channel", "send", name, "let me back"], "not a member")

        // Dave is kicked: refused from then on; Carol still reads.
        try refused(carol, port, ["channel", "kick", name, daveID], "not allowed")
        try ok(alice, port, ["channel", "kick", name, daveID])
        let afterKick = try #require(try ok(alice, port, ["channel", "send", name, "after dave was kicked"]).first)
        #expect(afterKick["rotated"] as? Bool == true && afterKick["distributed"] as? Int == 1)
        #expect(texts(try ok(carol, port, ["channel", "read", name])) == ["after dave was kicked"])
        // Dave was offline when kicked: he still holds what he stored before, but nothing later.
        try refused(dave, port, ["channel", "read", name], "not a member")
        try refused(dave, port, ["channel", "send", name, "still here?"], "not a member")
        #expect(try ok(alice, port, ["channel", "members", name]).count == 2)

        // Erin joins late: the next send makes a new key (rotation on join), and Erin's history
        // starts at the join — none of the earlier messages.
        try ok(erin, port, ["channel", "join", widestInvite])
        let afterJoin = try #require(try ok(alice, port, ["channel", "send", name, "welcome erin"]).first)
        #expect(afterJoin["rotated"] as? Bool == true && afterJoin["distributed"] as? Int == 2)
        #expect(texts(try ok(erin, port, ["channel", "read", name])) == ["welcome erin"])
        #expect(texts(try ok(carol, port, ["channel", "read", name])) == ["welcome erin"])
        // A channel the profile does not know at all.
        try refused(dave, port, ["channel", "read", "no-such-channel"], "no channel")

        // The relay's files hold neither the channel's name nor any message text.
        #expect(relay.stop(SIGTERM) == 0)
        let secrets = [name, "hello from alice", "second from alice", "hi from bob", "after bob left", "after dave was kicked", "welcome erin"]
        let files = try FileManager.default.subpathsOfDirectory(atPath: relayDir)
        #expect(!files.isEmpty)
        for file in files {
            guard let data = FileManager.default.contents(atPath: relayDir + "/" + file) else { continue }
            for secret in secrets { #expect(data.range(of: Data(secret.utf8)) == nil, "\(file) contains \"\(secret)\"") }
        }
    }

    /// Invite options past their limits, a malformed invite and a name past its limit are refused
    /// before any network traffic (no relay runs here).
    @Test(.timeLimit(.minutes(2))) func badOptionsAndInvitesAreRefused() throws {
        let dir = TemporaryDirectory()
        let alice = dir.path + "/alice"
        _ = try newIdentity(alice)
        for options in [["--uses", "0"], ["--uses", "1001"], ["--ttl", "0"], ["--ttl", "2592001"], ["--ttl", "31d"], ["--ttl", "1w"], ["--ttl", "-5"]] {
            let result = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:1", "channel", "invite", "x"] + options, environment: passphrase)
            #expect(result.status == 2, "\(options): \(result.stderr)")
        }
        let damaged = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:1", "channel", "join", "shroud-invite-1.AAAA"], environment: passphrase)
        #expect(damaged.status == 1 && damaged.stderr.contains("not a valid invite"), "\(damaged.stderr)")
        let longest = String(repeating: "n", count: 64)
        for bad in [longest + "n", "", String(repeating: "ab", count: 16)] {
            let result = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:1", "channel", "create", bad], environment: passphrase)
            #expect(result.status == 2, "\(bad): \(result.stderr)")
        }
        // At the limit the name passes validation (and fails only at the missing relay).
        let atLimit = try run(shroud, ["--home", alice, "--server", "ws://127.0.0.1:1", "channel", "create", longest], environment: passphrase)
        #expect(atLimit.status == 1 && atLimit.stderr.contains("cannot reach"), "\(atLimit.stderr)")
    }

    @Test(.timeLimit(.minutes(3))) func listenPrintsChannelMessagesAsTheyArrive() throws {
        let dir = TemporaryDirectory()
        let relayDir = dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        let alice = dir.path + "/alice", bob = dir.path + "/bob"
        _ = try newIdentity(alice)
        _ = try newIdentity(bob)
        let (relay, port) = try startRelay(in: relayDir)
        defer { _ = relay.stop(SIGKILL) }
        try ok(alice, port, ["channel", "create", "lobby"])
        let invite = try #require(try ok(alice, port, ["channel", "invite", "lobby"]).first?["invite"] as? String)
        try ok(bob, port, ["channel", "join", invite])
        let (listener, lines) = try startCollectingOutput(shroud, ["--home", bob, "--server", "ws://127.0.0.1:\(port)", "--json", "listen"], environment: passphrase)
        defer { if listener.isRunning { kill(listener.processIdentifier, SIGKILL); listener.waitUntilExit() } }

        try ok(alice, port, ["channel", "send", "lobby", "live one"])
        let deadline = Date().addingTimeInterval(30)
        var printed: [[String: Any]] = []
        while Date() < deadline {
            printed = lines.lines().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            if !printed.isEmpty { break }
            usleep(50_000)
        }
        #expect(texts(printed) == ["live one"])
        #expect(printed.first?["channel_name"] as? String == "lobby")
        kill(listener.processIdentifier, SIGTERM)
        listener.waitUntilExit()
        #expect(listener.terminationStatus == 0)
        // Shown by `listen`, so not again by `channel read`.
        #expect(texts(try ok(bob, port, ["channel", "read", "lobby"])).isEmpty)

        // `channel read --wait` shows what arrives while it waits (Alice's key is unchanged, so only
        // the channel message travels).
        final class Box: @unchecked Sendable { var result: RunResult? }
        let box = Box()
        let reader = Thread { [self] in box.result = try? self.at(bob, port, ["channel", "read", "lobby", "--wait", "12"]) }
        reader.start()
        Thread.sleep(forTimeInterval: 4)
        try ok(alice, port, ["channel", "send", "lobby", "while waiting"])
        let waitDeadline = Date().addingTimeInterval(40)
        while box.result == nil && Date() < waitDeadline { usleep(100_000) }
        let waited = try #require(box.result)
        #expect(waited.status == 0, "\(waited.stderr)")
        #expect(texts(waited.jsonLines) == ["while waiting"])
    }
}
