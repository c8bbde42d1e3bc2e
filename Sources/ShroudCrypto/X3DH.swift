import ShroudWire

/// X3DH key agreement (Signal's published specification, "The X3DH Key Agreement Protocol"):
///
///     DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   DH4 = DH(EK_A, OPK_B)
///     output = HKDF-SHA256(salt = 32 × 0x00, ikm = F ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], info = kdfInfo, L = 96)
///     SK = output[0..<32], HK_A = output[32..<64], NHK_B = output[64..<96]
///     AD = Encode(IK_A) ‖ Encode(IK_B)       (PublicIdentity.sessionEncoding, 128 bytes each)
///
/// with F = 32 × 0xFF. HK_A and NHK_B are the shared header keys the header-encrypted Double
/// Ratchet starts from (Signal's Double Ratchet specification, §4).
public enum X3DH {
    public static let kdfInfo = Array("shroud/v1/x3dh".utf8)
    public static let kdfPrefix = [UInt8](repeating: 0xFF, count: 32)
    public static let kdfSalt = [UInt8](repeating: 0x00, count: 32)
    public static let outputLength = 96
    public static let associatedDataLength = 2 * PublicIdentity.sessionEncodingLength

    /// What both sides hold after the agreement.
    public struct SharedSecrets {
        public let sharedKey: SecureBytes              // SK, the ratchet's first root key
        public let initiatorHeaderKey: SecureBytes     // HK_A: the initiator's first sending header key
        public let responderNextHeaderKey: SecureBytes // NHK_B: the responder's first next header key
        public let associatedData: [UInt8]
    }

    /// The initiator's result, with what must reach the responder in the initial message.
    public struct Initiation {
        public let secrets: SharedSecrets
        public let ephemeralPublicKey: [UInt8]
        public let signedPreKeyId: UInt32
        public let oneTimePreKeyId: UInt32?
        /// The responder's signed prekey: the initiator's first remote ratchet key.
        public let responderRatchetKey: [UInt8]
    }

    /// Alice's side. The bundle's signature was checked when the bundle was built or parsed.
    public static func initiate(identity: IdentityKeyPair, bundle: PreKeyBundle,
                                random: inout some RandomSource) throws -> Initiation {
        let ephemeral = SessionPrimitives.generateAgreementKeyPair(using: &random)
        return try initiate(identity: identity, bundle: bundle, ephemeral: ephemeral)
    }

    static func initiate(identity: IdentityKeyPair, bundle: PreKeyBundle,
                         ephemeral: (secret: SecureBytes, publicKey: [UInt8])) throws -> Initiation {
        var parts = [
            try SessionPrimitives.agree(identity.agreementSecret, bundle.signedPreKey),
            try SessionPrimitives.agree(ephemeral.secret, bundle.identity.agreementKey),
            try SessionPrimitives.agree(ephemeral.secret, bundle.signedPreKey),
        ]
        if let opk = bundle.oneTimePreKey { parts.append(try SessionPrimitives.agree(ephemeral.secret, opk)) }
        let secrets = derive(parts, initiator: identity.publicIdentity, responder: bundle.identity)
        return Initiation(secrets: secrets, ephemeralPublicKey: ephemeral.publicKey, signedPreKeyId: bundle.signedPreKeyId,
                          oneTimePreKeyId: bundle.oneTimePreKeyId, responderRatchetKey: bundle.signedPreKey)
    }

    /// Bob's side, given the prekeys the initial message names.
    public static func respond(identity: IdentityKeyPair, initiator: PublicIdentity, ephemeralPublicKey: [UInt8],
                               signedPreKey: SignedPreKey, oneTimePreKey: OneTimePreKey?) throws -> SharedSecrets {
        var parts = [
            try SessionPrimitives.agree(signedPreKey.secret, initiator.agreementKey),
            try SessionPrimitives.agree(identity.agreementSecret, ephemeralPublicKey),
            try SessionPrimitives.agree(signedPreKey.secret, ephemeralPublicKey),
        ]
        if let oneTimePreKey { parts.append(try SessionPrimitives.agree(oneTimePreKey.secret, ephemeralPublicKey)) }
        return derive(parts, initiator: initiator, responder: identity.publicIdentity)
    }

    static func keyMaterial(_ parts: [SecureBytes]) -> SecureBytes {
        SecureBytes(count: 32 + 32 * parts.count) { out in
            for i in 0..<32 { out[i] = 0xFF }
            for (index, part) in parts.enumerated() {
                part.withUnsafeBytes { src in
                    UnsafeMutableRawBufferPointer(rebasing: out[(32 + 32 * index)..<(64 + 32 * index)]).copyMemory(from: src)
                }
            }
        }
    }

    static func derive(_ parts: [SecureBytes], initiator: PublicIdentity, responder: PublicIdentity) -> SharedSecrets {
        let output = SessionPrimitives.hkdf(ikm: keyMaterial(parts), salt: kdfSalt, info: kdfInfo, outputLength: outputLength)
        let pieces = SessionPrimitives.split(output, [32, 32, 32])
        return SharedSecrets(sharedKey: pieces[0], initiatorHeaderKey: pieces[1], responderNextHeaderKey: pieces[2],
                             associatedData: initiator.sessionEncoding + responder.sessionEncoding)
    }
}

/// The initial message of a session: everything the responder needs to run X3DH, plus the first
/// ratchet message. Wire layout (v1), big-endian:
///
///     version          u8  = 1
///     initiator        128  PublicIdentity.sessionEncoding
///     ephemeralKey     32   EK_A
///     signedPreKeyId   u32
///     hasOneTime       u8   0 or 1
///     oneTimePreKeyId  u32  only when hasOneTime == 1
///     messageLength    u32  ≤ RatchetMessage.maxLength
///     message          RatchetMessage bytes
public struct PreKeyMessage: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let fixedLength = 1 + 128 + 32 + 4 + 1 + 4 + 4
    public static let maxLength = fixedLength + RatchetMessage.maxLength

    public let initiator: PublicIdentity
    public let ephemeralKey: [UInt8]
    public let signedPreKeyId: UInt32
    public let oneTimePreKeyId: UInt32?
    public let message: RatchetMessage

    public init(initiator: PublicIdentity, ephemeralKey: [UInt8], signedPreKeyId: UInt32, oneTimePreKeyId: UInt32?,
                message: RatchetMessage) {
        self.initiator = initiator
        self.ephemeralKey = ephemeralKey
        self.signedPreKeyId = signedPreKeyId
        self.oneTimePreKeyId = oneTimePreKeyId
        self.message = message
    }

    public func serialize() -> [UInt8] {
        let inner = message.serialize()
        var w = ByteWriter(capacity: Self.fixedLength + inner.count)
        w.write(Self.version)
        w.write(bytes: initiator.sessionEncoding)
        w.write(bytes: ephemeralKey)
        w.write(signedPreKeyId)
        if let oneTimePreKeyId { w.write(UInt8(1)); w.write(oneTimePreKeyId) } else { w.write(UInt8(0)) }
        w.write(UInt32(inner.count))
        w.write(bytes: inner)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count <= Self.maxLength else {
            throw WireError.tooLarge(field: "prekey message", size: bytes.count, limit: Self.maxLength)
        }
        var r = ByteReader(bytes)
        try r.readVersion(expecting: Self.version, "prekey message")
        initiator = try PublicIdentity.readSessionEncoding(from: &r, "prekey message initiator")
        ephemeralKey = try r.readBytes(32, "ephemeral key")
        signedPreKeyId = try r.readUInt32("signed prekey id")
        switch try r.readUInt8("one-time prekey flag") {
        case 0: oneTimePreKeyId = nil
        case 1: oneTimePreKeyId = try r.readUInt32("one-time prekey id")
        case let other: throw WireError.invalid(field: "one-time prekey flag", reason: "must be 0 or 1, got \(other)")
        }
        let length = Int(try r.readUInt32("ratchet message length"))
        guard length <= RatchetMessage.maxLength else {
            throw WireError.tooLarge(field: "ratchet message", size: length, limit: RatchetMessage.maxLength)
        }
        message = try RatchetMessage(parsing: try r.readBytes(length, "ratchet message"))
        try r.rejectTrailingBytes("prekey message")
    }
}
