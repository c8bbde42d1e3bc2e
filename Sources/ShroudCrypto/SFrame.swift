import COpenSSL
import Crypto
import CSodium
import Foundation
import ShroudWire

/// Why an SFrame frame could not be sealed or opened.
public enum SFrameError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformedHeader(String)
    case frameTooShort(Int)
    case frameTooLarge(Int)
    case unknownKeyID(UInt64)
    case replayed(counter: UInt64)
    case tooOld(counter: UInt64)
    case authenticationFailed
    case counterExhausted(UInt64)
    case invalidKey(String)
    case cipherFailure(String)

    public var description: String {
        switch self {
        case let .malformedHeader(r): return "malformed SFrame header: \(r)"
        case let .frameTooShort(n): return "SFrame frame of \(n) bytes is shorter than its header and tag"
        case let .frameTooLarge(n): return "SFrame payload of \(n) bytes exceeds the limit of \(SFrame.maximumPayloadSize)"
        case let .unknownKeyID(k): return "SFrame key id \(k) is unknown"
        case let .replayed(c): return "SFrame counter \(c) was already received (replay)"
        case let .tooOld(c): return "SFrame counter \(c) is older than the replay window"
        case .authenticationFailed: return "SFrame frame failed authentication"
        case let .counterExhausted(c): return "SFrame counter reached its limit (\(c)): the key must be rotated"
        case let .invalidKey(r): return "invalid SFrame key: \(r)"
        case let .cipherFailure(r): return "SFrame cipher failure: \(r)"
        }
    }
}

/// The cipher suites of RFC 9605 §4.5, all through OpenSSL EVP (AES) and swift-crypto (HMAC).
/// Shroud's media uses the default, AES_256_GCM_SHA512_128; the others exist for interoperability.
public enum SFrameCipherSuite: UInt16, Sendable, CaseIterable {
    case aes128CTRHMACSHA256_80 = 0x0001
    case aes128CTRHMACSHA256_64 = 0x0002
    case aes128CTRHMACSHA256_32 = 0x0003
    case aes128GCMSHA256 = 0x0004   // AES_128_GCM_SHA256_128
    case aes256GCMSHA512 = 0x0005   // AES_256_GCM_SHA512_128 (Shroud's default)

    public static let `default` = SFrameCipherSuite.aes256GCMSHA512

    public var isGCM: Bool { self == .aes128GCMSHA256 || self == .aes256GCMSHA512 }

    /// Nk: for the CTR suites, a 16-byte AES key followed by a 32-byte HMAC key.
    public var keyByteCount: Int {
        switch self {
        case .aes128CTRHMACSHA256_80, .aes128CTRHMACSHA256_64, .aes128CTRHMACSHA256_32: return 48
        case .aes128GCMSHA256: return 16
        case .aes256GCMSHA512: return 32
        }
    }

    public var nonceByteCount: Int { 12 }

    /// Nt.
    public var tagByteCount: Int {
        switch self {
        case .aes128CTRHMACSHA256_80: return 10
        case .aes128CTRHMACSHA256_64: return 8
        case .aes128CTRHMACSHA256_32: return 4
        case .aes128GCMSHA256, .aes256GCMSHA512: return 16
        }
    }
}

/// Constants and the key schedule of RFC 9605 §4.4.2.
public enum SFrame {
    public static let keyLabel = Array("SFrame 1.0 Secret key ".utf8)
    public static let saltLabel = Array("SFrame 1.0 Secret salt ".utf8)
    /// Largest plaintext one frame may carry (a 1080p VP8 keyframe is well under this).
    public static let maximumPayloadSize = 1 << 24
    /// A sender refuses to seal once its counter reaches this, so a (key, nonce) pair never repeats
    /// and a key is retired long before AES-GCM's usage limits; the caller rotates to a new key.
    public static let counterLimit: UInt64 = 1 << 32

    /// sframe_secret = HKDF-Extract("", base_key); sframe_key = HKDF-Expand(secret, "SFrame 1.0 Secret key "
    /// ‖ KID (u64 BE) ‖ suite (u16 BE), Nk); sframe_salt = the same with "SFrame 1.0 Secret salt ", Nn.
    public static func deriveKeyAndSalt(baseKey: SecureBytes, keyID: UInt64, suite: SFrameCipherSuite) -> (key: SecureBytes, salt: [UInt8]) {
        var context = [UInt8]()
        for i in stride(from: 7, through: 0, by: -1) { context.append(UInt8(truncatingIfNeeded: keyID >> (UInt64(i) * 8))) }
        context += [UInt8(suite.rawValue >> 8), UInt8(suite.rawValue & 0xff)]
        let ikm = baseKey.withUnsafeBytes { SymmetricKey(data: $0) }
        func derive<H: HashFunction>(_: H.Type) -> (SymmetricKey, SymmetricKey) {
            let prk = HKDF<H>.extract(inputKeyMaterial: ikm, salt: [UInt8]())
            return (HKDF<H>.expand(pseudoRandomKey: prk, info: keyLabel + context, outputByteCount: suite.keyByteCount),
                    HKDF<H>.expand(pseudoRandomKey: prk, info: saltLabel + context, outputByteCount: suite.nonceByteCount))
        }
        let (key, salt) = suite == .aes256GCMSHA512 ? derive(SHA512.self) : derive(SHA256.self)
        return (key.withUnsafeBytes { SecureBytes(copying: $0) }, salt.withUnsafeBytes { Array($0) })
    }
}

/// One AES-GCM key in an OpenSSL EVP context, set up once and reused for every frame (only the
/// nonce changes per frame), so sealing allocates nothing but its output.
final class GCMKey {
    private let context: OpaquePointer
    let suite: SFrameCipherSuite
    let encrypting: Bool
    /// salt (12 bytes), then the per-frame nonce (12 bytes).
    private let nonceScratch: UnsafeMutablePointer<UInt8>

    init(suite: SFrameCipherSuite, key: SecureBytes, salt: [UInt8], encrypting: Bool) throws {
        guard key.count == suite.keyByteCount, salt.count == suite.nonceByteCount else {
            throw SFrameError.invalidKey("key or salt has the wrong length")
        }
        guard let context = EVP_CIPHER_CTX_new() else { throw SFrameError.cipherFailure("EVP_CIPHER_CTX_new failed") }
        self.context = context
        self.suite = suite
        self.encrypting = encrypting
        nonceScratch = .allocate(capacity: 24)
        nonceScratch.initialize(from: salt, count: 12)
        (nonceScratch + 12).initialize(repeating: 0, count: 12)
        guard suite.isGCM else { throw SFrameError.invalidKey("not a GCM suite") }
        let cipher = suite == .aes128GCMSHA256 ? EVP_aes_128_gcm() : EVP_aes_256_gcm()
        let ok = key.withUnsafeBytes { k in
            EVP_CipherInit_ex(context, cipher, nil, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, encrypting ? 1 : 0)
        }
        guard ok == 1 else { throw SFrameError.cipherFailure("EVP_CipherInit_ex failed") }
    }

    deinit {
        EVP_CIPHER_CTX_free(context)  // OpenSSL cleanses the key schedule
        sodium_memzero(nonceScratch, 24)
        nonceScratch.deallocate()
    }

    /// nonce = salt XOR (counter as a 96-bit big-endian integer), RFC 9605 §4.4.3.
    private func setNonce(counter: UInt64) -> Bool {
        for i in 0..<12 { nonceScratch[12 + i] = nonceScratch[i] }
        for i in 0..<8 { nonceScratch[12 + 11 - i] ^= UInt8(truncatingIfNeeded: counter >> (UInt64(i) * 8)) }
        return EVP_CipherInit_ex(context, nil, nil, nil, nonceScratch + 12, -1) == 1
    }

    /// Encrypts `plaintext` into `output` (same length) and writes the tag after it.
    func seal(counter: UInt64, aad: UnsafeRawBufferPointer, metadata: UnsafeRawBufferPointer,
              plaintext: UnsafeRawBufferPointer, output: UnsafeMutablePointer<UInt8>) -> Bool {
        guard setNonce(counter: counter) else { return false }
        var produced: Int32 = 0
        if aad.count > 0, EVP_EncryptUpdate(context, nil, &produced, aad.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad.count)) != 1 { return false }
        if metadata.count > 0, EVP_EncryptUpdate(context, nil, &produced, metadata.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(metadata.count)) != 1 { return false }
        var written = 0
        if plaintext.count > 0 {
            guard EVP_EncryptUpdate(context, output, &produced, plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(plaintext.count)) == 1 else { return false }
            written = Int(produced)
        }
        guard EVP_EncryptFinal_ex(context, output + written, &produced) == 1 else { return false }
        return shroud_evp_aead_get_tag(context, output + plaintext.count, 16) == 1
    }

    /// Decrypts `ciphertext` (tag not included) into `output`, checking `tag`.
    func open(counter: UInt64, aad: UnsafeRawBufferPointer, metadata: UnsafeRawBufferPointer,
              ciphertext: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer, output: UnsafeMutablePointer<UInt8>) -> Bool {
        guard setNonce(counter: counter) else { return false }
        var produced: Int32 = 0
        if aad.count > 0, EVP_DecryptUpdate(context, nil, &produced, aad.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad.count)) != 1 { return false }
        if metadata.count > 0, EVP_DecryptUpdate(context, nil, &produced, metadata.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(metadata.count)) != 1 { return false }
        var written = 0
        if ciphertext.count > 0 {
            guard EVP_DecryptUpdate(context, output, &produced, ciphertext.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(ciphertext.count)) == 1 else { return false }
            written = Int(produced)
        }
        guard let tagBase = tag.baseAddress,
              shroud_evp_aead_set_tag(context, UnsafeMutablePointer(mutating: tagBase.assumingMemoryBound(to: UInt8.self)), 16) == 1 else { return false }
        return EVP_DecryptFinal_ex(context, output + written, &produced) == 1
    }
}

/// One key of an AES-CTR + HMAC-SHA256 suite (RFC 9605 §4.5.1): the 48-byte SFrame key splits
/// into a 16-byte AES-128 key and a 32-byte HMAC key;
/// tag = HMAC(auth_key, u64 len(aad) ‖ u64 len(ct) ‖ u64 Nt ‖ nonce ‖ aad ‖ ct) truncated to Nt,
/// and AES-CTR starts from nonce ‖ 0x00000000. Open checks the tag before decrypting.
final class CTRHMACKey {
    private let context: OpaquePointer
    private let authKey: SymmetricKey
    let tagLength: Int
    /// salt (12), nonce (12), initial counter block (16).
    private let scratch: UnsafeMutablePointer<UInt8>

    init(suite: SFrameCipherSuite, key: SecureBytes, salt: [UInt8]) throws {
        guard !suite.isGCM, key.count == 48, salt.count == 12 else { throw SFrameError.invalidKey("key or salt has the wrong length") }
        guard let context = EVP_CIPHER_CTX_new() else { throw SFrameError.cipherFailure("EVP_CIPHER_CTX_new failed") }
        self.context = context
        tagLength = suite.tagByteCount
        authKey = key.withUnsafeBytes { SymmetricKey(data: UnsafeRawBufferPointer(rebasing: $0[16..<48])) }
        scratch = .allocate(capacity: 40)
        scratch.initialize(repeating: 0, count: 40)
        scratch.update(from: salt, count: 12)
        let ok = key.withUnsafeBytes { k in
            EVP_CipherInit_ex(context, EVP_aes_128_ctr(), nil, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, 1)
        }
        guard ok == 1 else { throw SFrameError.cipherFailure("EVP_CipherInit_ex failed") }
    }

    deinit {
        EVP_CIPHER_CTX_free(context)
        sodium_memzero(scratch, 40)
        scratch.deallocate()
    }

    private func startCounter(_ counter: UInt64) -> Bool {
        for i in 0..<12 { scratch[12 + i] = scratch[i] }
        for i in 0..<8 { scratch[12 + 11 - i] ^= UInt8(truncatingIfNeeded: counter >> (UInt64(i) * 8)) }
        for i in 0..<12 { scratch[24 + i] = scratch[12 + i] }
        for i in 12..<16 { scratch[24 + i] = 0 }
        return EVP_CipherInit_ex(context, nil, nil, nil, scratch + 24, 1) == 1
    }

    private func tag(aad: UnsafeRawBufferPointer, metadata: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer) -> HashedAuthenticationCode<SHA256> {
        var mac = HMAC<SHA256>(key: authKey)
        var lengths = [UInt8]()
        for value in [UInt64(aad.count + metadata.count), UInt64(ciphertext.count), UInt64(tagLength)] {
            for i in stride(from: 7, through: 0, by: -1) { lengths.append(UInt8(truncatingIfNeeded: value >> (UInt64(i) * 8))) }
        }
        mac.update(data: lengths)
        mac.update(data: UnsafeRawBufferPointer(start: scratch + 12, count: 12))
        mac.update(data: aad)
        mac.update(data: metadata)
        mac.update(data: ciphertext)
        return mac.finalize()
    }

    private func crypt(_ input: UnsafeRawBufferPointer, into output: UnsafeMutablePointer<UInt8>) -> Bool {
        guard input.count > 0 else { return true }
        var produced: Int32 = 0
        return EVP_EncryptUpdate(context, output, &produced, input.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(input.count)) == 1
    }

    func seal(counter: UInt64, aad: UnsafeRawBufferPointer, metadata: UnsafeRawBufferPointer,
              plaintext: UnsafeRawBufferPointer, output: UnsafeMutablePointer<UInt8>) -> Bool {
        guard startCounter(counter), crypt(plaintext, into: output) else { return false }
        let mac = tag(aad: aad, metadata: metadata, ciphertext: UnsafeRawBufferPointer(start: output, count: plaintext.count))
        mac.withUnsafeBytes { m in
            for i in 0..<tagLength { output[plaintext.count + i] = m[i] }
        }
        return true
    }

    func open(counter: UInt64, aad: UnsafeRawBufferPointer, metadata: UnsafeRawBufferPointer,
              ciphertext: UnsafeRawBufferPointer, tag received: UnsafeRawBufferPointer, output: UnsafeMutablePointer<UInt8>) -> Bool {
        guard received.count == tagLength, startCounter(counter) else { return false }
        let mac = tag(aad: aad, metadata: metadata, ciphertext: ciphertext)
        let matches = mac.withUnsafeBytes { m -> Bool in
            var difference: UInt8 = 0
            for i in 0..<tagLength { difference |= m[i] ^ received[i] }
            return difference == 0
        }
        return matches && crypt(ciphertext, into: output)
    }
}

/// The per-key cipher of a suite; an enum rather than a protocol so the GCM path stays a direct call.
enum FrameCipher {
    case gcm(GCMKey)
    case ctrHMAC(CTRHMACKey)

    init(suite: SFrameCipherSuite, key: SecureBytes, salt: [UInt8], encrypting: Bool) throws {
        self = suite.isGCM ? .gcm(try GCMKey(suite: suite, key: key, salt: salt, encrypting: encrypting))
                           : .ctrHMAC(try CTRHMACKey(suite: suite, key: key, salt: salt))
    }

    func seal(counter: UInt64, aad: UnsafeRawBufferPointer, metadata: UnsafeRawBufferPointer,
              plaintext: UnsafeRawBufferPointer, output: UnsafeMutablePointer<UInt8>) -> Bool {
        switch self {
        case let .gcm(k): return k.seal(counter: counter, aad: aad, metadata: metadata, plaintext: plaintext, output: output)
        case let .ctrHMAC(k): return k.seal(counter: counter, aad: aad, metadata: metadata, plaintext: plaintext, output: output)
        }
    }

    func open(counter: UInt64, aad: UnsafeRawBufferPointer, metadata: UnsafeRawBufferPointer,
              ciphertext: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer, output: UnsafeMutablePointer<UInt8>) -> Bool {
        switch self {
        case let .gcm(k): return k.open(counter: counter, aad: aad, metadata: metadata, ciphertext: ciphertext, tag: tag, output: output)
        case let .ctrHMAC(k): return k.open(counter: counter, aad: aad, metadata: metadata, ciphertext: ciphertext, tag: tag, output: output)
        }
    }
}

/// Seals frames with one key at a time (RFC 9605 §4.4.3): header ‖ ciphertext ‖ tag, with
/// AAD = header ‖ metadata. The counter advances on every seal, also a failed one, so a nonce is
/// never used twice under a key (DESIGN.md §1.4). One owner at a time: not thread-safe (it is not
/// `Sendable`); a media sender task owns its sender.
public final class SFrameSender {
    public let suite: SFrameCipherSuite
    public private(set) var keyID: UInt64
    /// The counter the next frame will carry.
    public private(set) var nextCounter: UInt64
    public let counterLimit: UInt64
    private var key: FrameCipher

    /// `firstCounter` exists to restore a sender's state; a fresh key starts at 0.
    public init(suite: SFrameCipherSuite = .default, keyID: UInt64, baseKey: SecureBytes,
                firstCounter: UInt64 = 0, counterLimit: UInt64 = SFrame.counterLimit) throws {
        self.suite = suite
        self.keyID = keyID
        self.nextCounter = firstCounter
        self.counterLimit = counterLimit
        let (k, salt) = SFrame.deriveKeyAndSalt(baseKey: baseKey, keyID: keyID, suite: suite)
        key = try FrameCipher(suite: suite, key: k, salt: salt, encrypting: true)
    }

    /// Switches to a new key (membership change or counter limit); its counter starts at 0. The
    /// key id must change: a KID names one base key, and restarting the counter under the same
    /// key would repeat nonces.
    public func rotate(keyID: UInt64, baseKey: SecureBytes) throws {
        guard keyID != self.keyID else { throw SFrameError.invalidKey("rotation must use a new key id (\(keyID) is in use)") }
        let (k, salt) = SFrame.deriveKeyAndSalt(baseKey: baseKey, keyID: keyID, suite: suite)
        key = try FrameCipher(suite: suite, key: k, salt: salt, encrypting: true)
        self.keyID = keyID
        nextCounter = 0
    }

    public func seal(_ plaintext: [UInt8], metadata: [UInt8] = []) throws -> [UInt8] {
        guard nextCounter < counterLimit else { throw SFrameError.counterExhausted(counterLimit) }
        guard plaintext.count <= SFrame.maximumPayloadSize else { throw SFrameError.frameTooLarge(plaintext.count) }
        let counter = nextCounter
        nextCounter += 1
        let header = SFrameHeader(keyID: keyID, counter: counter)
        let headerLength = header.encodedLength
        let total = headerLength + plaintext.count + suite.tagByteCount
        let key = self.key
        return try [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            guard let base = buffer.baseAddress else { throw SFrameError.cipherFailure("no output buffer") }
            _ = header.write(to: UnsafeMutableRawBufferPointer(start: base, count: headerLength))
            let ok = plaintext.withUnsafeBytes { p in
                metadata.withUnsafeBytes { m in
                    key.seal(counter: counter, aad: UnsafeRawBufferPointer(start: base, count: headerLength),
                             metadata: m, plaintext: p, output: base + headerLength)
                }
            }
            guard ok else { throw SFrameError.cipherFailure("AES-GCM encryption failed") }
            initialized = total
        }
    }
}

/// A frame that passed authentication.
public struct SFrameOpened: Sendable {
    public let keyID: UInt64
    public let counter: UInt64
    public let plaintext: [UInt8]
}

/// Which counters of one key have been seen: the highest, and a bitmap of the `size` before it.
/// RFC 9605 §7.5 leaves replay protection to the application; this is the IPsec-style window.
public struct SFrameReplayWindow: Equatable, Sendable {
    public static let size: UInt64 = 128
    public private(set) var highest: UInt64?
    /// Bit i set ⇔ counter (highest − i) was received; bit 0 is `highest` itself.
    private var seen: (UInt64, UInt64) = (0, 0)

    public init() {}

    public static func == (a: Self, b: Self) -> Bool { a.highest == b.highest && a.seen == b.seen }

    /// Throws if `counter` is a duplicate or older than the window; changes nothing.
    public func check(_ counter: UInt64) throws {
        guard let highest else { return }
        if counter > highest { return }
        let age = highest - counter
        guard age < Self.size else { throw SFrameError.tooOld(counter: counter) }
        if bit(age) { throw SFrameError.replayed(counter: counter) }
    }

    /// Records `counter`; call only after `check` passed and the frame authenticated.
    public mutating func accept(_ counter: UInt64) {
        guard let current = highest else {
            highest = counter
            seen = (1, 0)
            return
        }
        if counter > current {
            shift(by: counter - current)
            highest = counter
            seen.0 |= 1
        } else {
            setBit(current - counter)
        }
    }

    private func bit(_ i: UInt64) -> Bool {
        i < 64 ? (seen.0 >> i) & 1 == 1 : (seen.1 >> (i - 64)) & 1 == 1
    }

    private mutating func setBit(_ i: UInt64) {
        if i < 64 { seen.0 |= 1 << i } else if i < 128 { seen.1 |= 1 << (i - 64) }
    }

    private mutating func shift(by n: UInt64) {
        if n >= 128 { seen = (0, 0) } else if n >= 64 {
            seen = (0, seen.0 << (n - 64))
        } else if n > 0 {
            seen = (seen.0 << n, seen.1 << n | seen.0 >> (64 - n))
        }
    }
}

/// Opens frames from any of its keys, each with its own replay window. Not thread-safe: one
/// receiving task owns it. A frame that fails to
/// parse, is unknown, replayed or forged leaves every window unchanged (DESIGN.md §1.5).
public final class SFrameReceiver {
    public static let maximumKeys = 256

    public let suite: SFrameCipherSuite
    private final class Entry {
        let key: FrameCipher
        var window = SFrameReplayWindow()
        init(key: FrameCipher) { self.key = key }
    }
    private var entries: [UInt64: Entry] = [:]

    public init(suite: SFrameCipherSuite = .default) { self.suite = suite }

    public var keyIDs: [UInt64] { entries.keys.sorted() }

    public func addKey(keyID: UInt64, baseKey: SecureBytes) throws {
        guard entries[keyID] != nil || entries.count < Self.maximumKeys else {
            throw SFrameError.invalidKey("at most \(Self.maximumKeys) receive keys")
        }
        let (k, salt) = SFrame.deriveKeyAndSalt(baseKey: baseKey, keyID: keyID, suite: suite)
        entries[keyID] = Entry(key: try FrameCipher(suite: suite, key: k, salt: salt, encrypting: false))
    }

    public func removeKey(keyID: UInt64) { entries[keyID] = nil }

    public func replayWindow(keyID: UInt64) -> SFrameReplayWindow? { entries[keyID]?.window }

    public func open(_ frame: [UInt8], metadata: [UInt8] = []) throws -> SFrameOpened {
        var reader = ByteReader(frame)
        let header: SFrameHeader
        do { header = try SFrameHeader(from: &reader) } catch let error as WireError {
            throw SFrameError.malformedHeader(error.description)
        }
        let headerLength = reader.offset
        let tagLength = suite.tagByteCount
        guard frame.count >= headerLength + tagLength else { throw SFrameError.frameTooShort(frame.count) }
        let payloadLength = frame.count - headerLength - tagLength
        guard payloadLength <= SFrame.maximumPayloadSize else { throw SFrameError.frameTooLarge(payloadLength) }
        guard let entry = entries[header.keyID] else { throw SFrameError.unknownKeyID(header.keyID) }
        try entry.window.check(header.counter)
        let key = entry.key
        let plaintext = try [UInt8](unsafeUninitializedCapacity: max(payloadLength, 1)) { buffer, initialized in
            guard let out = buffer.baseAddress else { throw SFrameError.cipherFailure("no output buffer") }
            let ok = frame.withUnsafeBytes { f in
                metadata.withUnsafeBytes { m in
                    key.open(counter: header.counter,
                             aad: UnsafeRawBufferPointer(rebasing: f[0..<headerLength]), metadata: m,
                             ciphertext: UnsafeRawBufferPointer(rebasing: f[headerLength..<(headerLength + payloadLength)]),
                             tag: UnsafeRawBufferPointer(rebasing: f[(headerLength + payloadLength)...]), output: out)
                }
            }
            guard ok else {
                // Never hand out unauthenticated plaintext (DESIGN.md §1.1).
                sodium_memzero(out, max(payloadLength, 1))
                throw SFrameError.authenticationFailed
            }
            initialized = payloadLength
        }
        entry.window.accept(header.counter)
        return SFrameOpened(keyID: header.keyID, counter: header.counter, plaintext: plaintext)
    }
}
