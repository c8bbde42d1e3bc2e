import Testing
@testable import ShroudCrypto
import ShroudWire

@Suite struct SessionCipherTests {
    @Test func conversationThroughStores() throws {
        let alice = try Party(seed: 40), bob = try Party(seed: 41)
        try alice.start(with: bob)
        let first = try alice.send("hi bob", to: bob)
        guard case .preKey = first else { Issue.record("first message must be a prekey message"); return }
        let second = try alice.send("still there?", to: bob)
        #expect(bob.preKeys.oneTimePreKeyCount == 1)
        #expect(try bob.receive(first, from: alice) == "hi bob")
        #expect(bob.preKeys.oneTimePreKeyCount == 0)  // consumed only now
        // A second initial message of the same session opens with the session Bob already has.
        #expect(try bob.receive(second, from: alice) == "still there?")
        #expect(try bob.identities.check(alice.publicIdentity) == .trusted(.pinnedOnFirstUse))
        let reply = try bob.send("hi alice", to: alice)
        guard case .ratchet = reply else { Issue.record("reply must be a ratchet message"); return }
        #expect(try alice.receive(reply, from: bob) == "hi alice")
        // After the reply Alice sends plain ratchet messages.
        guard case .ratchet = try alice.send("ok", to: bob) else { Issue.record("expected a ratchet message"); return }
    }

    @Test func replayedInitialMessageChangesNothing() throws {
        let alice = try Party(seed: 42), bob = try Party(seed: 43)
        try alice.start(with: bob)
        let first = try alice.send("once", to: bob)
        #expect(try bob.receive(first, from: alice) == "once")
        let record = bob.record(with: alice)
        #expect(throws: CryptoError.self) { try bob.receive(first, from: alice) }
        #expect(bob.record(with: alice) == record)
    }

    @Test func forgedInitialMessageChangesNothing() throws {
        let alice = try Party(seed: 44), bob = try Party(seed: 45), mallory = try Party(seed: 46)
        try alice.start(with: bob)
        guard case let .preKey(genuine) = try alice.send("genuine", to: bob) else { Issue.record("expected prekey"); return }
        // Mallory keeps the prekey ids and ratchet message but claims to be Alice with her own key material.
        let forged = PreKeyMessage(initiator: alice.publicIdentity, ephemeralKey: mallory.publicIdentity.agreementKey,
                                   signedPreKeyId: genuine.signedPreKeyId, oneTimePreKeyId: genuine.oneTimePreKeyId,
                                   message: genuine.message)
        #expect(throws: CryptoError.self) { try bob.receive(.preKey(forged), from: alice) }
        #expect(bob.record(with: alice) == nil)
        #expect(bob.preKeys.oneTimePreKeyCount == 1)
        #expect(try bob.identities.check(alice.publicIdentity) == .unknown)
        #expect(try bob.receive(.preKey(genuine), from: alice) == "genuine")
    }

    @Test func changedIdentityIsRefusedLoudly() throws {
        let alice = try Party(seed: 47), bob = try Party(seed: 48)
        try alice.start(with: bob)
        #expect(try bob.receive(try alice.send("x", to: bob), from: alice) == "x")
        // Pin a different agreement binding for Alice's signing key: the next initial message is refused.
        var random = SeededRandom(seed: 5)
        let other = try IdentityKeyPair(signingSeed: alice.identity.signingSeed,
                                        agreementSecret: SecureBytes(copying: random.bytes(32)))
        bob.identities.pin(other.publicIdentity, decision: .verified)
        try alice.start(with: bob)
        let again = try alice.send("after reinstall", to: bob)
        #expect(throws: SessionTrustError.identityChanged(signingKey: alice.signingKey)) { try bob.receive(again, from: alice) }
        bob.identities.pin(alice.publicIdentity, decision: .blocked)
        #expect(throws: SessionTrustError.blocked(signingKey: alice.signingKey)) { try bob.receive(again, from: alice) }
    }

    /// Both start a session to each other at once. Rule: the session whose initiator's signing key
    /// sorts lower becomes current on both sides; the other still decrypts.
    /// Run with both role assignments for each seed pair, so both key orders are covered whatever
    /// the seeds produce.
    @Test(arguments: [(50 as UInt64, 51 as UInt64), (52, 53), (54, 55)])
    func simultaneousInitiation(seeds: (UInt64, UInt64)) throws {
        try simultaneous(Party(seed: seeds.0), Party(seed: seeds.1))
        try simultaneous(Party(seed: seeds.1), Party(seed: seeds.0))
    }

    func simultaneous(_ alice: Party, _ bob: Party) throws {
        try alice.start(with: bob)
        try bob.start(with: alice)
        let fromAlice = try alice.send("from alice", to: bob)
        let fromBob = try bob.send("from bob", to: alice)
        let lateFromBob = try bob.send("late from bob", to: alice)  // sent before Bob learned of Alice's session
        #expect(try bob.receive(fromAlice, from: alice) == "from alice")
        #expect(try alice.receive(fromBob, from: bob) == "from bob")
        let aliceRecord = try #require(alice.sessions.sessionRecord(for: bob.signingKey))
        let bobRecord = try #require(bob.sessions.sessionRecord(for: alice.signingKey))
        let lower = bytesPrecede(alice.signingKey, bob.signingKey) ? alice.signingKey : bob.signingKey
        #expect(aliceRecord.current?.initiatorSigningKey == lower)
        #expect(bobRecord.current?.initiatorSigningKey == lower)
        #expect(aliceRecord.current?.baseKey == bobRecord.current?.baseKey)
        #expect(aliceRecord.archived.count == 1 && bobRecord.archived.count == 1)
        // Both keep talking on the chosen session, in both directions.
        for i in 0..<3 {
            #expect(try bob.receive(try alice.send("a\(i)", to: bob), from: alice) == "a\(i)")
            #expect(try alice.receive(try bob.send("b\(i)", to: alice), from: bob) == "b\(i)")
        }
        #expect(alice.sessions.sessionRecord(for: bob.signingKey)?.current?.isAwaitingReply == false)
        #expect(bob.sessions.sessionRecord(for: alice.signingKey)?.current?.isAwaitingReply == false)
        // A message sent on the other session before the resolution still opens, once.
        #expect(try alice.receive(lateFromBob, from: bob) == "late from bob")
        #expect(throws: (any Error).self) { try alice.receive(lateFromBob, from: bob) }
    }

    @Test func peerStartingOverReplacesAnEstablishedSession() throws {
        let alice = try Party(seed: 56), bob = try Party(seed: 57)
        try alice.start(with: bob)
        #expect(try bob.receive(try alice.send("1", to: bob), from: alice) == "1")
        #expect(try alice.receive(try bob.send("2", to: alice), from: bob) == "2")
        // Bob lost his state and starts over; Alice must switch to Bob's new session whatever the key order.
        let bob2Sessions = InMemorySessionStore()
        let b = try alice.bundle(signedPreKeyId: 1, oneTimePreKeyId: 300)
        try SessionCipher.startSession(with: b, identities: bob.identities, sessions: bob2Sessions, random: &bob.random)
        let restart = try SessionCipher.encrypt(Array("new".utf8), to: alice.signingKey, identities: bob.identities, sessions: bob2Sessions)
        #expect(try alice.receive(restart, from: bob) == "new")
        let reply = try alice.send("welcome back", to: bob)
        let opened = try SessionCipher.decrypt(reply, from: alice.signingKey, identities: bob.identities, preKeys: bob.preKeys,
                                               signedPreKeys: bob.preKeys, sessions: bob2Sessions, now: 0, random: &bob.random)
        #expect(opened.plaintext == Array("welcome back".utf8))
    }

    @Test func recordRoundTripsAndRejectsMalformedBytes() throws {
        let alice = try Party(seed: 58), bob = try Party(seed: 59)
        try alice.start(with: bob)
        _ = try bob.receive(try alice.send("x", to: bob), from: alice)
        let bytes = try #require(bob.record(with: alice))
        #expect(try SessionRecord(parsing: bytes).serialize() == bytes)
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: (any Error).self) { try SessionRecord(parsing: Array(bytes.prefix(cut))) }
        }
        #expect(throws: (any Error).self) { try SessionRecord(parsing: bytes + [0]) }
        var version = bytes
        version[0] = 2
        #expect(throws: WireError.self) { try SessionRecord(parsing: version) }
    }

    @Test func archivedSessionsAreCapped() throws {
        let alice = try Party(seed: 60), bob = try Party(seed: 61)
        for n in 0...(SessionRecord.maxArchivedSessions + 1) {
            try alice.start(with: bob)
            let record = try #require(alice.sessions.sessionRecord(for: bob.signingKey))
            #expect(record.archived.count == min(n, SessionRecord.maxArchivedSessions))
        }
    }
}
