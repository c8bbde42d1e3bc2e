import Foundation
import ShroudCrypto
import Testing
@testable import ShroudStore

/// The same behaviour, checked against the in-memory stores of ShroudCrypto and the SQLite stores
/// of the profile.
@Suite struct SessionStoreBehaviourTests {
    @Test(arguments: Backend.allCases) func identityStorePinsAndReportsChanges(backend: Backend) throws {
        let (stores, _, _) = try backend.make(seed: 1)
        var random = SeededRandom(seed: 2)
        let remotePair = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        let remote = remotePair.publicIdentity
        #expect(try stores.identities.check(remote) == .unknown)
        try stores.identities.acceptOnFirstUse(remote)
        #expect(try stores.identities.check(remote) == .trusted(.pinnedOnFirstUse))
        try stores.identities.pin(remote, decision: .verified)
        #expect(try stores.identities.pinnedIdentity(signingKey: remote.signingKey)?.decision == .verified)

        // Same signing key, another (validly signed) agreement key: a change, never a silent swap.
        let rebound = try IdentityKeyPair(signingSeed: SecureBytes(copying: remotePair.signingSeed.bytes),
                                          agreementSecret: SecureBytes(copying: random.bytes(32))).publicIdentity
        #expect(rebound.signingKey == remote.signingKey && rebound != remote)
        #expect(try stores.identities.check(rebound) == .changed(pinned: remote))
        #expect(throws: SessionTrustError.identityChanged(signingKey: remote.signingKey)) {
            try stores.identities.acceptOnFirstUse(rebound)
        }
        try stores.identities.pin(remote, decision: .blocked)
        #expect(try stores.identities.check(remote) == .blocked)
        #expect(throws: SessionTrustError.blocked(signingKey: remote.signingKey)) { try stores.identities.acceptOnFirstUse(remote) }
    }

    @Test(arguments: Backend.allCases) func preKeysAreStoredCountedAndRemoved(backend: Backend) throws {
        let (stores, identity, _) = try backend.make(seed: 3)
        var random = SeededRandom(seed: 4)
        let batch = OneTimePreKey.generateBatch(firstId: UInt32.max - 1, count: 3, random: &random)
        for key in batch { try stores.preKeys.storeOneTimePreKey(key) }
        #expect(try stores.preKeys.oneTimePreKeyCount == 3)
        let loaded = try #require(try stores.preKeys.oneTimePreKey(id: 0))
        #expect(loaded.publicKey == batch[2].publicKey && loaded.secret.bytes == batch[2].secret.bytes)
        try stores.preKeys.removeOneTimePreKey(id: 0)
        #expect(try stores.preKeys.oneTimePreKey(id: 0) == nil)
        #expect(try stores.preKeys.oneTimePreKeyCount == 2)

        let second = try SignedPreKey.generate(id: 9, identity: identity, now: 20, random: &random)
        let first = try SignedPreKey.generate(id: 2, identity: identity, now: 10, random: &random)
        try stores.signedPreKeys.storeSignedPreKey(second)
        try stores.signedPreKeys.storeSignedPreKey(first)
        #expect(try stores.signedPreKeys.allSignedPreKeys().map(\.id) == [2, 9])
        #expect(try stores.signedPreKeys.signedPreKey(id: 9)?.serialize() == second.serialize())
        try stores.signedPreKeys.removeSignedPreKey(id: 2)
        #expect(try stores.signedPreKeys.allSignedPreKeys().map(\.id) == [9])
        #expect(try stores.signedPreKeys.signedPreKey(id: 2) == nil)
    }

    @Test(arguments: Backend.allCases) func aConversationRunsOverTheStores(backend: Backend) throws {
        let (aliceStores, aliceIdentity, _) = try backend.make(seed: 5)
        let (bobStores, bobIdentity, _) = try backend.make(seed: 6)
        let alice = Correspondent(identity: aliceIdentity, stores: aliceStores, seed: 7)
        let bob = Correspondent(identity: bobIdentity, stores: bobStores, seed: 8)
        try alice.start(with: try bob.publishBundle())
        #expect(try SessionCipher.hasSession(with: bob.signingKey, sessions: aliceStores.sessions))
        #expect(try bob.receive(try alice.send("hello bob", to: bob), from: alice) == "hello bob")
        #expect(try bobStores.preKeys.oneTimePreKeyCount == 0, "the one-time prekey is consumed")
        #expect(try bobStores.identities.check(aliceIdentity.publicIdentity) == .trusted(.pinnedOnFirstUse))
        for round in 0..<5 {
            #expect(try alice.receive(try bob.send("reply \(round)", to: alice), from: bob) == "reply \(round)")
            #expect(try bob.receive(try alice.send("again \(round)", to: bob), from: alice) == "again \(round)")
        }
        try aliceStores.sessions.removeSessionRecord(for: bob.signingKey)
        #expect(try !SessionCipher.hasSession(with: bob.signingKey, sessions: aliceStores.sessions))
    }

    @Test(arguments: Backend.allCases) func senderKeysFollowMembership(backend: Backend) throws {
        let (alice, _, _) = try backend.make(seed: 9)
        let (bob, _, _) = try backend.make(seed: 10)
        var random = SeededRandom(seed: 11)
        let channel: [UInt8] = Array("channel-1".utf8)
        let (a, c): ([UInt8], [UInt8]) = ([0xA1], [0xC1])
        let distribution = try SenderKeyCipher.ownDistribution(channel: channel, store: alice.senderKeys, random: &random)
        try SenderKeyCipher.process(distribution, channel: channel, sender: a, store: bob.senderKeys)
        try SenderKeyCipher.process(distribution, channel: channel, sender: c, store: bob.senderKeys)
        #expect(try bob.senderKeys.senders(channel: channel) == [a, c])
        let message = try SenderKeyCipher.encrypt(Array("to all".utf8), channel: channel, store: alice.senderKeys, random: &random)
        #expect(try SenderKeyCipher.decrypt(message, channel: channel, sender: a, store: bob.senderKeys) == Array("to all".utf8))
        #expect(throws: CryptoError.self) {
            try SenderKeyCipher.decrypt(message, channel: channel, sender: a, store: bob.senderKeys)
        }
        _ = try SenderKeyCipher.memberRemoved(c, channel: channel, store: bob.senderKeys, random: &random)
        #expect(try bob.senderKeys.senders(channel: channel) == [a])
        #expect(try bob.senderKeys.ownSenderKey(channel: channel) != nil)
        #expect(try bob.senderKeys.senderKeyRecord(channel: Array("other".utf8), sender: a) == nil)
    }
}

/// What only the SQLite stores do: survive reopening, refuse swapped rows, keep secrets out of the
/// file, and stop when the profile is locked.
@Suite struct SQLiteSessionStoreTests {
    @Test func twoProfilesTalkAndKeepTheirStateAcrossReopening() throws {
        let aliceProfile = try TestProfile(seed: 20), bobProfile = try TestProfile(seed: 21)
        var alice = Correspondent(identity: aliceProfile.identity, stores: aliceProfile.stores(), seed: 22)
        var bob = Correspondent(identity: bobProfile.identity, stores: bobProfile.stores(), seed: 23)
        try alice.start(with: try bob.publishBundle())
        #expect(try bob.receive(try alice.send("first", to: bob), from: alice) == "first")
        #expect(try alice.receive(try bob.send("second", to: alice), from: bob) == "second")

        // Both sides restart: new ProfileStore, passphrase unlock, new stores.
        let aliceAgain = try TestProfile(reopening: aliceProfile), bobAgain = try TestProfile(reopening: bobProfile)
        alice = Correspondent(identity: aliceAgain.identity, stores: aliceAgain.stores(), seed: 24)
        bob = Correspondent(identity: bobAgain.identity, stores: bobAgain.stores(), seed: 25)
        #expect(try bob.receive(try alice.send("after restart", to: bob), from: alice) == "after restart")
        #expect(try alice.receive(try bob.send("still here", to: alice), from: bob) == "still here")
        #expect(try bob.stores.identities.check(aliceProfile.identity.publicIdentity) == .trusted(.pinnedOnFirstUse))
        #expect(try bob.stores.signedPreKeys.allSignedPreKeys().map(\.id) == [1])
    }

    @Test func swappedAndAlteredRowsAreRefused() throws {
        let profile = try TestProfile(seed: 30)
        let stores = profile.stores()
        let first = try TestProfile(seed: 31).identity, second = try TestProfile(seed: 32).identity
        let me = Correspondent(identity: profile.identity, stores: stores, seed: 33)
        try me.start(with: try Correspondent(identity: first, stores: StoreSet.inMemory(first), seed: 34).publishBundle())
        try me.start(with: try Correspondent(identity: second, stores: StoreSet.inMemory(second), seed: 35).publishBundle())
        let firstKey = first.publicIdentity.signingKey, secondKey = second.publicIdentity.signingKey

        // Copy the session with `second` over the session with `first`.
        let secondRow = try #require(try profile.blob("SELECT sealed_record FROM session WHERE remote_signing_key = ?", [Data(secondKey)]))
        try profile.execute("UPDATE session SET sealed_record = ? WHERE remote_signing_key = ?", [Data(secondRow), Data(firstKey)])
        #expect(throws: ProfileError.rowAuthenticationFailed(table: "session", row: hexPrefix(firstKey))) {
            try stores.sessions.sessionRecord(for: firstKey)
        }
        #expect(try stores.sessions.sessionRecord(for: secondKey) != nil)

        // Flip one byte of the ciphertext.
        var altered = secondRow
        altered[altered.count / 2] ^= 0x01
        try profile.execute("UPDATE session SET sealed_record = ? WHERE remote_signing_key = ?", [Data(altered), Data(secondKey)])
        let error = #expect(throws: ProfileError.self) { try stores.sessions.sessionRecord(for: secondKey) }
        #expect(error?.description.contains("failed authentication") == true)

        // A truncated box and a moved one-time prekey are refused the same way.
        try profile.execute("UPDATE session SET sealed_record = ? WHERE remote_signing_key = ?", [Data(secondRow.prefix(20)), Data(secondKey)])
        #expect(throws: ProfileError.rowAuthenticationFailed(table: "session", row: hexPrefix(secondKey))) {
            try stores.sessions.sessionRecord(for: secondKey)
        }
        var random = SeededRandom(seed: 36)
        try stores.preKeys.storeOneTimePreKey(OneTimePreKey.generate(id: 1, random: &random))
        try stores.preKeys.storeOneTimePreKey(OneTimePreKey.generate(id: 2, random: &random))
        try profile.execute("UPDATE one_time_prekey SET id = 3 WHERE id = 2")
        #expect(throws: ProfileError.rowAuthenticationFailed(table: "one_time_prekey", row: "3")) {
            try stores.preKeys.oneTimePreKey(id: 3)
        }
        // Sender-key rows are bound to both the channel and the member.
        let channel: [UInt8] = [1, 2, 3]
        let distribution = try SenderKeyCipher.ownDistribution(channel: channel, store: InMemorySenderKeyStore(), random: &random)
        try SenderKeyCipher.process(distribution, channel: channel, sender: [0xAA], store: stores.senderKeys)
        try profile.execute("UPDATE sender_key SET sender = ? WHERE sender = ?", [Data([0xBB]), Data([0xAA])])
        #expect(throws: ProfileError.rowAuthenticationFailed(table: "sender_key", row: "010203/bb")) {
            try stores.senderKeys.senderKeyRecord(channel: channel, sender: [0xBB])
        }
    }

    @Test func wronglyTypedValuesAreErrorsNotCrashes() throws {
        let profile = try TestProfile(seed: 37)
        let stores = profile.stores()
        let remote = try TestProfile(seed: 38).identity.publicIdentity
        try stores.identities.pin(remote, decision: .pinnedOnFirstUse)
        try profile.execute("UPDATE pinned_identity SET agreement_key = 7")
        #expect(throws: ProfileError.self) { try stores.identities.pinnedIdentity(signingKey: remote.signingKey) }
        try stores.identities.pin(remote, decision: .pinnedOnFirstUse)
        try profile.execute("UPDATE pinned_identity SET decision = 'verified'")
        #expect(throws: ProfileError.self) { try stores.identities.pinnedIdentity(signingKey: remote.signingKey) }
        try profile.execute("UPDATE pinned_identity SET decision = 9")
        #expect(throws: ProfileError.self) { try stores.identities.pinnedIdentity(signingKey: remote.signingKey) }

        let book = ContactBook(profile: profile.profile)
        try book.add(name: "bob", id: remote.id)
        try profile.execute("UPDATE contact SET added_at = x'00ff'")
        #expect(throws: ProfileError.self) { try book.all() }
        try profile.execute("UPDATE contact SET added_at = changed_at, trust = 5")
        #expect(throws: ProfileError.self) { try book.contact(named: "bob") }

        var random = SeededRandom(seed: 39)
        try stores.signedPreKeys.storeSignedPreKey(try SignedPreKey.generate(id: 1, identity: profile.identity, now: 0, random: &random))
        try profile.execute("UPDATE signed_prekey SET sealed_record = 42")
        #expect(throws: ProfileError.self) { try stores.signedPreKeys.allSignedPreKeys() }
        try profile.execute("UPDATE signed_prekey SET id = -1")
        #expect(throws: ProfileError.self) { try stores.signedPreKeys.allSignedPreKeys() }
    }

    @Test func theDatabaseHoldsNoSecretInClear() throws {
        let aliceProfile = try TestProfile(seed: 40), bobProfile = try TestProfile(seed: 41)
        let alice = Correspondent(identity: aliceProfile.identity, stores: aliceProfile.stores(), seed: 42)
        let bob = Correspondent(identity: bobProfile.identity, stores: bobProfile.stores(), seed: 43)
        var random = SeededRandom(seed: 44)
        let spareOneTime = OneTimePreKey.generate(id: 500, random: &random)
        try bob.stores.preKeys.storeOneTimePreKey(spareOneTime)
        let bundle = try bob.publishBundle()
        let signedPreKey = try #require(try bob.stores.signedPreKeys.signedPreKey(id: 1))
        try alice.start(with: bundle)
        _ = try bob.receive(try alice.send("hello", to: bob), from: alice)
        _ = try alice.receive(try bob.send("hi", to: alice), from: bob)
        let channel: [UInt8] = Array("secret-channel".utf8)
        let distribution = try SenderKeyCipher.ownDistribution(channel: channel, store: alice.stores.senderKeys, random: &random)
        try SenderKeyCipher.process(distribution, channel: channel, sender: alice.signingKey, store: bob.stores.senderKeys)

        // Public bytes that may legitimately appear in clear.
        // (SQLite stores a row's columns side by side, so the keys are listed in column order.)
        let publicBytes = aliceProfile.identity.publicIdentity.signingKey + aliceProfile.identity.publicIdentity.agreementKey
            + aliceProfile.identity.publicIdentity.agreementSignature + bobProfile.identity.publicIdentity.signingKey
            + bobProfile.identity.publicIdentity.agreementKey + bobProfile.identity.publicIdentity.agreementSignature
            + spareOneTime.publicKey + bundle.serialize()
        for profile in [aliceProfile, bobProfile] {
            let raw = try profile.rawBytes()
            #expect(raw.count > 4096)
            let storageKey = try #require(try profile.secrets.secret(named: ProfileVault.storageKeyName))
            let entropy = try #require(try profile.secrets.secret(named: ProfileVault.recoveryEntropyName))
            var secrets: [(String, [UInt8])] = [("storage key", storageKey.bytes), ("recovery entropy", entropy.bytes),
                                                ("identity signing seed", profile.identity.signingSeed.bytes),
                                                ("identity agreement secret", profile.identity.agreementSecret.bytes)]
            let stores = profile.stores()
            for remote in [aliceProfile, bobProfile] where remote !== profile {
                let record = try #require(try stores.sessions.sessionRecord(for: remote.identity.publicIdentity.signingKey))
                secrets.append(("session record", record.serialize()))
            }
            if profile === bobProfile {
                secrets.append(("one-time prekey secret", spareOneTime.secret.bytes))
                secrets.append(("signed prekey secret", signedPreKey.secret.bytes))
                let received = try #require(try stores.senderKeys.senderKeyRecord(channel: channel, sender: alice.signingKey))
                secrets.append(("received sender key", received.serialize()))
            } else {
                let own = try #require(try stores.senderKeys.ownSenderKey(channel: channel))
                secrets.append(("own sender key", own.serialize()))
            }
            for (what, bytes) in secrets {
                #expect(!bytes.isEmpty)
                // No 16-byte window (every 8 bytes, so any 24 bytes in clear are caught) of a
                // secret-bearing serialization may appear, unless it is public (records embed the
                // peers' public identities).
                for start in stride(from: 0, through: max(0, bytes.count - 16), by: 8) {
                    let window = Data(bytes[start..<min(start + 16, bytes.count)])
                    guard raw.range(of: window) != nil else { continue }
                    #expect(Data(publicBytes).range(of: window) != nil, "\(what) bytes \(start)..<\(start + 16) found in clear")
                }
            }
        }
    }

    @Test func lockingTheProfileStopsEveryStoreThatNeedsTheStorageKey() throws {
        let profile = try TestProfile(seed: 50)
        let stores = profile.stores()
        var random = SeededRandom(seed: 51)
        try stores.preKeys.storeOneTimePreKey(OneTimePreKey.generate(id: 1, random: &random))
        let storageKey = try #require(try profile.secrets.secret(named: ProfileVault.storageKeyName))
        profile.secrets.lock()
        #expect(storageKey.isWiped && storageKey.bytes.allSatisfy { $0 == 0 }, "lock() zeroes the storage key")
        #expect(throws: KeystoreError.locked) { try stores.preKeys.oneTimePreKey(id: 1) }
        #expect(throws: KeystoreError.locked) { try stores.preKeys.storeOneTimePreKey(OneTimePreKey.generate(id: 2, random: &random)) }
        #expect(throws: KeystoreError.locked) {
            try SenderKeyCipher.ownDistribution(channel: [1], store: stores.senderKeys, random: &random)
        }
        // Public data stays readable while locked.
        #expect(try stores.preKeys.oneTimePreKeyCount == 1)
        // Unlocking again gives the same storage key back: the sealed row opens.
        let reopened = try TestProfile(reopening: profile)
        #expect(try reopened.stores().preKeys.oneTimePreKey(id: 1) != nil)
    }
}
