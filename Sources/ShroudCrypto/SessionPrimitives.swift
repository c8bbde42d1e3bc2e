import Crypto
import CSodium
import ShroudWire

/// The small set of primitives the session layer (X3DH, Double Ratchet, Sender Keys) is built from,
/// each with the exact derivation written in docs/parts/crypto-sessions.md.
enum SessionPrimitives {
    static let keyLength = 32
    static let nonceLength = 12
    static let tagLength = 16

    /// X25519 with the checks X3DH and the ratchet need: a malformed public key or an all-zero
    /// output (the peer sent a low-order point, so the result would not depend on our secret) is
    /// an error, never a silently weak key.
    static func agree(_ privateKey: SecureBytes, _ publicKey: [UInt8]) throws -> SecureBytes {
        guard publicKey.count == keyLength else { throw CryptoError.invalidKey("X25519 public key must be 32 bytes") }
        let output = SecureBytes(count: keyLength) { _ in }
        let rc = output.withUnsafeBytes { out in
            privateKey.withUnsafeBytes { secret in
                publicKey.withUnsafeBufferPointer { pub in
                    crypto_scalarmult_curve25519(
                        UnsafeMutablePointer(mutating: out.bindMemory(to: UInt8.self).baseAddress!),
                        secret.bindMemory(to: UInt8.self).baseAddress!, pub.baseAddress!)
                }
            }
        }
        // libsodium returns -1 when the output is all zero (low-order input); check ourselves too so
        // the rule does not depend on the library's version.
        let allZero = output.withUnsafeBytes { sodium_is_zero($0.bindMemory(to: UInt8.self).baseAddress!, keyLength) == 1 }
        guard rc == 0, !allZero else {
            throw CryptoError.invalidKey("X25519 agreement produced an all-zero secret (low-order public key)")
        }
        return output
    }

    /// A fresh X25519 key pair from `random` (the secret is clamped by X25519 itself).
    static func generateAgreementKeyPair(using random: inout some RandomSource) -> (secret: SecureBytes, publicKey: [UInt8]) {
        let secret = SecureBytes(randomCount: keyLength, using: &random)
        return (secret, agreementPublicKey(secret))
    }

    static func agreementPublicKey(_ secret: SecureBytes) -> [UInt8] {
        var pub = [UInt8](repeating: 0, count: keyLength)
        secret.withUnsafeBytes { s in
            pub.withUnsafeMutableBufferPointer { p in
                _ = crypto_scalarmult_curve25519_base(p.baseAddress!, s.bindMemory(to: UInt8.self).baseAddress!)
            }
        }
        return pub
    }

    /// HKDF-SHA256 (RFC 5869) into secure memory.
    static func hkdf(ikm: SecureBytes, salt: [UInt8], info: [UInt8], outputLength: Int) -> SecureBytes {
        let key = ikm.withUnsafeBytes { SymmetricKey(data: $0) }
        let derived = HKDF<SHA256>.deriveKey(inputKeyMaterial: key, salt: salt, info: info, outputByteCount: outputLength)
        return derived.withUnsafeBytes { SecureBytes(copying: $0) }
    }

    /// Splits `bytes` into consecutive secure pieces of the given lengths.
    static func split(_ bytes: SecureBytes, _ lengths: [Int]) -> [SecureBytes] {
        var pieces: [SecureBytes] = []
        var offset = 0
        bytes.withUnsafeBytes { raw in
            for length in lengths {
                pieces.append(SecureBytes(copying: UnsafeRawBufferPointer(rebasing: raw[offset..<offset + length])))
                offset += length
            }
        }
        return pieces
    }

    /// The symmetric chain step shared by the ratchet and sender keys: message key = HMAC(ck, 0x01),
    /// next chain key = HMAC(ck, 0x02) (Signal's recommended KDF_CK).
    static func chainStep(_ chainKey: SecureBytes) -> (next: SecureBytes, messageKey: SecureBytes) {
        let key = chainKey.withUnsafeBytes { SymmetricKey(data: $0) }
        let mk = HMAC<SHA256>.authenticationCode(for: messageKeyConstant, using: key)
        let ck = HMAC<SHA256>.authenticationCode(for: chainKeyConstant, using: key)
        return (ck.withUnsafeBytes { SecureBytes(copying: $0) }, mk.withUnsafeBytes { SecureBytes(copying: $0) })
    }

    static let messageKeyConstant: [UInt8] = [0x01]
    static let chainKeyConstant: [UInt8] = [0x02]

    /// AES-256-GCM seal; returns ciphertext ‖ tag.
    static func seal(key: SymmetricKey, nonce: [UInt8], plaintext: [UInt8], associatedData: [UInt8]) throws -> [UInt8] {
        let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: associatedData)
        var out = [UInt8]()
        out.reserveCapacity(plaintext.count + tagLength)
        out.append(contentsOf: box.ciphertext)
        out.append(contentsOf: box.tag)
        return out
    }

    /// AES-256-GCM open of ciphertext ‖ tag; any failure is `authenticationFailed`.
    static func open(key: SymmetricKey, nonce: [UInt8], sealed: ArraySlice<UInt8>, associatedData: [UInt8], what: String) throws -> [UInt8] {
        guard sealed.count >= tagLength else { throw CryptoError.authenticationFailed("\(what) is shorter than its tag") }
        do {
            let box = try AES.GCM.SealedBox(
                nonce: AES.GCM.Nonce(data: nonce),
                ciphertext: sealed.dropLast(tagLength), tag: sealed.suffix(tagLength))
            return Array(try AES.GCM.open(box, using: key, authenticating: associatedData))
        } catch {
            throw CryptoError.authenticationFailed("\(what) failed authentication")
        }
    }

    static func symmetricKey(_ bytes: SecureBytes) -> SymmetricKey {
        bytes.withUnsafeBytes { SymmetricKey(data: $0) }
    }
}

extension ByteReader {
    /// Reads a presence byte (0 or 1) followed, when present, by `count` bytes.
    mutating func readOptionalBytes(_ count: Int, _ field: String) throws -> [UInt8]? {
        switch try readUInt8(field + " flag") {
        case 0: return nil
        case 1: return try readBytes(count, field)
        case let other: throw WireError.invalid(field: field + " flag", reason: "must be 0 or 1, got \(other)")
        }
    }

    mutating func readSecure(_ count: Int, _ field: String) throws -> SecureBytes {
        var bytes = try readBytes(count, field)
        defer { for i in bytes.indices { bytes[i] = 0 } }
        return SecureBytes(copying: bytes)
    }

    mutating func readOptionalSecure(_ count: Int, _ field: String) throws -> SecureBytes? {
        guard var bytes = try readOptionalBytes(count, field) else { return nil }
        defer { for i in bytes.indices { bytes[i] = 0 } }
        return SecureBytes(copying: bytes)
    }

    /// Fails unless the whole input was consumed, so trailing garbage is never silently accepted.
    func expectEnd(_ what: String) throws {
        guard isAtEnd else { throw WireError.invalid(field: what, reason: "\(remaining) trailing bytes") }
    }

    mutating func expectVersion(_ expected: UInt8, _ what: String) throws {
        let version = try readUInt8(what + " version")
        guard version == expected else {
            throw WireError.invalid(field: what + " version", reason: "unsupported version \(version), expected \(expected)")
        }
    }
}

extension ByteWriter {
    mutating func writeOptional(_ bytes: [UInt8]?) {
        if let bytes { write(UInt8(1)); write(bytes: bytes) } else { write(UInt8(0)) }
    }

    mutating func write(secure: SecureBytes) {
        secure.withUnsafeBytes { write(bytes: $0) }
    }

    mutating func writeOptional(secure: SecureBytes?) {
        if let secure { write(UInt8(1)); write(secure: secure) } else { write(UInt8(0)) }
    }
}

extension PublicIdentity {
    /// Fixed 128-byte encoding used inside session messages and X3DH's associated data:
    /// signingKey(32) ‖ agreementKey(32) ‖ agreementSignature(64).
    public static let sessionEncodingLength = 128

    public var sessionEncoding: [UInt8] { signingKey + agreementKey + agreementSignature }

    /// Parses the 128-byte encoding and verifies the agreement-key binding.
    public init(parsingSessionEncoding bytes: [UInt8]) throws {
        guard bytes.count == Self.sessionEncodingLength else {
            throw CryptoError.invalidInput("encoded identity must be \(Self.sessionEncodingLength) bytes, got \(bytes.count)")
        }
        try self.init(signingKey: Array(bytes[0..<32]), agreementKey: Array(bytes[32..<64]),
                      agreementSignature: Array(bytes[64..<128]))
    }

    static func read(from reader: inout ByteReader, _ field: String) throws -> PublicIdentity {
        try PublicIdentity(parsingSessionEncoding: try reader.readBytes(sessionEncodingLength, field))
    }
}

/// Lexicographic byte order, used for deterministic tie-breaking between identities.
func bytesPrecede(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.lexicographicallyPrecedes(b)
}
