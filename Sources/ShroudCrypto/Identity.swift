import Crypto

/// Errors of the end-to-end layer. Each carries a one-line reason a user can act on.
public enum CryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidKey(String)
    case badSignature(String)
    case authenticationFailed(String)
    case invalidInput(String)
    case limitExceeded(String)

    public var description: String {
        switch self {
        case let .invalidKey(r), let .badSignature(r), let .authenticationFailed(r),
             let .invalidInput(r), let .limitExceeded(r):
            return r
        }
    }
}

/// The public half of a Shroud identity: an Ed25519 signing key, and an X25519 agreement key bound
/// to it by an Ed25519 signature (so a peer that knows only the signing key can check the binding;
/// the relay cannot substitute an agreement key, DESIGN.md §1.2).
public struct PublicIdentity: Hashable, Sendable {
    public static let agreementBindingLabel = Array("shroud/v1/identity/agreement-key".utf8)

    public let signingKey: [UInt8]          // 32 bytes, Ed25519
    public let agreementKey: [UInt8]        // 32 bytes, X25519
    public let agreementSignature: [UInt8]  // 64 bytes: Ed25519 over label ‖ agreementKey

    /// Checks lengths and the binding signature; a failing check is an error, never a warning.
    public init(signingKey: [UInt8], agreementKey: [UInt8], agreementSignature: [UInt8]) throws {
        guard signingKey.count == 32 else { throw CryptoError.invalidKey("identity signing key must be 32 bytes") }
        guard agreementKey.count == 32 else { throw CryptoError.invalidKey("identity agreement key must be 32 bytes") }
        guard agreementSignature.count == 64 else { throw CryptoError.badSignature("agreement key signature must be 64 bytes") }
        let verifier: Curve25519.Signing.PublicKey
        do { verifier = try Curve25519.Signing.PublicKey(rawRepresentation: signingKey) } catch {
            throw CryptoError.invalidKey("identity signing key is not a valid Ed25519 key")
        }
        guard verifier.isValidSignature(agreementSignature, for: Self.agreementBindingLabel + agreementKey) else {
            throw CryptoError.badSignature("agreement key is not signed by the identity key")
        }
        self.signingKey = signingKey
        self.agreementKey = agreementKey
        self.agreementSignature = agreementSignature
    }

    /// The parsed keys; both were validated in `init`, so rebuilding them here cannot fail, but
    /// the failure path still answers "invalid" rather than trapping.
    public func signingPublicKey() throws -> Curve25519.Signing.PublicKey {
        try Curve25519.Signing.PublicKey(rawRepresentation: signingKey)
    }

    public func agreementPublicKey() throws -> Curve25519.KeyAgreement.PublicKey {
        try Curve25519.KeyAgreement.PublicKey(rawRepresentation: agreementKey)
    }

    /// Checks an Ed25519 signature made by this identity.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        (try? signingPublicKey())?.isValidSignature(signature, for: message) ?? false
    }
}

/// A full identity: both private keys, derived deterministically from the 64-byte BIP39 seed, so
/// that restoring the recovery phrase recreates exactly the same identity (see docs/CRYPTO.md).
public final class IdentityKeyPair: @unchecked Sendable {
    /// HKDF-SHA512 info labels; the salt is empty and the input key material is the BIP39 seed.
    public static let signingKeyLabel = Array("shroud/v1/identity/ed25519".utf8)
    public static let agreementKeyLabel = Array("shroud/v1/identity/x25519".utf8)

    public let signingSeed: SecureBytes    // Ed25519 private seed, 32 bytes
    public let agreementSecret: SecureBytes // X25519 private scalar, 32 bytes
    public let publicIdentity: PublicIdentity

    /// Derives the identity from a BIP39 seed (64 bytes).
    public convenience init(seed: SecureBytes) throws {
        guard seed.count == 64 else { throw CryptoError.invalidKey("recovery seed must be 64 bytes") }
        let ikm = seed.withUnsafeBytes { SymmetricKey(data: $0) }
        let signing = HKDF<SHA512>.deriveKey(inputKeyMaterial: ikm, info: Self.signingKeyLabel, outputByteCount: 32)
        let agreement = HKDF<SHA512>.deriveKey(inputKeyMaterial: ikm, info: Self.agreementKeyLabel, outputByteCount: 32)
        try self.init(
            signingSeed: signing.withUnsafeBytes { SecureBytes(copying: $0) },
            agreementSecret: agreement.withUnsafeBytes { SecureBytes(copying: $0) })
    }

    /// Rebuilds an identity from its two stored private keys.
    public init(signingSeed: SecureBytes, agreementSecret: SecureBytes) throws {
        guard signingSeed.count == 32, agreementSecret.count == 32 else {
            throw CryptoError.invalidKey("identity private keys must be 32 bytes each")
        }
        self.signingSeed = signingSeed
        self.agreementSecret = agreementSecret
        let signer = try signingSeed.withUnsafeBytes { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
        let agreement = try agreementSecret.withUnsafeBytes { try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: $0) }
        let agreementPublic = Array(agreement.publicKey.rawRepresentation)
        let signature = Array(try signer.signature(for: PublicIdentity.agreementBindingLabel + agreementPublic))
        publicIdentity = try PublicIdentity(
            signingKey: Array(signer.publicKey.rawRepresentation),
            agreementKey: agreementPublic,
            agreementSignature: signature)
    }

    // Cannot fail: both secrets are 32 bytes (checked in init), and every 32-byte string is a
    // valid Ed25519 seed / X25519 scalar for swift-crypto.
    /// The Ed25519 private key; refused once the identity was wiped (profile locked).
    public func signingPrivateKey() throws -> Curve25519.Signing.PrivateKey {
        guard !isWiped else { throw CryptoError.invalidKey("identity keys were wiped (profile locked)") }
        return try signingSeed.withUnsafeBytes { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
    }

    /// The X25519 private key; refused once the identity was wiped (profile locked).
    public func agreementPrivateKey() throws -> Curve25519.KeyAgreement.PrivateKey {
        guard !isWiped else { throw CryptoError.invalidKey("identity keys were wiped (profile locked)") }
        return try agreementSecret.withUnsafeBytes { try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: $0) }
    }

    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        Array(try signingPrivateKey().signature(for: message))
    }

    /// True after `wipe()`: the private keys are zeros and must not be used.
    public var isWiped: Bool { signingSeed.isWiped || agreementSecret.isWiped }

    /// Wipes both private keys (profile lock). Afterwards `sign`, `signingPrivateKey()` and
    /// `agreementPrivateKey()` throw until the identity is loaded again.
    public func wipe() {
        signingSeed.wipe()
        agreementSecret.wipe()
    }
}
