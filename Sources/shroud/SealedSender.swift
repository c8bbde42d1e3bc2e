import Crypto
import Foundation
import ShroudCrypto
import ShroudWire

/// An identity card: the 128-byte `PublicIdentity.sessionEncoding` (Ed25519 key, X25519 key, and
/// the Ed25519 signature binding them), published so that a contact who knows only the Ed25519 id
/// can learn the X25519 identity key that X3DH and the sealed-sender layer need. The session
/// protocol's `bundle` carries only the Ed25519 key, so the card travels as the encrypted-metadata
/// blob of an *open channel* whose id is derived from the Ed25519 key:
///
///     channel id = SHA-256("shroud/v1/identity-card" ‖ 0x00 ‖ signing key)[0..16]
///     metadata   = BucketPadding(sessionEncoding)   (256 bytes)
///
/// The relay cannot substitute another X25519 key: `PublicIdentity(parsingSessionEncoding:)`
/// checks the binding signature, and the reader checks the Ed25519 key is the contact's.
enum IdentityCard {
    static let channelLabel = Array("shroud/v1/identity-card".utf8)

    static func channel(for signingKey: [UInt8]) throws -> ChannelID {
        try ChannelID(Array(SHA256.hash(data: channelLabel + [0] + signingKey).prefix(ChannelID.size)))
    }

    static func metadata(_ identity: PublicIdentity) throws -> [UInt8] {
        try BucketPadding.pad(identity.sessionEncoding)
    }

    /// Parses a card and checks it belongs to `signingKey`.
    static func parse(_ metadata: [UInt8], expecting signingKey: [UInt8]) throws -> PublicIdentity {
        let identity: PublicIdentity
        do {
            identity = try PublicIdentity(parsingSessionEncoding: try BucketPadding.unpad(metadata))
        } catch {
            throw Failure("the contact's identity card does not parse: \(oneLine(error))")
        }
        guard identity.signingKey == signingKey else {
            throw Failure("the identity card on the relay belongs to another identity: refusing")
        }
        return identity
    }
}

/// The sealed-sender envelope: what a direct message's blob holds before bucket padding. The relay
/// sees the recipient (in `sendDirect`) and this envelope; only the recipient can open it and learn
/// the sender.
///
///     envelope = version u8 (= 1) ‖ ephemeral X25519 public key (32) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
///     key      = HKDF-SHA256(ikm = X25519(ephemeral, recipient X25519 identity key),
///                            salt = ephemeral ‖ recipient X25519 key, info = "shroud/v1/sealed-sender", 32)
///     AAD      = version ‖ ephemeral ‖ recipient Ed25519 key
///     inner    = sender Ed25519 key (32) ‖ SessionMessage (CRYPTO.md §2) — ChaCha20-Poly1305
///
/// The named sender is authenticated by the session layer, not by this envelope: a ratchet message
/// only decrypts under the session with that sender, and an initial (prekey) message names its
/// initiator, which `SessionCipher.decrypt` requires to match.
enum SealedEnvelope {
    static let version: UInt8 = 1
    static let info = Array("shroud/v1/sealed-sender".utf8)
    static let headerSize = 1 + 32
    static let minimumSize = headerSize + 12 + 32 + 16

    static func seal(sender: [UInt8], message: SessionMessage, recipient: PublicIdentity) throws -> [UInt8] {
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let ephemeralPublic = Array(ephemeral.publicKey.rawRepresentation)
        let key = try derive(secret: ephemeral.sharedSecretFromKeyAgreement(with: try recipient.agreementPublicKey()),
                             ephemeral: ephemeralPublic, recipientAgreement: recipient.agreementKey)
        let aad = [version] + ephemeralPublic + recipient.signingKey
        let box = try ChaChaPoly.seal(sender + message.serialize(), using: key, authenticating: aad)
        return [version] + ephemeralPublic + Array(box.combined)
    }

    /// Opens an envelope addressed to `recipient`; returns the named sender's Ed25519 key and the
    /// session message. Any malformed or forged envelope throws.
    static func open(_ envelope: [UInt8], recipient: IdentityKeyPair) throws -> (sender: [UInt8], message: SessionMessage) {
        guard envelope.count >= minimumSize else { throw Failure("sealed envelope too short (\(envelope.count) bytes)") }
        guard envelope[0] == version else { throw Failure("sealed envelope version \(envelope[0]) is not supported") }
        let ephemeralPublic = Array(envelope[1..<33])
        let own = recipient.publicIdentity
        let agreed: SharedSecret
        do {
            agreed = try recipient.agreementPrivateKey().sharedSecretFromKeyAgreement(
                with: try Curve25519.KeyAgreement.PublicKey(rawRepresentation: ephemeralPublic))
        } catch {
            throw Failure("sealed envelope has an unusable ephemeral key")
        }
        let key = try derive(secret: agreed, ephemeral: ephemeralPublic, recipientAgreement: own.agreementKey)
        let inner: Data
        do {
            inner = try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: envelope[33...]), using: key,
                                        authenticating: [version] + ephemeralPublic + own.signingKey)
        } catch {
            throw Failure("sealed envelope does not open: not for this identity, or altered")
        }
        let bytes = [UInt8](inner)
        guard bytes.count > 32 else { throw Failure("sealed envelope holds no message") }
        return (Array(bytes[0..<32]), try SessionMessage(parsing: Array(bytes[32...])))
    }

    private static func derive(secret: SharedSecret, ephemeral: [UInt8], recipientAgreement: [UInt8]) throws -> SymmetricKey {
        // X25519 with a low-order point gives all zeros; refuse it as the session layer does.
        guard secret.withUnsafeBytes({ $0.contains { $0 != 0 } }) else { throw Failure("sealed envelope key agreement gave zero") }
        return secret.hkdfDerivedSymmetricKey(using: SHA256.self, salt: ephemeral + recipientAgreement, sharedInfo: info, outputByteCount: 32)
    }
}

/// What a direct message's session plaintext holds: sent-at (u64 ms since the epoch, sender's
/// clock) ‖ UTF-8 text.
struct DirectText {
    let sentAt: UInt64
    let text: String

    func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 8 + text.utf8.count)
        w.write(sentAt); w.write(bytes: Array(text.utf8))
        return w.bytes
    }

    init(sentAt: UInt64, text: String) { self.sentAt = sentAt; self.text = text }

    init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        sentAt = try r.readUInt64("sent at")
        let rest = try r.readBytes(r.remaining, "text")
        guard let text = String(validating: rest, as: UTF8.self) else { throw Failure("message text is not UTF-8") }
        self.text = text
    }
}
