import Crypto
import CSodium
import Foundation
import ShroudWire

/// Why a keystore record could not be opened.
public enum KeystoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case wrongPassphrase
    case corrupted(String)
    case unsupported(String)
    case locked
    case tooLarge(Int)
    case keyDerivationFailed

    public var description: String {
        switch self {
        case .wrongPassphrase: return "wrong passphrase"
        case let .corrupted(reason): return "keystore record is corrupted: \(reason)"
        case let .unsupported(reason): return "unsupported keystore record: \(reason)"
        case .locked: return "profile is locked: give the passphrase to unlock it"
        case let .tooLarge(n): return "secret too large for the keystore: \(n) bytes, limit \(Keystore.maximumSecretSize)"
        case .keyDerivationFailed: return "Argon2id key derivation failed (out of memory?)"
        }
    }
}

/// Argon2id cost parameters (libsodium `crypto_pwhash`, algorithm ARGON2ID13).
public struct Argon2idParameters: Equatable, Sendable {
    public let opsLimit: UInt32
    /// Bytes.
    public let memLimit: UInt64

    public init(opsLimit: UInt32, memLimit: UInt64) {
        self.opsLimit = opsLimit
        self.memLimit = memLimit
    }

    /// What new records use: 3 passes over 256 MiB (libsodium's "moderate" level). Chosen so an
    /// unlock takes 0.3–1 s on the project machine, measured with `./tools/bench keystore`
    /// (docs/PERFORMANCE.md); 64 MiB took only 0.16 s there.
    public static let recommended = Argon2idParameters(opsLimit: 3, memLimit: 256 << 20)

    /// libsodium's minimums (1 pass, 8 KiB): for tests only, so the suite does not spend seconds
    /// per case. Records sealed with it open like any other.
    public static let testOnly = Argon2idParameters(opsLimit: 1, memLimit: 8 << 10)

    /// Bounds accepted when parsing, so a crafted record cannot make the client allocate without
    /// limit or spin for hours.
    public static let minimumOpsLimit: UInt32 = 1
    public static let maximumOpsLimit: UInt32 = 16
    public static let minimumMemLimit: UInt64 = 8 << 10
    public static let maximumMemLimit: UInt64 = 1 << 30
}

/// A secret sealed under a passphrase (DESIGN.md §1.9).
///
/// Layout (all integers big-endian), version 1:
///
///     0      4  magic "SHKS"
///     4      1  version = 1
///     5      1  KDF = 1 (Argon2id v1.3)
///     6      4  opsLimit
///     10     8  memLimit (bytes)
///     18    16  salt
///     34    12  nonce (AES-256-GCM)
///     46    16  passphrase check
///     62     n  ciphertext ‖ 16-byte GCM tag
///     62+n   8  record checksum: SHA-256(bytes 0..<62+n)[0..<8]
///
/// master = Argon2id(NFKD(passphrase) as UTF-8, salt, opsLimit, memLimit, 32 bytes);
/// key = HKDF-SHA256(master, info "shroud/v1/keystore/aes-256-gcm", 32);
/// check = HKDF-SHA256(master, info "shroud/v1/keystore/passphrase-check", 16);
/// AAD = bytes 0..<62 (so the parameters, salt and nonce cannot be altered).
///
/// The checksum tells accidental corruption apart before any key derivation; the check value
/// tells a wrong passphrase apart from a damaged ciphertext. Neither helps an attacker: each
/// passphrase guess still costs one Argon2id run, exactly as the GCM tag alone would.
public struct SealedRecord: Equatable, Sendable {
    public static let magic = Array("SHKS".utf8)
    public static let version: UInt8 = 1
    public static let kdfArgon2id13: UInt8 = 1
    public static let saltByteCount = 16
    public static let nonceByteCount = 12
    public static let checkByteCount = 16
    public static let tagByteCount = 16
    public static let checksumByteCount = 8
    static let headerByteCount = 62

    public let parameters: Argon2idParameters
    public let salt: [UInt8]
    public let nonce: [UInt8]
    public let passphraseCheck: [UInt8]
    public let ciphertextAndTag: [UInt8]

    public init(parameters: Argon2idParameters, salt: [UInt8], nonce: [UInt8], passphraseCheck: [UInt8], ciphertextAndTag: [UInt8]) {
        self.parameters = parameters
        self.salt = salt
        self.nonce = nonce
        self.passphraseCheck = passphraseCheck
        self.ciphertextAndTag = ciphertextAndTag
    }

    public init(parsing bytes: [UInt8]) throws {
        let minimum = Self.headerByteCount + Self.tagByteCount + Self.checksumByteCount
        guard bytes.count >= minimum else {
            throw KeystoreError.corrupted("truncated: \(bytes.count) bytes, at least \(minimum) needed")
        }
        guard bytes.count <= minimum + Keystore.maximumSecretSize else { throw KeystoreError.tooLarge(bytes.count - minimum) }
        guard Array(bytes[0..<4]) == Self.magic else { throw KeystoreError.corrupted("not a Shroud keystore record (bad magic)") }
        let body = Array(bytes[..<(bytes.count - Self.checksumByteCount)])
        guard Array(bytes[body.count...]) == Self.checksum(body) else { throw KeystoreError.corrupted("checksum mismatch") }
        var reader = ByteReader(body, offset: 4)
        do {
            let version = try reader.readUInt8("version")
            guard version == Self.version else { throw KeystoreError.unsupported("version \(version)") }
            let kdf = try reader.readUInt8("kdf")
            guard kdf == Self.kdfArgon2id13 else { throw KeystoreError.unsupported("key derivation \(kdf)") }
            let ops = try reader.readUInt32("opsLimit")
            let mem = try reader.readUInt64("memLimit")
            guard (Argon2idParameters.minimumOpsLimit...Argon2idParameters.maximumOpsLimit).contains(ops),
                  (Argon2idParameters.minimumMemLimit...Argon2idParameters.maximumMemLimit).contains(mem) else {
                throw KeystoreError.unsupported("Argon2id parameters out of range (ops \(ops), memory \(mem) bytes)")
            }
            parameters = Argon2idParameters(opsLimit: ops, memLimit: mem)
            salt = try reader.readBytes(Self.saltByteCount, "salt")
            nonce = try reader.readBytes(Self.nonceByteCount, "nonce")
            passphraseCheck = try reader.readBytes(Self.checkByteCount, "passphrase check")
            ciphertextAndTag = reader.readRest()
        } catch let error as WireError {
            throw KeystoreError.corrupted(error.description)
        }
    }

    var header: [UInt8] {
        var w = ByteWriter(capacity: Self.headerByteCount)
        w.write(bytes: Self.magic)
        w.write(Self.version)
        w.write(Self.kdfArgon2id13)
        w.write(parameters.opsLimit)
        w.write(parameters.memLimit)
        w.write(bytes: salt)
        w.write(bytes: nonce)
        w.write(bytes: passphraseCheck)
        return w.bytes
    }

    public func serialized() -> [UInt8] {
        let body = header + ciphertextAndTag
        return body + Self.checksum(body)
    }

    static func checksum(_ body: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: body).prefix(checksumByteCount)) }
}

/// Seals and opens secrets under a passphrase.
public enum Keystore {
    public static let maximumSecretSize = 64 << 10
    static let encryptionKeyLabel = Array("shroud/v1/keystore/aes-256-gcm".utf8)
    static let checkLabel = Array("shroud/v1/keystore/passphrase-check".utf8)

    public static func seal(secret: SecureBytes, passphrase: String, parameters: Argon2idParameters = .recommended,
                            random: inout some RandomSource) throws -> SealedRecord {
        guard secret.count <= maximumSecretSize else { throw KeystoreError.tooLarge(secret.count) }
        let salt = random.bytes(SealedRecord.saltByteCount)
        let nonce = random.bytes(SealedRecord.nonceByteCount)
        let (key, check) = try deriveKeys(passphrase: passphrase, salt: salt, parameters: parameters)
        let partial = SealedRecord(parameters: parameters, salt: salt, nonce: nonce, passphraseCheck: check, ciphertextAndTag: [])
        let box = try secret.withUnsafeBytes { plain in
            try AES.GCM.seal(plain, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: partial.header)
        }
        return SealedRecord(parameters: parameters, salt: salt, nonce: nonce, passphraseCheck: check,
                            ciphertextAndTag: Array(box.ciphertext) + Array(box.tag))
    }

    public static func open(record: SealedRecord, passphrase: String) throws -> SecureBytes {
        let (key, check) = try deriveKeys(passphrase: passphrase, salt: record.salt, parameters: record.parameters)
        guard constantTimeEquals(check, record.passphraseCheck) else { throw KeystoreError.wrongPassphrase }
        let split = record.ciphertextAndTag.count - SealedRecord.tagByteCount
        guard split >= 0 else { throw KeystoreError.corrupted("ciphertext shorter than its tag") }
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: record.nonce),
                                            ciphertext: record.ciphertextAndTag[..<split],
                                            tag: record.ciphertextAndTag[split...])
            var plain = try AES.GCM.open(box, using: key, authenticating: record.header)
            defer { plain.resetBytes(in: 0..<plain.count) }
            return SecureBytes(copying: plain)
        } catch {
            throw KeystoreError.corrupted("authentication failed (the ciphertext was altered)")
        }
    }

    /// Parses and opens serialized bytes.
    public static func open(bytes: [UInt8], passphrase: String) throws -> SecureBytes {
        try open(record: SealedRecord(parsing: bytes), passphrase: passphrase)
    }

    static func deriveKeys(passphrase: String, salt: [UInt8], parameters: Argon2idParameters) throws -> (SymmetricKey, [UInt8]) {
        _ = Sodium.ready
        // NFKD, as BIP39 does, so the same passphrase typed on another system (composed or
        // decomposed accents) opens the record. A trailing NUL keeps the pointer valid for an empty
        // passphrase; it is not hashed.
        var password = Array(passphrase.decomposedStringWithCompatibilityMapping.utf8) + [0]
        defer { sodium_wipe(&password) }
        let master = try SecureBytes(count: 32) { out in
            guard let outBase = out.baseAddress?.assumingMemoryBound(to: UInt8.self) else { throw KeystoreError.keyDerivationFailed }
            let status = password.withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { pc -> Int32 in
                    guard let passwordBase = pc.baseAddress else { return -1 }
                    return crypto_pwhash(outBase, UInt64(out.count), passwordBase, UInt64(pc.count - 1),
                                  salt, UInt64(parameters.opsLimit), Int(parameters.memLimit), crypto_pwhash_ALG_ARGON2ID13)
                }
            }
            guard status == 0 else { throw KeystoreError.keyDerivationFailed }
        }
        return master.withUnsafeBytes { m in
            let ikm = SymmetricKey(data: m)
            let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: ikm, info: encryptionKeyLabel, outputByteCount: 32)
            let check = HKDF<SHA256>.deriveKey(inputKeyMaterial: ikm, info: checkLabel, outputByteCount: SealedRecord.checkByteCount)
            return (key, check.withUnsafeBytes { Array($0) })
        }
    }
}

/// Named secrets serialized into one buffer, so a whole profile is one keystore record and
/// unlocking it costs one Argon2id run.
///
///     u16 count, then count × (u8 name length ‖ name UTF-8 ‖ u32 value length ‖ value)
///
/// Names are unique and non-empty; the entries are written in name order, so the encoding of a set
/// of secrets is unique. Parsing reads straight from secure memory: no plain copy of a value is made.
public enum SecretBundle {
    public static let maximumSecrets = 64

    public static func serialize(_ secrets: [String: SecureBytes]) throws -> SecureBytes {
        guard secrets.count <= maximumSecrets else {
            throw KeystoreError.corrupted("at most \(maximumSecrets) secrets in a profile, got \(secrets.count)")
        }
        let entries = secrets.sorted { $0.key < $1.key }
        var size = 2
        for (name, value) in entries {
            let n = name.utf8.count
            guard (1...255).contains(n) else { throw KeystoreError.corrupted("secret name must be 1...255 bytes") }
            size += 1 + n + 4 + value.count
        }
        guard size <= Keystore.maximumSecretSize else { throw KeystoreError.tooLarge(size) }
        return SecureBytes(count: size) { out in
            var o = 0
            func put(_ byte: UInt8) { out[o] = byte; o += 1 }
            put(UInt8(entries.count >> 8)); put(UInt8(entries.count & 0xff))
            for (name, value) in entries {
                put(UInt8(name.utf8.count))
                for b in name.utf8 { put(b) }
                let c = UInt32(value.count)
                put(UInt8(c >> 24)); put(UInt8(c >> 16 & 0xff)); put(UInt8(c >> 8 & 0xff)); put(UInt8(c & 0xff))
                value.withUnsafeBytes { v in for b in v { put(b) } }
            }
        }
    }

    public static func parse(_ bundle: SecureBytes) throws -> [String: SecureBytes] {
        try bundle.withUnsafeBytes { raw in
            var offset = 0
            func take(_ n: Int, _ field: String) throws -> UnsafeRawBufferPointer {
                guard n <= raw.count - offset else { throw KeystoreError.corrupted("secret bundle truncated in \(field)") }
                defer { offset += n }
                return UnsafeRawBufferPointer(rebasing: raw[offset..<offset + n])
            }
            let countBytes = try take(2, "count")
            let count = Int(countBytes[0]) << 8 | Int(countBytes[1])
            guard count <= maximumSecrets else { throw KeystoreError.corrupted("secret bundle holds \(count) secrets, limit \(maximumSecrets)") }
            var result: [String: SecureBytes] = [:]
            var previous = ""
            for _ in 0..<count {
                let nameLength = Int(try take(1, "name length")[0])
                guard let name = String(validating: try take(nameLength, "name"), as: UTF8.self), !name.isEmpty else {
                    throw KeystoreError.corrupted("secret name is not valid UTF-8")
                }
                guard result.isEmpty || name > previous else { throw KeystoreError.corrupted("secret names out of order or repeated") }
                let l = try take(4, "value length")
                let valueLength = Int(l[0]) << 24 | Int(l[1]) << 16 | Int(l[2]) << 8 | Int(l[3])
                result[name] = SecureBytes(copying: try take(valueLength, "value"))
                previous = name
            }
            guard offset == raw.count else { throw KeystoreError.corrupted("secret bundle has trailing bytes") }
            return result
        }
    }
}

/// The profile's secrets while the client runs (DESIGN.md §1.9): unlocked from one sealed record
/// with the passphrase, wiped by `lock()`. While locked every access throws `profile is locked`.
public final class ProfileSecrets: @unchecked Sendable {
    private let mutex = NSLock()
    private var secrets: [String: SecureBytes] = [:]
    private var unlocked = false

    /// A locked holder; `unlock(record:passphrase:)` fills it.
    public init() {}

    /// An unlocked holder for a new profile (e.g. `shroud id new`), to be sealed with `seal`.
    public init(unlocked secrets: [String: SecureBytes]) {
        self.secrets = secrets
        unlocked = true
    }

    public var isLocked: Bool { mutex.withLock { !unlocked } }

    /// Opens the profile record; on any error the holder stays locked and nothing is kept.
    public func unlock(record: SealedRecord, passphrase: String) throws {
        let bundle = try Keystore.open(record: record, passphrase: passphrase)
        defer { bundle.wipe() }
        let opened = try SecretBundle.parse(bundle)
        mutex.withLock {
            for secret in secrets.values { secret.wipe() }
            secrets = opened
            unlocked = true
        }
    }

    /// Seals every secret into one record (only while unlocked).
    public func seal(passphrase: String, parameters: Argon2idParameters = .recommended,
                     random: inout some RandomSource) throws -> SealedRecord {
        let bundle = try mutex.withLock { () throws -> SecureBytes in
            guard unlocked else { throw KeystoreError.locked }
            return try SecretBundle.serialize(secrets)
        }
        defer { bundle.wipe() }
        return try Keystore.seal(secret: bundle, passphrase: passphrase, parameters: parameters, random: &random)
    }

    /// Adds or replaces a secret; only while unlocked.
    public func store(_ secret: SecureBytes, named name: String) throws {
        try mutex.withLock {
            guard unlocked else { throw KeystoreError.locked }
            if let old = secrets[name], old !== secret { old.wipe() }
            secrets[name] = secret
        }
    }

    public func secret(named name: String) throws -> SecureBytes? {
        try mutex.withLock {
            guard unlocked else { throw KeystoreError.locked }
            return secrets[name]
        }
    }

    /// Wipes every secret now. Holders of a `SecureBytes` reference see zeros and `isWiped`.
    public func lock() {
        mutex.withLock {
            for secret in secrets.values { secret.wipe() }
            secrets = [:]
            unlocked = false
        }
    }
}
