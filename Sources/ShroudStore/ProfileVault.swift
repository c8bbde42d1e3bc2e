import Crypto
import Foundation
import ShroudCrypto

/// The profile's passphrase-sealed secrets (DESIGN.md §1.9): one keystore record, named
/// `profile-secrets` in the `sealed_secret` table, holding a `SecretBundle` with
///
/// - `recovery-entropy`: the 32-byte BIP39 entropy every identity key derives from;
/// - `storage-key`: 32 random bytes that encrypt the session-layer rows of the database
///   (`RowCipher`).
///
/// So unlocking a profile costs exactly one Argon2id run, and `ProfileSecrets.lock()` wipes both.
public enum ProfileVault {
    public static let sealedSecretName = "profile-secrets"
    /// Profiles written before the storage key existed sealed the entropy alone under this name;
    /// `unlock` converts them once.
    public static let legacyRecoverySecretName = "recovery-entropy"
    public static let recoveryEntropyName = "recovery-entropy"
    public static let storageKeyName = "storage-key"
    public static let storageKeyByteCount = 32

    /// Seals a new profile's secrets: the recovery entropy and a fresh storage key.
    public static func sealNew(recoveryEntropy: SecureBytes, passphrase: String,
                               parameters: Argon2idParameters = .recommended,
                               random: inout some RandomSource) throws -> SealedRecord {
        let secrets = ProfileSecrets(unlocked: [
            recoveryEntropyName: recoveryEntropy,
            storageKeyName: SecureBytes(randomCount: storageKeyByteCount, using: &random),
        ])
        defer { secrets.lock() }
        return try secrets.seal(passphrase: passphrase, parameters: parameters, random: &random)
    }

    /// Opens the profile's secrets with the passphrase. A profile from before the storage key is
    /// converted here: a storage key is added, the bundle sealed under the same passphrase, and the
    /// old record removed, in one transaction.
    public static func unlock(_ store: ProfileStore, passphrase: String,
                              parameters: Argon2idParameters = .recommended,
                              random: inout some RandomSource) throws -> ProfileSecrets {
        let secrets = ProfileSecrets()
        if let bytes = try store.sealedSecret(named: sealedSecretName) {
            try secrets.unlock(record: SealedRecord(parsing: bytes), passphrase: passphrase)
            guard let key = try secrets.secret(named: storageKeyName), key.count == storageKeyByteCount,
                  try secrets.secret(named: recoveryEntropyName) != nil else {
                secrets.lock()
                throw ProfileError.corrupt("the sealed profile secrets lack the recovery entropy or the storage key")
            }
            return secrets
        }
        guard let legacy = try store.sealedSecret(named: legacyRecoverySecretName) else {
            throw ProfileError.noIdentity(home: store.home)
        }
        let entropy = try Keystore.open(bytes: legacy, passphrase: passphrase)
        let record = try sealNew(recoveryEntropy: entropy, passphrase: passphrase, parameters: parameters, random: &random)
        try store.replaceSealedSecret(named: legacyRecoverySecretName, with: record.serialized(), newName: sealedSecretName)
        try secrets.unlock(record: record, passphrase: passphrase)
        return secrets
    }
}

/// Encrypts the secret columns of the profile database: AES-256-GCM under a key derived from the
/// profile's storage key, a random 96-bit nonce per write, and associated data naming the table
/// and the row's identity, so a row copied onto another row (or into another table) fails to open.
///
///     sealed  = version u8 (= 1) ‖ nonce 12 ‖ ciphertext ‖ tag 16
///     key     = HKDF-SHA256(storage key, salt empty, info "shroud/v1/profile/row-aes-256-gcm", 32)
///     AAD     = "shroud/v1/profile/row" ‖ 0x00 ‖ table (UTF-8) ‖ 0x00 ‖ for each key part: u16 length ‖ bytes
///
/// The key is read from `ProfileSecrets` on every use, so once the profile is locked every read
/// and write of a secret column throws `profile is locked`.
public struct RowCipher: Sendable {
    public static let version: UInt8 = 1
    public static let nonceByteCount = 12
    public static let tagByteCount = 16
    static let keyLabel = Array("shroud/v1/profile/row-aes-256-gcm".utf8)
    static let associatedDataLabel = Array("shroud/v1/profile/row".utf8)

    let secrets: ProfileSecrets

    public init(secrets: ProfileSecrets) { self.secrets = secrets }

    public func seal(_ plaintext: [UInt8], table: String, row: [[UInt8]]) throws -> [UInt8] {
        let key = try aeadKey()
        var random = SystemRandom()
        let nonce = random.bytes(Self.nonceByteCount)
        let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce),
                                   authenticating: try Self.associatedData(table: table, row: row))
        return [Self.version] + nonce + Array(box.ciphertext) + Array(box.tag)
    }

    public func open(_ sealed: [UInt8], table: String, row: [[UInt8]], rowName: String) throws -> [UInt8] {
        let key = try aeadKey()
        guard sealed.count >= 1 + Self.nonceByteCount + Self.tagByteCount, sealed[0] == Self.version else {
            throw ProfileError.rowAuthenticationFailed(table: table, row: rowName)
        }
        let tagStart = sealed.count - Self.tagByteCount
        let associatedData = try Self.associatedData(table: table, row: row)
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: sealed[1..<1 + Self.nonceByteCount]),
                                            ciphertext: sealed[(1 + Self.nonceByteCount)..<tagStart],
                                            tag: sealed[tagStart...])
            return Array(try AES.GCM.open(box, using: key, authenticating: associatedData))
        } catch {
            throw ProfileError.rowAuthenticationFailed(table: table, row: rowName)
        }
    }

    private func aeadKey() throws -> SymmetricKey {
        guard let storageKey = try secrets.secret(named: ProfileVault.storageKeyName), !storageKey.isWiped else {
            throw KeystoreError.locked
        }
        return storageKey.withUnsafeBytes { raw in
            HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: raw), info: Self.keyLabel, outputByteCount: 32)
        }
    }

    static func associatedData(table: String, row: [[UInt8]]) throws -> [UInt8] {
        var out = associatedDataLabel + [0] + Array(table.utf8) + [0]
        for part in row {
            // The u16 length keeps the encoding unambiguous; longer row keys are refused.
            guard part.count <= Int(UInt16.max) else {
                throw CryptoError.limitExceeded("row key of \(part.count) bytes in table \(table), limit \(UInt16.max)")
            }
            out += [UInt8(part.count >> 8), UInt8(part.count & 0xff)] + part
        }
        return out
    }
}
