import Foundation
@testable import ShroudCrypto
import ShroudWire

/// A person with an identity and the stores a client keeps, for session tests.
final class Party {
    let identity: IdentityKeyPair
    let identities: InMemoryIdentityStore
    let preKeys = InMemoryPreKeyStore()
    let sessions = InMemorySessionStore()
    var random: SeededRandom

    init(seed: UInt64) throws {
        random = SeededRandom(seed: seed)
        identity = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        identities = InMemoryIdentityStore(localIdentity: identity)
    }

    var publicIdentity: PublicIdentity { identity.publicIdentity }
    var signingKey: [UInt8] { identity.publicIdentity.signingKey }

    /// Publishes a bundle with a fresh signed prekey and (optionally) one one-time prekey.
    func bundle(signedPreKeyId: UInt32 = 1, oneTimePreKeyId: UInt32? = 100, now: UInt64 = 1_000) throws -> PreKeyBundle {
        let spk: SignedPreKey
        if let existing = preKeys.signedPreKey(id: signedPreKeyId) {
            spk = existing
        } else {
            spk = try SignedPreKey.generate(id: signedPreKeyId, identity: identity, now: now, random: &random)
            preKeys.storeSignedPreKey(spk)
        }
        var opk: OneTimePreKey?
        if let oneTimePreKeyId {
            let key = OneTimePreKey.generate(id: oneTimePreKeyId, random: &random)
            preKeys.storeOneTimePreKey(key)
            opk = key
        }
        return try PreKeyBundle(identity: identity, signedPreKey: spk, oneTimePreKey: opk)
    }

    func start(with other: Party, oneTimePreKeyId: UInt32? = 100) throws {
        let b = try other.bundle(oneTimePreKeyId: oneTimePreKeyId)
        try SessionCipher.startSession(with: b, identities: identities, sessions: sessions, random: &random)
    }

    func send(_ text: String, to other: Party) throws -> SessionMessage {
        try SessionCipher.encrypt(Array(text.utf8), to: other.signingKey, identities: identities, sessions: sessions)
    }

    func receive(_ message: SessionMessage, from other: Party, now: UInt64 = 2_000) throws -> String {
        let result = try SessionCipher.decrypt(message, from: other.signingKey, identities: identities, preKeys: preKeys,
                                               signedPreKeys: preKeys, sessions: sessions, now: now, random: &random)
        return String(decoding: result.plaintext, as: UTF8.self)
    }

    func record(with other: Party) -> [UInt8]? { sessions.serializedRecord(for: other.signingKey) }
}

/// Two directly built ratchet sessions (no stores), for tests of the ratchet itself.
struct RatchetPair {
    var alice: Session
    var bob: Session
    var random: SeededRandom
    let aliceIdentity: IdentityKeyPair
    let bobIdentity: IdentityKeyPair

    /// Builds both sides; Bob's side exists after Alice's first message `hello` arrives.
    init(seed: UInt64, oneTime: Bool = true) throws {
        random = SeededRandom(seed: seed)
        aliceIdentity = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        bobIdentity = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        let spk = try SignedPreKey.generate(id: 7, identity: bobIdentity, now: 0, random: &random)
        let opk = oneTime ? OneTimePreKey.generate(id: 9, random: &random) : nil
        let bundle = try PreKeyBundle(identity: bobIdentity, signedPreKey: spk, oneTimePreKey: opk)
        alice = try Session.initiate(identity: aliceIdentity, bundle: bundle, random: &random)
        guard case let .preKey(first) = try alice.encrypt(Array("hello".utf8), localIdentity: aliceIdentity.publicIdentity) else {
            throw CryptoError.invalidInput("expected a prekey message")
        }
        let (session, _) = try Session.respond(identity: bobIdentity, message: first, signedPreKey: spk, oneTimePreKey: opk,
                                               now: 0, random: &random)
        bob = session
    }

    static func ratchetMessage(_ m: SessionMessage) -> RatchetMessage {
        switch m {
        case let .ratchet(r): return r
        case let .preKey(p): return p.message
        }
    }

    mutating func aliceSends(_ text: String) throws -> RatchetMessage {
        Self.ratchetMessage(try alice.encrypt(Array(text.utf8), localIdentity: aliceIdentity.publicIdentity))
    }

    mutating func bobSends(_ text: String) throws -> RatchetMessage {
        Self.ratchetMessage(try bob.encrypt(Array(text.utf8), localIdentity: bobIdentity.publicIdentity))
    }

    mutating func bobReceives(_ m: RatchetMessage, now: UInt64 = 0) throws -> String {
        String(decoding: try bob.decrypt(m, now: now, random: &random), as: UTF8.self)
    }

    mutating func aliceReceives(_ m: RatchetMessage, now: UInt64 = 0) throws -> String {
        String(decoding: try alice.decrypt(m, now: now, random: &random), as: UTF8.self)
    }

    var aliceBytes: [UInt8] { SessionRecord(current: alice).serialize() }
    var bobBytes: [UInt8] { SessionRecord(current: bob).serialize() }
}

/// The repository root, found from this file's path, for reading and writing committed files.
let sessionRepositoryRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
