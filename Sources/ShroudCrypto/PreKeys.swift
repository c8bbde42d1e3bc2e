import ShroudWire

/// A medium-term X25519 prekey, signed by the identity's Ed25519 key so the relay that hands it
/// out cannot substitute its own (DESIGN.md §1.2).
public struct SignedPreKey: Sendable {
    /// The signature covers label ‖ id (u32 BE) ‖ public key, so a signature cannot be replayed
    /// for another id or in another protocol.
    public static let signatureLabel = Array("shroud/v1/x3dh/signed-prekey".utf8)

    public let id: UInt32
    public let publicKey: [UInt8]
    public let signature: [UInt8]
    public let secret: SecureBytes
    /// Seconds since the Unix epoch at creation; drives rotation.
    public let createdAt: UInt64

    public static func generate(id: UInt32, identity: IdentityKeyPair, now: UInt64,
                                random: inout some RandomSource) throws -> SignedPreKey {
        let pair = SessionPrimitives.generateAgreementKeyPair(using: &random)
        let signature = try identity.sign(signedMessage(id: id, publicKey: pair.publicKey))
        return SignedPreKey(id: id, publicKey: pair.publicKey, signature: signature, secret: pair.secret, createdAt: now)
    }

    public init(id: UInt32, publicKey: [UInt8], signature: [UInt8], secret: SecureBytes, createdAt: UInt64) {
        self.id = id
        self.publicKey = publicKey
        self.signature = signature
        self.secret = secret
        self.createdAt = createdAt
    }

    static func signedMessage(id: UInt32, publicKey: [UInt8]) -> [UInt8] {
        var writer = ByteWriter(capacity: signatureLabel.count + 36)
        writer.write(bytes: signatureLabel)
        writer.write(id)
        writer.write(bytes: publicKey)
        return writer.bytes
    }

    /// Private storage form: id u32 ‖ createdAt u64 ‖ public 32 ‖ signature 64 ‖ secret 32.
    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 140)
        w.write(id); w.write(createdAt); w.write(bytes: publicKey); w.write(bytes: signature); w.writeSecret(secret)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        id = try r.readUInt32("signed prekey id")
        createdAt = try r.readUInt64("signed prekey created")
        publicKey = try r.readBytes(32, "signed prekey public key")
        signature = try r.readBytes(64, "signed prekey signature")
        secret = try r.readSecret(32, "signed prekey secret")
        try r.rejectTrailingBytes("signed prekey")
    }
}

/// A single-use X25519 prekey; the responder deletes it once a session built on it authenticates.
public struct OneTimePreKey: Sendable {
    public let id: UInt32
    public let publicKey: [UInt8]
    public let secret: SecureBytes

    public static func generate(id: UInt32, random: inout some RandomSource) -> OneTimePreKey {
        let pair = SessionPrimitives.generateAgreementKeyPair(using: &random)
        return OneTimePreKey(id: id, publicKey: pair.publicKey, secret: pair.secret)
    }

    /// Generates `count` keys with consecutive ids starting at `firstId` (wrapping).
    public static func generateBatch(firstId: UInt32, count: Int, random: inout some RandomSource) -> [OneTimePreKey] {
        (0..<max(0, count)).map { generate(id: firstId &+ UInt32(truncatingIfNeeded: $0), random: &random) }
    }

    public init(id: UInt32, publicKey: [UInt8], secret: SecureBytes) {
        self.id = id
        self.publicKey = publicKey
        self.secret = secret
    }
}

/// What a responder publishes through the relay so that others can start sessions while it is
/// offline. Wire layout (v1), all integers big-endian:
///
///     version        u8  = 1
///     identity       128  PublicIdentity.sessionEncoding
///     signedPreKeyId u32
///     signedPreKey   32   X25519 public key
///     signature      64   Ed25519 over SignedPreKey.signatureLabel ‖ id ‖ key
///     hasOneTime     u8   0 or 1
///     oneTimeId      u32  } only when hasOneTime == 1
///     oneTimeKey     32   }
public struct PreKeyBundle: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let maxLength = 1 + 128 + 4 + 32 + 64 + 1 + 4 + 32

    public let identity: PublicIdentity
    public let signedPreKeyId: UInt32
    public let signedPreKey: [UInt8]
    public let signedPreKeySignature: [UInt8]
    public let oneTimePreKeyId: UInt32?
    public let oneTimePreKey: [UInt8]?

    /// Builds a bundle and checks it as a receiver would: lengths and the prekey signature.
    public init(identity: PublicIdentity, signedPreKeyId: UInt32, signedPreKey: [UInt8], signedPreKeySignature: [UInt8],
                oneTimePreKeyId: UInt32? = nil, oneTimePreKey: [UInt8]? = nil) throws {
        guard signedPreKey.count == 32 else { throw CryptoError.invalidKey("signed prekey must be 32 bytes") }
        guard signedPreKeySignature.count == 64 else { throw CryptoError.badSignature("signed prekey signature must be 64 bytes") }
        guard (oneTimePreKeyId == nil) == (oneTimePreKey == nil) else {
            throw CryptoError.invalidInput("one-time prekey id and key must come together")
        }
        if let oneTimePreKey, oneTimePreKey.count != 32 { throw CryptoError.invalidKey("one-time prekey must be 32 bytes") }
        guard identity.isValidSignature(signedPreKeySignature,
                                        for: SignedPreKey.signedMessage(id: signedPreKeyId, publicKey: signedPreKey)) else {
            throw CryptoError.badSignature("signed prekey is not signed by the bundle's identity")
        }
        self.identity = identity
        self.signedPreKeyId = signedPreKeyId
        self.signedPreKey = signedPreKey
        self.signedPreKeySignature = signedPreKeySignature
        self.oneTimePreKeyId = oneTimePreKeyId
        self.oneTimePreKey = oneTimePreKey
    }

    public init(identity: IdentityKeyPair, signedPreKey: SignedPreKey, oneTimePreKey: OneTimePreKey?) throws {
        try self.init(identity: identity.publicIdentity, signedPreKeyId: signedPreKey.id, signedPreKey: signedPreKey.publicKey,
                      signedPreKeySignature: signedPreKey.signature,
                      oneTimePreKeyId: oneTimePreKey?.id, oneTimePreKey: oneTimePreKey?.publicKey)
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: Self.maxLength)
        w.write(Self.version)
        w.write(bytes: identity.sessionEncoding)
        w.write(signedPreKeyId)
        w.write(bytes: signedPreKey)
        w.write(bytes: signedPreKeySignature)
        if let oneTimePreKeyId, let oneTimePreKey {
            w.write(UInt8(1)); w.write(oneTimePreKeyId); w.write(bytes: oneTimePreKey)
        } else {
            w.write(UInt8(0))
        }
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count <= Self.maxLength else {
            throw WireError.tooLarge(field: "prekey bundle", size: bytes.count, limit: Self.maxLength)
        }
        var r = ByteReader(bytes)
        try r.readVersion(expecting: Self.version, "prekey bundle")
        let identity = try PublicIdentity.readSessionEncoding(from: &r, "bundle identity")
        let spkId = try r.readUInt32("signed prekey id")
        let spk = try r.readBytes(32, "signed prekey")
        let sig = try r.readBytes(64, "signed prekey signature")
        var opkId: UInt32?
        var opk: [UInt8]?
        switch try r.readUInt8("one-time prekey flag") {
        case 0: break
        case 1:
            opkId = try r.readUInt32("one-time prekey id")
            opk = try r.readBytes(32, "one-time prekey")
        case let other:
            throw WireError.invalid(field: "one-time prekey flag", reason: "must be 0 or 1, got \(other)")
        }
        try r.rejectTrailingBytes("prekey bundle")
        try self.init(identity: identity, signedPreKeyId: spkId, signedPreKey: spk, signedPreKeySignature: sig,
                      oneTimePreKeyId: opkId, oneTimePreKey: opk)
    }
}

/// Signed prekey rotation: a new signed prekey every `rotationInterval`; the replaced one stays
/// usable for `gracePeriod` after its replacement, so initial messages built from a bundle fetched
/// just before the rotation still open.
public enum SignedPreKeyRotation {
    public static let rotationInterval: UInt64 = 7 * 24 * 3600
    public static let gracePeriod: UInt64 = 30 * 24 * 3600

    /// Rotates when the newest key is older than `rotationInterval` (or there is none), and deletes
    /// replaced keys whose grace period has ended. Returns the key to publish now.
    @discardableResult
    public static func rotateIfDue(store: some SignedPreKeyStore, identity: IdentityKeyPair, now: UInt64,
                                   random: inout some RandomSource) throws -> SignedPreKey {
        let all = try store.allSignedPreKeys().sorted { $0.createdAt < $1.createdAt }
        let current: SignedPreKey
        if let newest = all.last, now < newest.createdAt &+ rotationInterval {
            current = newest
        } else {
            let nextId = (all.map(\.id).max() ?? 0) &+ 1
            current = try SignedPreKey.generate(id: nextId, identity: identity, now: now, random: &random)
            try store.storeSignedPreKey(current)
        }
        // A replaced key was replaced when its successor was created.
        let ordered = try store.allSignedPreKeys().sorted { $0.createdAt < $1.createdAt }
        for (index, key) in ordered.enumerated() where index + 1 < ordered.count {
            let replacedAt = ordered[index + 1].createdAt
            if now >= replacedAt + gracePeriod { try store.removeSignedPreKey(id: key.id) }
        }
        return current
    }
}
