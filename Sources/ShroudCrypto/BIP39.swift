import COpenSSL
import CSodium
import Crypto
import Foundation

/// Why a recovery phrase was refused. Each case names the problem so the user can fix it.
public enum RecoveryPhraseError: Error, Equatable, Sendable, CustomStringConvertible {
    case wrongWordCount(Int)
    case unknownWord(String, position: Int)
    case checksumMismatch
    case invalidEntropyLength(Int)

    public var description: String {
        switch self {
        case let .wrongWordCount(n):
            return "wrong word count: a recovery phrase has 12, 15, 18, 21 or 24 words, got \(n)"
        case let .unknownWord(word, position):
            return "unknown word \"\(word)\" at position \(position)"
        case .checksumMismatch:
            return "checksum mismatch: the words are all valid but do not form a recovery phrase (a word is wrong or out of order)"
        case let .invalidEntropyLength(n):
            return "recovery entropy must be 16, 20, 24, 28 or 32 bytes, got \(n)"
        }
    }
}

/// BIP39 mnemonic encoding (English list) and seed derivation.
///
/// entropy (ENT bits, ENT ∈ {128,160,192,224,256}) ‖ first ENT/32 bits of SHA-256(entropy) is cut
/// into 11-bit big-endian groups, each an index into the wordlist. The seed is
/// PBKDF2-HMAC-SHA512(password: NFKD(words joined by " "), salt: "mnemonic" ‖ NFKD(passphrase),
/// 2048 iterations, 64 bytes).
public enum BIP39 {
    /// Shroud identities use 24 words (256-bit entropy); the other lengths exist for the standard vectors.
    public static let recoveryWordCount = 24
    public static let recoveryEntropyByteCount = 32
    public static let allowedWordCounts: Set<Int> = [12, 15, 18, 21, 24]
    public static let seedIterations: UInt32 = 2048
    public static let seedByteCount = 64
    public static let saltPrefix = "mnemonic"

    /// Entropy → words. Throws for an entropy length BIP39 does not define.
    public static func words(entropy: SecureBytes) throws -> [String] {
        let n = entropy.count
        guard n >= 16, n <= 32, n % 4 == 0 else { throw RecoveryPhraseError.invalidEntropyLength(n) }
        let checksumBits = n * 8 / 32
        let hash = entropy.withUnsafeBytes { Array(SHA256Digest.hash($0)) }
        let wordCount = (n * 8 + checksumBits) / 11
        return entropy.withUnsafeBytes { raw -> [String] in
            // Bit i of entropy ‖ checksum.
            func bit(_ i: Int) -> Int {
                let byte = i < n * 8 ? raw[i / 8] : hash[(i - n * 8) / 8]
                return Int(byte >> (7 - UInt8(i % 8))) & 1
            }
            return (0..<wordCount).map { w in
                var index = 0
                for b in 0..<11 { index = index << 1 | bit(w * 11 + b) }
                return englishWordlist[index]
            }
        }
    }

    /// Words → entropy, checking word count, every word, and the checksum (in that order, so the
    /// error names the first problem).
    public static func entropy(words: [String]) throws -> SecureBytes {
        guard allowedWordCounts.contains(words.count) else { throw RecoveryPhraseError.wrongWordCount(words.count) }
        var indices = [Int]()
        indices.reserveCapacity(words.count)
        for (position, word) in words.enumerated() {
            guard let index = wordIndex[word.lowercased()] else {
                throw RecoveryPhraseError.unknownWord(word, position: position + 1)
            }
            indices.append(index)
        }
        let totalBits = words.count * 11
        let checksumBits = totalBits / 33
        let entropyBytes = (totalBits - checksumBits) / 8
        var bits = [UInt8](repeating: 0, count: (totalBits + 7) / 8)
        defer { sodium_wipe(&bits) }
        for (w, index) in indices.enumerated() {
            for b in 0..<11 where (index >> (10 - b)) & 1 == 1 {
                let i = w * 11 + b
                bits[i / 8] |= 0x80 >> UInt8(i % 8)
            }
        }
        let entropy = SecureBytes(copying: bits[0..<entropyBytes])
        let hash = entropy.withUnsafeBytes { Array(SHA256Digest.hash($0)) }
        // Compare the checksum bits (at most 8) that follow the entropy.
        let stored = bits[entropyBytes] >> UInt8(8 - checksumBits)
        let expected = hash[0] >> UInt8(8 - checksumBits)
        guard stored == expected else { throw RecoveryPhraseError.checksumMismatch }
        return entropy
    }

    /// Splits a phrase typed by a user: any whitespace separates words, case is ignored.
    public static func splitPhrase(_ text: String) -> [String] {
        text.split(whereSeparator: { $0.isWhitespace }).map { $0.lowercased() }
    }

    /// The 64-byte seed (PBKDF2-HMAC-SHA512). Checks the phrase first: Shroud never derives an
    /// identity from a phrase with a bad checksum.
    public static func seed(words: [String], passphrase: String = "") throws -> SecureBytes {
        _ = try entropy(words: words)
        let password = Array(words.map { $0.lowercased() }.joined(separator: " ").decomposedStringWithCompatibilityMapping.utf8)
        let salt = Array((saltPrefix + passphrase).decomposedStringWithCompatibilityMapping.utf8)
        return try pbkdf2SHA512(password: password, salt: salt, iterations: seedIterations, count: seedByteCount)
    }

    static func pbkdf2SHA512(password: [UInt8], salt: [UInt8], iterations: UInt32, count: Int) throws -> SecureBytes {
        var password = password
        defer { sodium_wipe(&password) }
        return try SecureBytes(count: count) { out in
            let ok = password.withUnsafeBytes { p in
                salt.withUnsafeBytes { s in
                    PKCS5_PBKDF2_HMAC(p.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(p.count),
                                      s.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(s.count),
                                      Int32(iterations), EVP_sha512(), Int32(out.count),
                                      out.baseAddress?.assumingMemoryBound(to: UInt8.self))
                }
            }
            guard ok == 1 else { throw CryptoError.invalidInput("PBKDF2 failed in OpenSSL") }
        }
    }

    private static let wordIndex: [String: Int] = Dictionary(
        uniqueKeysWithValues: englishWordlist.enumerated().map { ($1, $0) })
}

/// A 24-word recovery phrase: the identity's root secret. Its entropy lives in `SecureBytes`; the
/// words are plain strings only while shown to or typed by the user.
public struct RecoveryPhrase: Sendable {
    public let entropy: SecureBytes
    public let words: [String]

    /// A fresh 256-bit phrase from `random`.
    public static func generate(using random: inout some RandomSource) -> RecoveryPhrase {
        let entropy = SecureBytes(randomCount: BIP39.recoveryEntropyByteCount, using: &random)
        // 32 bytes is a valid BIP39 length, so this cannot throw.
        return RecoveryPhrase(entropy: entropy, words: (try? BIP39.words(entropy: entropy)) ?? [])
    }

    /// From entropy (any BIP39 length; `shroud id` uses 32 bytes).
    public init(entropy: SecureBytes) throws {
        self.init(entropy: entropy, words: try BIP39.words(entropy: entropy))
    }

    /// Parses a phrase typed by the user; every check of `BIP39.entropy(words:)` applies.
    public init(parsing text: String) throws {
        let words = BIP39.splitPhrase(text)
        self.init(entropy: try BIP39.entropy(words: words), words: words)
    }

    private init(entropy: SecureBytes, words: [String]) {
        self.entropy = entropy
        self.words = words
    }

    public var text: String { words.joined(separator: " ") }

    public func seed(passphrase: String = "") throws -> SecureBytes {
        try BIP39.seed(words: words, passphrase: passphrase)
    }

    /// The identity this phrase restores (BIP39 seed with an empty passphrase → IdentityKeyPair).
    public func identity() throws -> IdentityKeyPair {
        try IdentityKeyPair(seed: seed())
    }
}

/// SHA-256 through swift-crypto, for raw buffers.
enum SHA256Digest {
    static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        Array(SHA256.hash(data: bytes))
    }
}

func sodium_wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { buffer in
        if let base = buffer.baseAddress, buffer.count > 0 { sodium_memzero(base, buffer.count) }
    }
}
