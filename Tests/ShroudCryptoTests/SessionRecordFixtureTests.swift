import Foundation
import Testing
@testable import ShroudCrypto
import ShroudWire

/// A version-1 session record committed as a file must keep loading and working, so a future
/// format version stays able to read records written today. The fixture holds Bob's record (with
/// skipped keys and an archived session) and messages still to be opened with it.
/// Regenerate (only when deliberately changing v1, which should never happen) with SHROUD_UPDATE_VECTORS=1.
@Suite struct SessionRecordFixtureTests {
    static let fixturePath = "Tests/ShroudCryptoTests/Resources/sessions/session-record-v1.json"

    static func generate() throws -> [String: Any] {
        let alice = try Party(seed: 4001), bob = try Party(seed: 4002)
        try alice.start(with: bob)
        #expect(try bob.receive(try alice.send("first", to: bob), from: alice) == "first")
        let late = try alice.send("late", to: bob)           // skipped at Bob
        #expect(try bob.receive(try alice.send("third", to: bob), from: alice) == "third")
        // A second, archived session: Alice starts over once more.
        try alice.start(with: bob)
        let restart = try alice.send("restart", to: bob)
        #expect(try bob.receive(restart, from: alice) == "restart")
        let next = try alice.send("next", to: bob)
        let record = try #require(bob.record(with: alice))
        return ["record": Hex.encode(record), "now": 2_000,
                "alice_signing_key": Hex.encode(alice.signingKey),
                "pending": [["message": Hex.encode(late.serialize()), "plaintext": "late"],
                            ["message": Hex.encode(next.serialize()), "plaintext": "next"]]]
    }

    @Test func versionOneRecordKeepsLoading() throws {
        let fileURL = sessionRepositoryRoot.appendingPathComponent(Self.fixturePath)
        if SessionVectorTests.updating {
            try SessionVectorTests.json(try Self.generate()).write(to: fileURL)
        }
        // Read the copy bundled as a test resource, as an installed test run would.
        let resources = try #require(Bundle.module.resourceURL)
        let bundled = resources.appendingPathComponent("Resources/sessions/session-record-v1.json")
        let data = try (try? Data(contentsOf: bundled)) ?? Data(contentsOf: fileURL)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let bytes = [UInt8](hex: try #require(object["record"] as? String))
        #expect(bytes.first == 1)
        let record = try SessionRecord(parsing: bytes)
        #expect(record.serialize() == bytes)
        #expect(record.archived.count == 1)
        #expect(record.current?.skippedKeyCount == 0)
        #expect(record.archived.first?.skippedKeyCount == 1)
        let sender = [UInt8](hex: try #require(object["alice_signing_key"] as? String))
        #expect(record.current?.remoteIdentity.signingKey == sender)
        // The stored state still opens the messages that were in flight when it was written.
        let store = InMemorySessionStore()
        store.storeSessionRecord(record, for: sender)
        let bob = try Party(seed: 4002)
        let pending = try #require(object["pending"] as? [[String: String]])
        #expect(pending.count == 2)
        for item in pending {
            let message = try SessionMessage(parsing: [UInt8](hex: try #require(item["message"])))
            let opened = try SessionCipher.decrypt(message, from: sender, identities: bob.identities, preKeys: bob.preKeys,
                                                   signedPreKeys: bob.preKeys, sessions: store, now: 2_000, random: &bob.random)
            #expect(String(decoding: opened.plaintext, as: UTF8.self) == item["plaintext"])
        }
    }
}
