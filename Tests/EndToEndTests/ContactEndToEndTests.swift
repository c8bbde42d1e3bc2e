import Foundation
import Testing

/// `shroud contact …` as a user runs it (DESIGN.md §5; issue: relay and messaging, client part).
@Suite struct ContactEndToEndTests {
    let shroud = Binaries.path("shroud")
    let passphrase = ["SHROUD_PASSPHRASE": "a passphrase for tests"]

    /// Creates a profile under `home` and returns its id.
    private func newIdentity(_ home: String) throws -> String {
        let created = try run(shroud, ["--home", home, "id", "new", "--json"], environment: passphrase)
        #expect(created.status == 0, "\(created.stderr)")
        return try #require(created.jsonLines.first?["id"] as? String)
    }

    @Test(.timeLimit(.minutes(3))) func addListAndVerifyGiveTheSameSafetyNumberOnBothSides() throws {
        let dir = TemporaryDirectory()
        let alice = dir.path + "/alice", bob = dir.path + "/bob"
        let aliceID = try newIdentity(alice), bobID = try newIdentity(bob)

        let added = try run(shroud, ["--home", alice, "contact", "add", "bob", bobID])
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stdout.contains("unverified"))
        #expect(try run(shroud, ["--home", bob, "contact", "add", "alice", aliceID]).status == 0)

        let listed = try run(shroud, ["--home", alice, "contact", "list", "--json"])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(listed.jsonLines.count == 1)
        #expect(listed.jsonLines.first?["name"] as? String == "bob")
        #expect(listed.jsonLines.first?["id"] as? String == bobID)
        #expect(listed.jsonLines.first?["verified"] as? Bool == false)

        // Without a terminal and without --yes nothing is marked verified.
        let unconfirmed = try run(shroud, ["--home", alice, "contact", "verify", "bob"])
        #expect(unconfirmed.status == 1)
        #expect(unconfirmed.stderr.contains("--yes"), "\(unconfirmed.stderr)")
        #expect(try run(shroud, ["--home", alice, "contact", "list", "--json"]).jsonLines.first?["verified"] as? Bool == false)

        let aliceSide = try run(shroud, ["--home", alice, "contact", "verify", "bob", "--yes", "--json"])
        let bobSide = try run(shroud, ["--home", bob, "contact", "verify", "alice", "--yes", "--json"])
        #expect(aliceSide.status == 0 && bobSide.status == 0, "\(aliceSide.stderr) \(bobSide.stderr)")
        let number = try #require(aliceSide.jsonLines.first?["safety_number"] as? String)
        #expect(number.filter(\.isNumber).count == 60)
        #expect(bobSide.jsonLines.first?["safety_number"] as? String == number, "both sides compute the same 60 digits")

        let people = try run(shroud, ["--home", alice, "contact", "verify", "bob", "--yes"])
        #expect(people.stdout.contains(String(number.prefix(11))), "the number is printed for people too")
        let list = try run(shroud, ["--home", alice, "contact", "list"])
        #expect(list.stdout.contains("bob") && list.stdout.contains(bobID) && list.stdout.contains("verified"))
        #expect(try run(shroud, ["--home", alice, "contact", "list", "--json"]).jsonLines.first?["verified"] as? Bool == true)
    }

    /// The question is asked on a real terminal: util-linux `script` (bsdutils, an essential Debian
    /// package) gives the command a pseudo-terminal and feeds it our standard input.
    @Test(.timeLimit(.minutes(3))) func theTerminalQuestionDecides() throws {
        let dir = TemporaryDirectory()
        let alice = dir.path + "/alice"
        _ = try newIdentity(alice)
        let bobID = try newIdentity(dir.path + "/bob")
        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobID]).status == 0)
        let command = "'\(shroud)' --home '\(alice)' contact verify bob"
        let declined = try run("/usr/bin/script", ["-q", "-e", "-c", command, "/dev/null"], stdin: "n\n")
        #expect(declined.status == 1)
        #expect(declined.stdout.contains("[y/N]") && declined.stdout.contains("not verified"), "\(declined.stdout)")
        #expect(try run(shroud, ["--home", alice, "contact", "list", "--json"]).jsonLines.first?["verified"] as? Bool == false)

        let confirmed = try run("/usr/bin/script", ["-q", "-e", "-c", command, "/dev/null"], stdin: "y\n")
        #expect(confirmed.status == 0, "\(confirmed.stdout)")
        #expect(confirmed.stdout.contains("bob is verified"))
        #expect(try run(shroud, ["--home", alice, "contact", "list", "--json"]).jsonLines.first?["verified"] as? Bool == true)
    }

    @Test(.timeLimit(.minutes(3))) func aChangedKeyIsALoudWarningAndNeedsVerification() throws {
        let dir = TemporaryDirectory()
        let alice = dir.path + "/alice"
        _ = try newIdentity(alice)
        let bobID = try newIdentity(dir.path + "/bob"), malloryID = try newIdentity(dir.path + "/mallory")
        #expect(try run(shroud, ["--home", alice, "contact", "add", "bob", bobID]).status == 0)
        #expect(try run(shroud, ["--home", alice, "contact", "verify", "bob", "--yes"]).status == 0)

        let refused = try run(shroud, ["--home", alice, "contact", "add", "bob", malloryID])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("WARNING") && refused.stderr.contains("--replace"), "\(refused.stderr)")
        #expect(refused.stdout.isEmpty)
        #expect(try run(shroud, ["--home", alice, "contact", "list", "--json"]).jsonLines.first?["id"] as? String == bobID)

        let replaced = try run(shroud, ["--home", alice, "contact", "add", "bob", malloryID, "--replace", "--json"])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        #expect(replaced.stderr.contains("WARNING"), "a replaced key is loud even in JSON mode")
        let listed = try #require(try run(shroud, ["--home", alice, "contact", "list", "--json"]).jsonLines.first)
        #expect(listed["id"] as? String == malloryID)
        #expect(listed["verified"] as? Bool == false)
        #expect(listed["trust"] as? String == "changed")
        #expect(try run(shroud, ["--home", alice, "contact", "list"]).stdout.contains("CHANGED"))
    }

    @Test(.timeLimit(.minutes(2))) func badIdsAndNamesGiveOneLineErrors() throws {
        let dir = TemporaryDirectory()
        let alice = dir.path + "/alice"
        let aliceID = try newIdentity(alice)
        let bobID = try newIdentity(dir.path + "/bob")
        // One character changed: the checksum catches it.
        var characters = Array(bobID)
        let index = characters.count - 5
        characters[index] = characters[index] == "a" ? "b" : "a"
        let typo = try run(shroud, ["--home", alice, "contact", "add", "bob", String(characters)])
        #expect(typo.status == 1)
        #expect(typo.stderr.contains("checksum"), "\(typo.stderr)")
        #expect(typo.stderr.split(separator: "\n").count == 1)

        let notAnID = try run(shroud, ["--home", alice, "contact", "add", "bob", "hello"])
        #expect(notAnID.status == 1 && notAnID.stderr.split(separator: "\n").count == 1, "\(notAnID.stderr)")

        let own = try run(shroud, ["--home", alice, "contact", "add", "me", aliceID])
        #expect(own.status == 1 && own.stderr.contains("own identity"), "\(own.stderr)")

        let longName = try run(shroud, ["--home", alice, "contact", "add", String(repeating: "n", count: 65), bobID])
        #expect(longName.status == 1 && longName.stderr.contains("at most 64"), "\(longName.stderr)")

        let unknown = try run(shroud, ["--home", alice, "contact", "verify", "nobody", "--yes"])
        #expect(unknown.status == 1 && unknown.stderr.contains("no contact named"), "\(unknown.stderr)")

        let usage = try run(shroud, ["--home", alice, "contact", "add", "bob"])
        #expect(usage.status == 2)

        let noProfile = try run(shroud, ["--home", dir.path + "/none", "contact", "list"])
        #expect(noProfile.status == 1 && noProfile.stderr.contains("id new"), "\(noProfile.stderr)")
    }
}
