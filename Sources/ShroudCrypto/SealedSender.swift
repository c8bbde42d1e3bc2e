import Crypto
import ShroudWire

/// The sealed-sender envelope of a direct message (docs/PROTOCOL.md §5): what the relay's blob
/// holds before bucket padding. The relay sees the recipient (in `sendDirect`) and this envelope;
/// only the recipient can open it and learn the sender.
///
///     envelope = version u8 (= 1) ‖ ephemeral X25519 public key (32) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
///     key      = HKDF-SHA256(ikm = X25519(ephemeral, recipient X25519 identity key),
///                            salt = ephemeral ‖ recipient X25519 key, info = "shroud/v1/sealed-sender", 32)
///     AAD      = version ‖ ephemeral ‖ recipient Ed25519 key
///     inner    = sender Ed25519 key (32) ‖ SessionMessage — AES-256-GCM (DESIGN.md §4: AES-256-GCM everywhere symmetric)
///
/// The named sender is authenticated by the session layer, not by this envelope: a ratchet message
/// only decrypts under the session with that sender, and an initial (prekey) message names its
/// initiator, which `SessionCipher.decrypt` requires to match.
public enum SealedEnvelope {
    public static let version: UInt8 = 1
    public static let info = Array("shroud/v1/sealed-sender".utf8)
    static let ephemeralOffset = 1
    static let boxOffset = 1 + 32
    /// Version, ephemeral key, nonce, sender key, the shortest session message byte, tag.
    public static let minimumSize = boxOffset + 12 + 32 + 1 + 16

    public static func seal(sender: [UInt8], message: SessionMessage, recipient: PublicIdentity,
                            random: inout some RandomSource) throws -> [UInt8] {
        guard sender.count == 32 else { throw CryptoError.invalidInput("sender key must be 32 bytes") }
        let (secret, ephemeralPublic) = SessionPrimitives.generateAgreementKeyPair(using: &random)
        let key = try derive(SessionPrimitives.agree(secret, recipient.agreementKey), ephemeral: ephemeralPublic,
                             recipientAgreement: recipient.agreementKey)
        let nonce = random.bytes(SessionPrimitives.nonceLength)
        let box = try AES.GCM.seal(sender + message.serialize(), using: key, nonce: try AES.GCM.Nonce(data: nonce),
                                   authenticating: [version] + ephemeralPublic + recipient.signingKey)
        // A 12-byte nonce always has a combined form (nonce ‖ ciphertext ‖ tag).
        guard let combined = box.combined else { throw CryptoError.invalidInput("AES-GCM combined form unavailable") }
        return [version] + ephemeralPublic + Array(combined)
    }

    /// Opens an envelope addressed to `recipient`; returns the named sender's Ed25519 key and the
    /// session message. A malformed, truncated, altered or misaddressed envelope throws.
    public static func open(_ envelope: [UInt8], recipient: IdentityKeyPair) throws -> (sender: [UInt8], message: SessionMessage) {
        guard envelope.count >= minimumSize else {
            throw CryptoError.invalidInput("sealed envelope is \(envelope.count) bytes, shorter than \(minimumSize)")
        }
        guard envelope[0] == version else { throw CryptoError.invalidInput("sealed envelope version \(envelope[0]) is not supported") }
        let ephemeralPublic = Array(envelope[ephemeralOffset..<boxOffset])
        let own = recipient.publicIdentity
        let key = try derive(SessionPrimitives.agree(recipient.agreementSecret, ephemeralPublic), ephemeral: ephemeralPublic,
                             recipientAgreement: own.agreementKey)
        let inner: [UInt8]
        do {
            inner = Array(try AES.GCM.open(try AES.GCM.SealedBox(combined: envelope[boxOffset...]), using: key,
                                           authenticating: [version] + ephemeralPublic + own.signingKey))
        } catch {
            throw CryptoError.authenticationFailed("sealed envelope does not open: not for this identity, or altered")
        }
        return (Array(inner[0..<32]), try SessionMessage(parsing: Array(inner[32...])))
    }

    private static func derive(_ shared: SecureBytes, ephemeral: [UInt8], recipientAgreement: [UInt8]) -> SymmetricKey {
        SessionPrimitives.symmetricKey(SessionPrimitives.hkdf(ikm: shared, salt: ephemeral + recipientAgreement, info: info,
                                                              outputLength: SessionPrimitives.keyLength))
    }
}

/// What a direct message's session plaintext holds: sent-at (u64 ms since the epoch, the sender's
/// clock) ‖ UTF-8 text.
public struct DirectText: Equatable, Sendable {
    public let sentAt: UInt64
    public let text: String

    public init(sentAt: UInt64, text: String) { self.sentAt = sentAt; self.text = text }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 8 + text.utf8.count)
        w.write(sentAt); w.write(bytes: Array(text.utf8))
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        sentAt = try r.readUInt64("sent at")
        let rest = try r.readBytes(r.remaining, "text")
        guard let text = String(validating: rest, as: UTF8.self) else { throw CryptoError.invalidInput("message text is not UTF-8") }
        self.text = text
    }
}
