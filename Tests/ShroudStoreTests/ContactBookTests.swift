import Foundation
import ShroudCrypto
import Testing
@testable import ShroudStore

@Suite struct ContactBookTests {
    private func ids(_ count: Int, seed: UInt64) -> [IdentityID] {
        var random = SeededRandom(seed: seed)
        return (0..<count).compactMap { _ in try? IdentityID(signingKey: random.bytes(32)) }
    }

    @Test func contactsArePinnedOnFirstUseAndSurviveReopening() throws {
        let home = temporaryProfileHome()
        let keys = ids(2, seed: 1)
        do {
            let book = ContactBook(profile: try ProfileStore(home: home, create: true))
            #expect(try book.add(name: "bob", id: keys[0]) == .added)
            #expect(try book.add(name: "alice", id: keys[1]) == .added)
            #expect(try book.add(name: "bob", id: keys[0]) == .alreadyPresent)
        }
        let book = ContactBook(profile: try ProfileStore(home: home, create: false))
        let all = try book.all()
        #expect(all.map(\.name) == ["alice", "bob"])
        #expect(all.map(\.id) == [keys[1], keys[0]])
        #expect(all.allSatisfy { $0.trust == .unverified && !$0.isVerified && $0.previousID == nil })
        #expect(try book.contact(for: keys[0])?.name == "bob")
        #expect(try book.requireSendable("bob").id == keys[0], "pinned on first use may be sent to")
        #expect(throws: ContactError.unknown(name: "carol")) { try book.requireSendable("carol") }
    }

    @Test func aChangedKeyIsRefusedUntilVerified() throws {
        let profile = try TestProfile(seed: 2)
        let book = ContactBook(profile: profile.profile)
        let keys = ids(2, seed: 3)
        try book.add(name: "bob", id: keys[0])
        #expect(throws: ContactError.pinnedToAnotherKey(name: "bob", pinned: keys[0], offered: keys[1])) {
            try book.add(name: "bob", id: keys[1])
        }
        #expect(try book.contact(named: "bob")?.id == keys[0], "a refused add changes nothing")

        #expect(try book.add(name: "bob", id: keys[1], replace: true) == .replaced(previous: keys[0]))
        let changed = try #require(try book.contact(named: "bob"))
        #expect(changed.trust == .changed && changed.previousID == keys[0] && changed.id == keys[1])
        #expect(throws: ContactError.changedUnverified(name: "bob")) { try book.requireSendable("bob") }

        // Verifying a key other than the one pinned now (it changed meanwhile) is refused.
        #expect(throws: ContactError.keyChangedDuringVerification(name: "bob")) { try book.markVerified(name: "bob", id: keys[0]) }
        try book.markVerified(name: "bob", id: keys[1])
        let verified = try #require(try book.contact(named: "bob"))
        #expect(verified.isVerified && verified.previousID == nil)
        #expect(try book.requireSendable("bob").id == keys[1])
    }

    @Test func verifyingAlsoVerifiesThePinnedIdentityAndBlockingWins() throws {
        let profile = try TestProfile(seed: 4)
        let book = ContactBook(profile: profile.profile)
        let identities = SQLiteIdentityStore(profile: profile.profile, localIdentity: profile.identity)
        let remote = try TestProfile(seed: 5).identity.publicIdentity
        try identities.pin(remote, decision: .pinnedOnFirstUse)
        try book.add(name: "dora", id: remote.id)
        try book.markVerified(name: "dora", id: remote.id)
        #expect(try identities.check(remote) == .trusted(.verified))
        try identities.pin(remote, decision: .blocked)
        try book.markVerified(name: "dora", id: remote.id)
        #expect(try identities.check(remote) == .blocked, "verifying never unblocks")
        #expect(throws: ContactError.blocked(name: "dora")) { try book.requireSendable("dora") }
    }

    @Test func oneIdentityHasOneName() throws {
        let book = ContactBook(profile: try ProfileStore(home: temporaryProfileHome(), create: true))
        let key = ids(1, seed: 6)[0]
        try book.add(name: "bob", id: key)
        #expect(throws: ContactError.identityHasAnotherName(id: key, name: "bob")) { try book.add(name: "robert", id: key) }
    }

    @Test func namesAreCheckedAtTheLimit() throws {
        let book = ContactBook(profile: try ProfileStore(home: temporaryProfileHome(), create: true))
        let keys = ids(2, seed: 7)
        let longest = String(repeating: "é", count: ContactBook.maximumNameLength)
        #expect(try book.add(name: longest, id: keys[0]) == .added)
        #expect(throws: ContactError.self) { try book.add(name: longest + "x", id: keys[1]) }
        for bad in ["", " bob", "bob ", "bo\nb", "bo\u{202E}b"] {
            #expect(throws: ContactError.self, "\(bad.debugDescription)") { try ContactBook.validate(name: bad) }
        }
        try ContactBook.validate(name: "Ana María")
    }
}

@Suite struct ProfileVaultTests {
    @Test func oneRecordHoldsTheEntropyAndTheStorageKey() throws {
        let profile = try TestProfile(seed: 60)
        let again = try TestProfile(reopening: profile)
        let first = try #require(try profile.secrets.secret(named: ProfileVault.storageKeyName))
        let second = try #require(try again.secrets.secret(named: ProfileVault.storageKeyName))
        #expect(first.count == ProfileVault.storageKeyByteCount && first.bytes == second.bytes)
        var random = SeededRandom(seed: 61)
        #expect(throws: KeystoreError.wrongPassphrase) {
            try ProfileVault.unlock(profile.profile, passphrase: "wrong", random: &random)
        }
    }

    @Test func aProfileFromBeforeTheStorageKeyIsConvertedOnce() throws {
        let home = temporaryProfileHome()
        let store = try ProfileStore(home: home, create: true)
        var random = SeededRandom(seed: 62)
        let entropy = SecureBytes(copying: random.bytes(32))
        let legacy = try Keystore.seal(secret: entropy, passphrase: "pw", parameters: .testOnly, random: &random)
        try store.storeSealedSecret(legacy.serialized(), named: ProfileVault.legacyRecoverySecretName)
        let secrets = try ProfileVault.unlock(store, passphrase: "pw", parameters: .testOnly, random: &random)
        #expect(try secrets.secret(named: ProfileVault.recoveryEntropyName)?.bytes == entropy.bytes)
        #expect(try store.sealedSecret(named: ProfileVault.legacyRecoverySecretName) == nil)
        #expect(try store.sealedSecret(named: ProfileVault.sealedSecretName) != nil)
        let reopened = try ProfileVault.unlock(store, passphrase: "pw", random: &random)
        #expect(try reopened.secret(named: ProfileVault.storageKeyName)?.bytes == secrets.secret(named: ProfileVault.storageKeyName)?.bytes)
    }

    @Test func rowKeysAreLimitedToSixteenBitLengths() throws {
        let profile = try TestProfile(seed: 63)
        let cipher = RowCipher(secrets: profile.secrets)
        let atLimit = [UInt8](repeating: 7, count: Int(UInt16.max))
        let sealed = try cipher.seal([1, 2, 3], table: "t", row: [atLimit])
        #expect(try cipher.open(sealed, table: "t", row: [atLimit], rowName: "x") == [1, 2, 3])
        #expect(throws: CryptoError.self) { try cipher.seal([1], table: "t", row: [atLimit + [7]]) }
        // Random boxes of every short length, and valid boxes with one byte changed, never open.
        var random = SeededRandom(seed: 64)
        for length in 0..<80 {
            #expect(throws: ProfileError.rowAuthenticationFailed(table: "t", row: "x")) {
                try cipher.open(random.bytes(length), table: "t", row: [[1]], rowName: "x")
            }
        }
        let small = try cipher.seal([9, 8, 7], table: "t", row: [[1]])
        for index in small.indices {
            var altered = small
            altered[index] ^= 0x80
            #expect(throws: ProfileError.rowAuthenticationFailed(table: "t", row: "x")) {
                try cipher.open(altered, table: "t", row: [[1]], rowName: "x")
            }
        }
        // The table is bound too.
        #expect(throws: ProfileError.rowAuthenticationFailed(table: "u", row: "x")) {
            try cipher.open(sealed, table: "u", row: [atLimit], rowName: "x")
        }
    }
}
