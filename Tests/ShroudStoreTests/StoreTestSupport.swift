import Foundation
import GRDB
import ShroudCrypto
import Testing
@testable import ShroudStore

func temporaryProfileHome() -> String {
    NSTemporaryDirectory() + "shroud-store-\(UUID().uuidString)/profile"
}

/// A profile on disk, unlocked, with its SQLite-backed session stores.
final class TestProfile {
    static let passphrase = "correct horse battery staple"
    let home: String
    let profile: ProfileStore
    let secrets: ProfileSecrets
    let identity: IdentityKeyPair

    /// Creates a new profile (identity from `seed`) with secrets sealed by the test-only Argon2id cost.
    init(seed: UInt64, home: String = temporaryProfileHome()) throws {
        self.home = home
        var random = SeededRandom(seed: seed)
        let entropy = SecureBytes(copying: random.bytes(32))
        identity = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        profile = try ProfileStore(home: home, create: true)
        let sealed = try ProfileVault.sealNew(recoveryEntropy: entropy, passphrase: Self.passphrase, parameters: .testOnly, random: &random)
        let p = identity.publicIdentity
        try profile.createIdentity(StoredIdentity(signingKey: p.signingKey, agreementKey: p.agreementKey,
                                                  agreementSignature: p.agreementSignature, createdAt: Date()),
                                   sealedSecretName: ProfileVault.sealedSecretName, sealedSecret: sealed.serialized())
        secrets = try ProfileVault.unlock(profile, passphrase: Self.passphrase, random: &random)
    }

    /// Reopens the profile at `home` from disk, as a new process would.
    init(reopening other: TestProfile) throws {
        home = other.home
        identity = other.identity
        profile = try ProfileStore(home: home, create: false)
        var random = SeededRandom(seed: 1)
        secrets = try ProfileVault.unlock(profile, passphrase: Self.passphrase, random: &random)
    }

    func stores() -> StoreSet {
        let preKeys = SQLitePreKeyStore(profile: profile, secrets: secrets)
        return StoreSet(identities: SQLiteIdentityStore(profile: profile, localIdentity: identity), preKeys: preKeys,
                        signedPreKeys: preKeys, sessions: SQLiteSessionStore(profile: profile, secrets: secrets),
                        senderKeys: SQLiteSenderKeyStore(profile: profile, secrets: secrets))
    }

    /// Every byte SQLite wrote: the database file and its write-ahead log.
    func rawBytes() throws -> Data {
        var data = Data()
        for suffix in ["", "-wal"] {
            let path = home + "/" + ProfileStore.fileName + suffix
            if FileManager.default.fileExists(atPath: path) { data += try Data(contentsOf: URL(fileURLWithPath: path)) }
        }
        return data
    }

    func execute(_ sql: String, _ arguments: StatementArguments = []) throws {
        try profile.database.write { db in try db.execute(sql: sql, arguments: arguments) }
    }

    func blob(_ sql: String, _ arguments: StatementArguments = []) throws -> [UInt8]? {
        try profile.database.read { db in try Data.fetchOne(db, sql: sql, arguments: arguments) }.map { [UInt8]($0) }
    }
}

/// The five store protocols, backed either by memory or by a profile database.
struct StoreSet {
    let identities: any IdentityStore
    let preKeys: any PreKeyStore
    let signedPreKeys: any SignedPreKeyStore
    let sessions: any SessionStore
    let senderKeys: any SenderKeyStore

    static func inMemory(_ identity: IdentityKeyPair) -> StoreSet {
        let preKeys = InMemoryPreKeyStore()
        return StoreSet(identities: InMemoryIdentityStore(localIdentity: identity), preKeys: preKeys, signedPreKeys: preKeys,
                        sessions: InMemorySessionStore(), senderKeys: InMemorySenderKeyStore())
    }
}

/// Which implementation a shared behaviour test runs against.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case memory, sqlite

    var testDescription: String { rawValue }

    /// A fresh set of stores for an identity made from `seed`; the profile is kept for SQLite.
    func make(seed: UInt64) throws -> (StoreSet, IdentityKeyPair, TestProfile?) {
        switch self {
        case .memory:
            var random = SeededRandom(seed: seed)
            let identity = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
            return (StoreSet.inMemory(identity), identity, nil)
        case .sqlite:
            let profile = try TestProfile(seed: seed)
            return (profile.stores(), profile.identity, profile)
        }
    }
}

/// One person in a conversation test, over any store set.
final class Correspondent {
    let identity: IdentityKeyPair
    let stores: StoreSet
    var random: SeededRandom

    init(identity: IdentityKeyPair, stores: StoreSet, seed: UInt64) {
        self.identity = identity
        self.stores = stores
        random = SeededRandom(seed: seed)
    }

    var signingKey: [UInt8] { identity.publicIdentity.signingKey }

    func publishBundle(signedPreKeyId: UInt32 = 1, oneTimePreKeyId: UInt32 = 100) throws -> PreKeyBundle {
        let spk = try SignedPreKey.generate(id: signedPreKeyId, identity: identity, now: 1_000, random: &random)
        try stores.signedPreKeys.storeSignedPreKey(spk)
        let opk = OneTimePreKey.generate(id: oneTimePreKeyId, random: &random)
        try stores.preKeys.storeOneTimePreKey(opk)
        return try PreKeyBundle(identity: identity, signedPreKey: spk, oneTimePreKey: opk)
    }

    func start(with bundle: PreKeyBundle) throws {
        try SessionCipher.startSession(with: bundle, identities: stores.identities, sessions: stores.sessions, random: &random)
    }

    func send(_ text: String, to other: Correspondent) throws -> SessionMessage {
        try SessionCipher.encrypt(Array(text.utf8), to: other.signingKey, identities: stores.identities, sessions: stores.sessions)
    }

    func receive(_ message: SessionMessage, from other: Correspondent) throws -> String {
        let result = try SessionCipher.decrypt(message, from: other.signingKey, identities: stores.identities,
                                               preKeys: stores.preKeys, signedPreKeys: stores.signedPreKeys,
                                               sessions: stores.sessions, now: 2_000, random: &random)
        return String(decoding: result.plaintext, as: UTF8.self)
    }
}
