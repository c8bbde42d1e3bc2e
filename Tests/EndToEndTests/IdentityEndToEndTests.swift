import Foundation
import ShroudCrypto
import Testing

/// `shroud id …` as a new user runs it (DESIGN.md §5; issue: encryption core, "Done when").
@Suite struct IdentityEndToEndTests {
    let shroud = Binaries.path("shroud")
    let passphrase = ["SHROUD_PASSPHRASE": "a passphrase for tests"]

    @Test(.timeLimit(.minutes(2))) func newThenRestoreGivesTheSameIdentity() throws {
        let dir = TemporaryDirectory()
        let created = try run(shroud, ["--home", dir.path + "/a", "id", "new", "--json"], environment: passphrase)
        #expect(created.status == 0, "\(created.stderr)")
        let object = try #require(created.jsonLines.first)
        let id = try #require(object["id"] as? String)
        let publicKey = try #require(object["public_key"] as? String)
        let phrase = try #require(object["recovery_phrase"] as? String)
        #expect(publicKey.count == 64 && publicKey.allSatisfy(\.isHexDigit))
        #expect(phrase.split(separator: " ").count == 24)

        let restored = try run(shroud, ["id", "restore", "--home", dir.path + "/b", "--json"], stdin: phrase + "\n", environment: passphrase)
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(restored.jsonLines.first?["id"] as? String == id)
        #expect(restored.jsonLines.first?["public_key"] as? String == publicKey)

        let shown = try run(shroud, ["--home", dir.path + "/b", "--json", "id", "show"])
        #expect(shown.jsonLines.first?["id"] as? String == id, "global options work before the subcommand too")

        // The profile on disk holds no secret in clear: not the phrase (single words may occur in
        // the schema's own text, so look for every pair of neighbouring words), not the entropy,
        // not the seed.
        let recovery = try RecoveryPhrase(parsing: phrase)
        let secrets: [(String, [UInt8])] = [("entropy", recovery.entropy.bytes), ("seed", try recovery.seed().bytes)]
            + zip(recovery.words, recovery.words.dropFirst()).map { ("words \($0) \($1)", Array("\($0) \($1)".utf8)) }
        for file in try FileManager.default.contentsOfDirectory(atPath: dir.path + "/a") {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/a/" + file))
            for (name, secret) in secrets {
                #expect(bytes.range(of: Data(secret)) == nil, "\(name) found in \(file)")
            }
        }
    }

    @Test(.timeLimit(.minutes(2))) func badPhrasesAndPassphrasesAreRefusedWithAReason() throws {
        let dir = TemporaryDirectory()
        let created = try run(shroud, ["--home", dir.path + "/a", "id", "new", "--json"], environment: passphrase)
        let phrase = try #require(created.jsonLines.first?["recovery_phrase"] as? String)
        var words = phrase.split(separator: " ").map(String.init)
        // Swap two different words: every word stays valid but the checksum almost surely breaks.
        if let other = words.firstIndex(where: { $0 != words[0] }) { words.swapAt(0, other) }
        let badChecksum = try run(shroud, ["--home", dir.path + "/b", "id", "restore"], stdin: words.joined(separator: " "), environment: passphrase)
        #expect(badChecksum.status == 1)
        #expect(badChecksum.stderr.contains("checksum"), "\(badChecksum.stderr)")
        #expect(badChecksum.stderr.split(separator: "\n").count == 1)

        words = phrase.split(separator: " ").map(String.init)
        words[5] = "notaword"
        let unknown = try run(shroud, ["--home", dir.path + "/c", "id", "restore"], stdin: words.joined(separator: " "), environment: passphrase)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("notaword"))

        let wrong = try run(shroud, ["--home", dir.path + "/a", "id", "split", "--shares", "3", "--threshold", "2"],
                            environment: ["SHROUD_PASSPHRASE": "not the passphrase"])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("wrong passphrase"))

        let twice = try run(shroud, ["--home", dir.path + "/a", "id", "new"], environment: passphrase)
        #expect(twice.status == 1, "an existing identity is never replaced")

        let missing = try run(shroud, ["--home", dir.path + "/none", "id", "show"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no identity"))

        let noPassphrase = try run(shroud, ["--home", dir.path + "/d", "id", "new"], environment: ["SHROUD_PASSPHRASE": ""])
        #expect(noPassphrase.status == 1)

        let usage = try run(shroud, ["id", "split", "--shares", "300", "--threshold", "2"])
        #expect(usage.status == 2)
    }

    @Test(.timeLimit(.minutes(2))) func threeOfFiveSharesRestoreThePhraseTwoDoNotAndCorruptionIsCaught() throws {
        let dir = TemporaryDirectory()
        let created = try run(shroud, ["--home", dir.path, "id", "new", "--json"], environment: passphrase)
        let phrase = try #require(created.jsonLines.first?["recovery_phrase"] as? String)
        let split = try run(shroud, ["--home", dir.path, "id", "split", "--shares", "5", "--threshold", "3"], environment: passphrase)
        #expect(split.status == 0, "\(split.stderr)")
        let shares = split.lines
        #expect(shares.count == 5)

        for chosen in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let combined = try run(shroud, ["id", "combine"], stdin: chosen.map { shares[$0] }.joined(separator: "\n"))
            #expect(combined.status == 0, "\(combined.stderr)")
            #expect(combined.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == phrase)
        }
        let two = try run(shroud, ["id", "combine"], stdin: shares[0] + "\n" + shares[3])
        #expect(two.status == 1)
        #expect(!two.stdout.contains(phrase))

        // Change one character of the share's payload.
        var damaged = Array(shares[2])
        let position = damaged.count / 2
        damaged[position] = damaged[position] == "a" ? "b" : "a"
        let corrupted = try run(shroud, ["id", "combine"], stdin: [shares[0], shares[1], String(damaged)].joined(separator: "\n"))
        #expect(corrupted.status == 1)
        #expect(corrupted.stderr.contains("line 3"), "\(corrupted.stderr)")
    }
}
