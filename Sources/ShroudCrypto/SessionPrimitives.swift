import Crypto
import CSodium
import ShroudWire

/// The small set of primitives the session layer (X3DH, Double Ratchet, Sender Keys) is built from,
/// each with the exact derivation written in docs/CRYPTO.md §2.
enum SessionPrimitives {
    static let keyLength = 32
    static let nonceLength = 12
    static let tagLength = 16

    /// X25519 with the checks X3DH and the ratchet need: a malformed public key or an all-zero
    /// output (the peer sent a low-order point, so the result would not depend on our secret) is
    /// an error, never a silently weak key.
    static func agree(_ privateKey: SecureBytes, _ publicKey: [UInt8]) throws -> SecureBytes {
        try agree(agreementPrivateKey(privateKey), publicKey)
    }

    /// The swift-crypto key object for an X25519 secret (building it derives the public key, so the
    /// ratchet keeps the object rather than rebuilding it for every agreement).
    static func agreementPrivateKey(_ secret: SecureBytes) throws -> Curve25519.KeyAgreement.PrivateKey {
        do { return try secret.withUnsafeBytes { try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: $0) } } catch {
            throw CryptoError.invalidKey("X25519 private key must be 32 bytes")
        }
    }

    static func agree(_ ours: Curve25519.KeyAgreement.PrivateKey, _ publicKey: [UInt8]) throws -> SecureBytes {
        guard publicKey.count == keyLength else { throw CryptoError.invalidKey("X25519 public key must be 32 bytes") }
        let peer: Curve25519.KeyAgreement.PublicKey
        do { peer = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: publicKey) } catch {
            throw CryptoError.invalidKey("X25519 public key is malformed")
        }
        let shared = try ours.sharedSecretFromKeyAgreement(with: peer)
        let output = shared.withUnsafeBytes { SecureBytes(copying: $0) }
        // swift-crypto deliberately does not reject an all-zero result (low-order public key); we do.
        let allZero = output.withUnsafeBytes { sodium_is_zero(ptr($0), keyLength) == 1 }
        guard !allZero else {
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
        // Any 32 bytes are a valid X25519 private key (clamping is part of X25519).
        let key = secret.withUnsafeBytes { try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: $0) }
        return key.map { Array($0.publicKey.rawRepresentation) } ?? [UInt8](repeating: 0, count: keyLength)
    }

    /// One writable byte standing in for the base address of an empty buffer: libsodium's
    /// parameters are non-null even when the length is zero. Nothing ever reads or keeps it.
    nonisolated(unsafe) static let emptyBuffer: UnsafeMutablePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        p.initialize(to: 0)
        return p
    }()

    @inline(__always) static func ptr(_ b: UnsafeRawBufferPointer) -> UnsafePointer<UInt8> {
        guard let base = b.baseAddress else { return UnsafePointer(emptyBuffer) }
        return base.assumingMemoryBound(to: UInt8.self)
    }

    @inline(__always) static func mptr(_ b: UnsafeMutableRawBufferPointer) -> UnsafeMutablePointer<UInt8> {
        guard let base = b.baseAddress else { return emptyBuffer }
        return base.assumingMemoryBound(to: UInt8.self)
    }

    @inline(__always) static func mptr(_ b: UnsafeMutableBufferPointer<UInt8>) -> UnsafeMutablePointer<UInt8> {
        b.baseAddress ?? emptyBuffer
    }

    // MARK: HMAC-SHA256 and HKDF-SHA256 on caller-provided memory
    //
    // The per-message path (chain step, message-key expansion) runs these on stack buffers: HMAC is
    // built from swift-crypto's SHA256 (BoringSSL, SHA-NI where the CPU has it) with the key's
    // inner and outer pad blocks hashed once and reused, so a chain step costs six SHA-256
    // compressions and nothing is concatenated. `SessionPrimitivesTests` checks the results
    // against swift-crypto's HMAC and HKDF.

    /// HMAC-SHA256 with the pad blocks of one key already absorbed (RFC 2104).
    struct HMACKey: Sendable {
        private var inner = SHA256()
        private var outer = SHA256()

        init(_ key: UnsafeRawBufferPointer) {
            withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { block in
                block.initializeMemory(as: UInt8.self, repeating: 0)
                if key.count > 64 {
                    var h = SHA256()
                    h.update(bufferPointer: key)
                    h.finalize().withUnsafeBytes { block.copyMemory(from: $0) }
                } else if key.count > 0 {
                    UnsafeMutableRawBufferPointer(rebasing: block[0..<key.count]).copyMemory(from: key)
                }
                for i in 0..<64 { block[i] ^= 0x36 }
                inner.update(bufferPointer: UnsafeRawBufferPointer(block))
                for i in 0..<64 { block[i] ^= 0x36 ^ 0x5C }
                outer.update(bufferPointer: UnsafeRawBufferPointer(block))
                sodium_memzero(block.baseAddress, 64)
            }
        }

        /// HMAC(key, part1 ‖ part2 ‖ part3) into `out` (32 bytes; may alias a part).
        func authenticate(_ part1: UnsafeRawBufferPointer, _ part2: UnsafeRawBufferPointer = .init(start: nil, count: 0),
                          _ part3: UnsafeRawBufferPointer = .init(start: nil, count: 0), into out: UnsafeMutableRawBufferPointer) {
            var i = inner
            if part1.count > 0 { i.update(bufferPointer: part1) }
            if part2.count > 0 { i.update(bufferPointer: part2) }
            if part3.count > 0 { i.update(bufferPointer: part3) }
            let innerDigest = i.finalize()
            var o = outer
            innerDigest.withUnsafeBytes { o.update(bufferPointer: $0) }
            o.finalize().withUnsafeBytes { out.copyMemory(from: $0) }
        }
    }

    /// HMAC-SHA256(key, part1 ‖ part2 ‖ part3) into `out` (32 bytes).
    static func hmac(key: UnsafeRawBufferPointer, _ part1: UnsafeRawBufferPointer, _ part2: UnsafeRawBufferPointer = .init(start: nil, count: 0),
                     _ part3: UnsafeRawBufferPointer = .init(start: nil, count: 0), into out: UnsafeMutableRawBufferPointer) {
        HMACKey(key).authenticate(part1, part2, part3, into: out)
    }

    /// HKDF's extract step with an empty or all-zero 32-byte salt (RFC 5869 treats both alike), prepared once.
    static let zeroSaltKey: HMACKey = [UInt8](repeating: 0, count: 32).withUnsafeBytes { HMACKey($0) }

    /// HKDF-SHA256 (RFC 5869): extract with `salt` (an empty salt means 32 zero bytes), expand
    /// with `info` into `out` (at most 255 × 32 bytes).
    static func hkdf(salt: UnsafeRawBufferPointer, ikm: UnsafeRawBufferPointer, info: UnsafeRawBufferPointer,
                     into out: UnsafeMutableRawBufferPointer) {
        withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { scratch in
            scratch.initializeMemory(as: UInt8.self, repeating: 0)  // temporary memory starts uninitialized
            let prk = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<32])
            let block = UnsafeMutableRawBufferPointer(rebasing: scratch[32..<64])
            if salt.count == 0 || (salt.count == 32 && sodium_is_zero(ptr(salt), 32) == 1) {
                zeroSaltKey.authenticate(ikm, into: prk)
            } else {
                hmac(key: salt, ikm, into: prk)
            }
            let expandKey = HMACKey(UnsafeRawBufferPointer(prk))
            var produced = 0
            var counter: UInt8 = 1
            while produced < out.count {
                let previous = UnsafeRawBufferPointer(start: block.baseAddress, count: counter == 1 ? 0 : 32)
                withUnsafeBytes(of: counter) { c in
                    // T(i) = HMAC(PRK, T(i-1) ‖ info ‖ i); `previous` and `block` alias, which is fine:
                    // T(i-1) is absorbed before T(i) is written.
                    expandKey.authenticate(previous, info, c, into: block)
                }
                let n = min(32, out.count - produced)
                UnsafeMutableRawBufferPointer(rebasing: out[produced..<produced + n])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: block[0..<n]))
                produced += n
                counter &+= 1
            }
            sodium_memzero(scratch.baseAddress, 64)
        }
    }

    /// HKDF-SHA256 into secure memory.
    static func hkdf(ikm: SecureBytes, salt: [UInt8], info: [UInt8], outputLength: Int) -> SecureBytes {
        SecureBytes(count: outputLength) { out in
            ikm.withUnsafeBytes { i in salt.withUnsafeBytes { s in info.withUnsafeBytes { f in hkdf(salt: s, ikm: i, info: f, into: out) } } }
        }
    }

    /// HKDF-SHA256 whose salt is itself a secret (the ratchet's root key), read in place.
    static func hkdf(ikm: SecureBytes, secretSalt: SecureBytes, info: [UInt8], outputLength: Int) -> SecureBytes {
        SecureBytes(count: outputLength) { out in
            ikm.withUnsafeBytes { i in secretSalt.withUnsafeBytes { s in info.withUnsafeBytes { f in hkdf(salt: s, ikm: i, info: f, into: out) } } }
        }
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

    static let messageKeyConstant: [UInt8] = [0x01]
    static let chainKeyConstant: [UInt8] = [0x02]

    /// KDF_CK on raw memory: message key = HMAC(ck, 0x01), next chain key = HMAC(ck, 0x02).
    /// `chainKey` may alias `nextChainKey` (the message key is computed first).
    static func chainStep(_ chainKey: UnsafeRawBufferPointer, messageKey: UnsafeMutableRawBufferPointer,
                          nextChainKey: UnsafeMutableRawBufferPointer) {
        let key = HMACKey(chainKey)
        withUnsafeBytes(of: UInt8(0x01)) { key.authenticate($0, into: messageKey) }
        withUnsafeBytes(of: UInt8(0x02)) { key.authenticate($0, into: nextChainKey) }
    }

    /// The symmetric chain step with secure results (used off the per-message fast path and by sender keys).
    static func chainStep(_ chainKey: SecureBytes) -> (next: SecureBytes, messageKey: SecureBytes) {
        var next: SecureBytes?
        let messageKey = SecureBytes(count: 32) { mk in
            next = SecureBytes(count: 32) { ck in chainKey.withUnsafeBytes { chainStep($0, messageKey: mk, nextChainKey: ck) } }
        }
        return (next ?? SecureBytes(count: 32) { _ in }, messageKey)
    }

    // MARK: AES-256-GCM

    /// libsodium's AES-256-GCM needs AES-NI and PCLMUL; without them swift-crypto does the work
    /// (the output is identical: both are standard AES-256-GCM, checked by a test).
    static let hardwareGCM: Bool = Sodium.ready && crypto_aead_aes256gcm_is_available() == 1

    /// AES-256-GCM seal of `plaintext` with a raw 32-byte key; returns ciphertext ‖ tag.
    static func seal(key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
                     associatedData: UnsafeRawBufferPointer) throws -> [UInt8] {
        if hardwareGCM {
            return [UInt8](unsafeUninitializedCapacity: plaintext.count + tagLength) { out, count in
                var produced: UInt64 = 0
                _ = crypto_aead_aes256gcm_encrypt(
                    mptr(out), &produced, ptr(plaintext), UInt64(plaintext.count),
                    ptr(associatedData), UInt64(associatedData.count), nil, ptr(nonce), ptr(key))
                count = Int(produced)
            }
        }
        return try seal(key: SymmetricKey(data: key), nonce: Array(nonce), plaintext: Array(plaintext),
                        associatedData: Array(associatedData))
    }

    /// AES-256-GCM open of ciphertext ‖ tag with a raw key; any failure is `authenticationFailed`.
    static func open(key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, sealed: ArraySlice<UInt8>,
                     associatedData: UnsafeRawBufferPointer, what: String) throws -> [UInt8] {
        guard sealed.count >= tagLength else { throw CryptoError.authenticationFailed("\(what) is shorter than its tag") }
        if hardwareGCM {
            var ok = false
            let plaintext = sealed.withUnsafeBytes { c in
                [UInt8](unsafeUninitializedCapacity: c.count - tagLength) { out, count in
                    var produced: UInt64 = 0
                    ok = crypto_aead_aes256gcm_decrypt(
                        mptr(out), &produced, nil, ptr(c), UInt64(c.count),
                        ptr(associatedData), UInt64(associatedData.count), ptr(nonce), ptr(key)) == 0
                    count = ok ? Int(produced) : 0
                }
            }
            guard ok else { throw CryptoError.authenticationFailed("\(what) failed authentication") }
            return plaintext
        }
        return try open(key: SymmetricKey(data: key), nonce: Array(nonce), sealed: sealed,
                        associatedData: Array(associatedData), what: what)
    }

    /// AES-256-GCM seal with swift-crypto; returns ciphertext ‖ tag.
    static func seal(key: SymmetricKey, nonce: [UInt8], plaintext: [UInt8], associatedData: [UInt8]) throws -> [UInt8] {
        let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: associatedData)
        var out = [UInt8]()
        out.reserveCapacity(plaintext.count + tagLength)
        out.append(contentsOf: box.ciphertext)
        out.append(contentsOf: box.tag)
        return out
    }

    /// AES-256-GCM open with swift-crypto of ciphertext ‖ tag; any failure is `authenticationFailed`.
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
    mutating func readPresenceFlaggedBytes(_ count: Int, _ field: String) throws -> [UInt8]? {
        switch try readUInt8(field + " flag") {
        case 0: return nil
        case 1: return try readBytes(count, field)
        case let other: throw WireError.invalid(field: field + " flag", reason: "must be 0 or 1, got \(other)")
        }
    }

    mutating func readSecret(_ count: Int, _ field: String) throws -> SecureBytes {
        var bytes = try readBytes(count, field)
        defer { for i in bytes.indices { bytes[i] = 0 } }
        return SecureBytes(copying: bytes)
    }

    mutating func readPresenceFlaggedSecret(_ count: Int, _ field: String) throws -> SecureBytes? {
        guard var bytes = try readPresenceFlaggedBytes(count, field) else { return nil }
        defer { for i in bytes.indices { bytes[i] = 0 } }
        return SecureBytes(copying: bytes)
    }

    /// Fails unless the whole input was consumed, so trailing garbage is never silently accepted.
    func rejectTrailingBytes(_ what: String) throws {
        guard isAtEnd else { throw WireError.invalid(field: what, reason: "\(remaining) trailing bytes") }
    }

    mutating func readVersion(expecting expected: UInt8, _ what: String) throws {
        let version = try readUInt8(what + " version")
        guard version == expected else {
            throw WireError.invalid(field: what + " version", reason: "unsupported version \(version), expected \(expected)")
        }
    }
}

extension ByteWriter {
    mutating func writePresenceFlagged(_ bytes: [UInt8]?) {
        if let bytes { write(UInt8(1)); write(bytes: bytes) } else { write(UInt8(0)) }
    }

    mutating func writeSecret(_ secure: SecureBytes) {
        secure.withUnsafeBytes { write(bytes: $0) }
    }

    mutating func writePresenceFlagged(chain: ChainKey?) {
        if let chain { write(UInt8(1)); chain.withUnsafeBytes { write(bytes: $0) } } else { write(UInt8(0)) }
    }

    mutating func writePresenceFlagged(secure: SecureBytes?) {
        if let secure { write(UInt8(1)); writeSecret(secure) } else { write(UInt8(0)) }
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

    static func readSessionEncoding(from reader: inout ByteReader, _ field: String) throws -> PublicIdentity {
        try PublicIdentity(parsingSessionEncoding: try reader.readBytes(sessionEncodingLength, field))
    }
}

/// Lexicographic byte order, used for deterministic tie-breaking between identities.
func bytesPrecede(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.lexicographicallyPrecedes(b)
}

/// A ratchet chain key: 32 secret bytes that advance once per message.
///
/// Like `SecureBytes` it is locked in memory where the system permits and zeroed on release (and by
/// `wipe()`); unlike `SecureBytes` it can be overwritten, which keeps the four system calls of every
/// fresh locked allocation (madvise + mlock, munlock + madvise) off the per-message path.
/// `DoubleRatchet` keeps value semantics: it overwrites a chain key only while it holds the only
/// reference, and otherwise replaces it with a new one.
final class ChainKey {
    static let length = 32
    private let base: UnsafeMutableRawPointer
    private let locked: Bool

    /// A zeroed, locked 32-byte buffer filled by `fill`.
    init(_ fill: (UnsafeMutableRawBufferPointer) -> Void) {
        _ = Sodium.ready
        base = UnsafeMutableRawPointer.allocate(byteCount: Self.length, alignment: 16)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.length)
        locked = sodium_mlock(base, Self.length) == 0
        fill(UnsafeMutableRawBufferPointer(start: base, count: Self.length))
    }

    convenience init(copying bytes: UnsafeRawBufferPointer) {
        self.init { out in out.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes.prefix(ChainKey.length))) }
    }

    convenience init(_ secure: SecureBytes) {
        self.init { out in secure.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(ChainKey.length))) } }
    }

    deinit {
        sodium_memzero(base, Self.length)
        if locked { sodium_munlock(base, Self.length) }
        base.deallocate()
    }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: Self.length))
    }

    /// Replaces the bytes; only called by the single owner.
    func overwrite(from bytes: UnsafeRawBufferPointer) {
        base.copyMemory(from: bytes.baseAddress ?? UnsafeRawPointer(base), byteCount: min(bytes.count, Self.length))
    }

    func wipe() { sodium_memzero(base, Self.length) }

    /// Moves a chain to its next key: in place when the caller holds the only reference, otherwise
    /// (a copy of the owning state shares it) into a fresh key, so copies never see each other's changes.
    static func advance(_ chainKey: inout ChainKey, to next: UnsafeRawBufferPointer) {
        if isKnownUniquelyReferenced(&chainKey) {
            chainKey.overwrite(from: next)
        } else {
            chainKey = ChainKey(copying: next)
        }
    }

    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
}
