import Crypto
import CSodium
import ShroudWire

/// Why shares could not be made or combined.
public enum ShamirError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidThreshold(threshold: Int, shares: Int)
    case tooManyShares(Int)
    case invalidSecretLength(Int)
    case malformedShare(String)
    case shareChecksumMismatch(index: Int)
    case notEnoughShares(have: Int, threshold: Int)
    case duplicateIndex(Int)
    case mixedSplits
    case secretCheckMismatch

    public var description: String {
        switch self {
        case let .invalidThreshold(t, n):
            return "threshold must be between \(Shamir.minimumThreshold) and the number of shares (\(n)), got \(t)"
        case let .tooManyShares(n): return "at most \(Shamir.maximumShares) shares, got \(n)"
        case let .invalidSecretLength(n):
            return "secret must be 1...\(Shamir.maximumSecretSize) bytes, got \(n)"
        case let .malformedShare(reason): return "malformed share: \(reason)"
        case let .shareChecksumMismatch(i): return "share \(i) is corrupted (checksum mismatch)"
        case let .notEnoughShares(have, t): return "not enough shares: \(have) given, \(t) needed"
        case let .duplicateIndex(i): return "share \(i) was given twice"
        case .mixedSplits: return "the shares come from different splits"
        case .secretCheckMismatch:
            return "the combined secret fails its check: a share is wrong or comes from another split"
        }
    }
}

/// One share of a split secret.
///
/// Text form, one line: `ss1-t<threshold>-i<index>-<split id, 8 hex>-<value, base32>-<checksum, 8 hex>`,
/// e.g. `ss1-t3-i2-1a2b3c4d-….-9f8e7d6c`, where checksum = SHA-256("shroud/v1/shamir/share" ‖
/// version ‖ threshold ‖ index ‖ split id ‖ value)[0..<4], so a typo or a damaged share is caught
/// on its own before combining.
public struct ShamirShare: Hashable, Sendable, CustomStringConvertible {
    public static let textPrefix = "ss1"
    static let version: UInt8 = 1
    static let checksumLabel = Array("shroud/v1/shamir/share".utf8)

    public let threshold: Int
    public let index: Int
    /// Random per split: shares of different splits are refused with a clear error.
    public let splitID: [UInt8]
    /// The polynomial values at `index` for every byte of secret ‖ secret check.
    public let value: [UInt8]

    init(threshold: Int, index: Int, splitID: [UInt8], value: [UInt8]) {
        self.threshold = threshold
        self.index = index
        self.splitID = splitID
        self.value = value
    }

    var checksum: [UInt8] {
        Array(SHA256.hash(data: Self.checksumLabel + [Self.version, UInt8(threshold), UInt8(index)] + splitID + value).prefix(4))
    }

    public var text: String {
        "\(Self.textPrefix)-t\(threshold)-i\(index)-\(Hex.encode(splitID))-\(Base32.encode(value))-\(Hex.encode(checksum))"
    }

    public var description: String { text }

    public init(parsing input: String) throws {
        let parts = input.trimmingWhitespace().lowercased().split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == Self.textPrefix else {
            throw ShamirError.malformedShare("expected ss1-tN-iN-SPLIT-VALUE-CHECK")
        }
        guard parts[1].hasPrefix("t"), let t = Int(parts[1].dropFirst()), "t\(t)" == parts[1],
              (Shamir.minimumThreshold...Shamir.maximumShares).contains(t) else {
            throw ShamirError.malformedShare("bad threshold field \"\(parts[1])\"")
        }
        guard parts[2].hasPrefix("i"), let i = Int(parts[2].dropFirst()), "i\(i)" == parts[2],
              (1...Shamir.maximumShares).contains(i) else {
            throw ShamirError.malformedShare("bad index field \"\(parts[2])\"")
        }
        guard let split = Hex.decode(parts[3]), split.count == Shamir.splitIDByteCount else {
            throw ShamirError.malformedShare("bad split id \"\(parts[3])\"")
        }
        let valueLength = parts[4].count * 5 / 8
        guard valueLength >= 1 + Shamir.secretCheckByteCount,
              valueLength <= Shamir.maximumSecretSize + Shamir.secretCheckByteCount,
              Base32.encodedLength(valueLength) == parts[4].count,
              let value = try? Base32.decode(parts[4], byteCount: valueLength) else {
            throw ShamirError.malformedShare("bad value field")
        }
        guard let check = Hex.decode(parts[5]), check.count == 4 else { throw ShamirError.malformedShare("bad checksum field") }
        self.init(threshold: t, index: i, splitID: split, value: value)
        guard constantTimeEquals(check, checksum) else { throw ShamirError.shareChecksumMismatch(index: i) }
    }
}

/// Shamir secret sharing over GF(2⁸) (AES field, x⁸+x⁴+x³+x+1), for the recovery entropy.
///
/// The secret is extended with a check, SHA-256("shroud/v1/shamir/secret-check" ‖ secret)[0..<4],
/// before splitting; combining recomputes it, so shares that are individually well-formed but from
/// different splits (or a wrong share with a valid checksum) are detected. Every field operation is
/// constant time: multiplication is shift-and-add with masks, inversion is a²⁵⁴ by a fixed chain;
/// no table is indexed by a secret value.
public enum Shamir {
    public static let maximumShares = 255
    public static let minimumThreshold = 2
    public static let maximumSecretSize = 64
    public static let splitIDByteCount = 4
    public static let secretCheckByteCount = 4
    static let secretCheckLabel = Array("shroud/v1/shamir/secret-check".utf8)

    /// Splits `secret` into `shares` shares, any `threshold` of which recover it.
    public static func split(secret: SecureBytes, threshold: Int, shares: Int,
                             random: inout some RandomSource) throws -> [ShamirShare] {
        guard shares <= maximumShares else { throw ShamirError.tooManyShares(shares) }
        guard threshold >= minimumThreshold, threshold <= shares else {
            throw ShamirError.invalidThreshold(threshold: threshold, shares: shares)
        }
        guard (1...maximumSecretSize).contains(secret.count) else { throw ShamirError.invalidSecretLength(secret.count) }
        let splitID = random.bytes(splitIDByteCount)
        var extended = [UInt8](repeating: 0, count: secret.count + secretCheckByteCount)
        defer { sodium_wipe(&extended) }
        secret.withUnsafeBytes { raw in for i in 0..<raw.count { extended[i] = raw[i] } }
        let check = secretCheck(secret)
        for i in 0..<secretCheckByteCount { extended[secret.count + i] = check[i] }
        var values = [[UInt8]](repeating: [UInt8](repeating: 0, count: extended.count), count: shares)
        // For each byte, a random polynomial of degree threshold-1 whose constant term is the byte.
        var coefficients = [UInt8](repeating: 0, count: threshold)
        defer { sodium_wipe(&coefficients) }
        for position in 0..<extended.count {
            coefficients[0] = extended[position]
            coefficients.withUnsafeMutableBytes { buffer in
                random.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[1...]))
            }
            for s in 0..<shares {
                let x = UInt8(s + 1)
                var y: UInt8 = 0
                for c in coefficients.reversed() { y = GF256.multiply(y, x) ^ c }  // Horner
                values[s][position] = y
            }
        }
        return (0..<shares).map { ShamirShare(threshold: threshold, index: $0 + 1, splitID: splitID, value: values[$0]) }
    }

    /// Recovers the secret from at least `threshold` shares (extra shares are ignored).
    public static func combine(_ shares: [ShamirShare]) throws -> SecureBytes {
        guard let first = shares.first else { throw ShamirError.notEnoughShares(have: 0, threshold: minimumThreshold) }
        for share in shares where share.splitID != first.splitID || share.threshold != first.threshold || share.value.count != first.value.count {
            throw ShamirError.mixedSplits
        }
        var seen = Set<Int>()
        for share in shares {
            guard seen.insert(share.index).inserted else { throw ShamirError.duplicateIndex(share.index) }
        }
        guard shares.count >= first.threshold else {
            throw ShamirError.notEnoughShares(have: shares.count, threshold: first.threshold)
        }
        let used = Array(shares.prefix(first.threshold))
        // Lagrange basis at x = 0: lᵢ = Πⱼ≠ᵢ xⱼ / (xⱼ − xᵢ); subtraction is XOR in GF(2⁸).
        let basis: [UInt8] = used.indices.map { i in
            var numerator: UInt8 = 1
            var denominator: UInt8 = 1
            for j in used.indices where j != i {
                let xi = UInt8(used[i].index), xj = UInt8(used[j].index)
                numerator = GF256.multiply(numerator, xj)
                denominator = GF256.multiply(denominator, xj ^ xi)
            }
            return GF256.multiply(numerator, GF256.inverse(denominator))
        }
        var extended = [UInt8](repeating: 0, count: first.value.count)
        defer { sodium_wipe(&extended) }
        for position in extended.indices {
            var sum: UInt8 = 0
            for (i, share) in used.enumerated() { sum ^= GF256.multiply(basis[i], share.value[position]) }
            extended[position] = sum
        }
        let secretLength = extended.count - secretCheckByteCount
        let secret = SecureBytes(copying: extended[..<secretLength])
        guard constantTimeEquals(secretCheck(secret), Array(extended[secretLength...])) else {
            throw ShamirError.secretCheckMismatch
        }
        return secret
    }

    static func secretCheck(_ secret: SecureBytes) -> [UInt8] {
        secret.withUnsafeBytes { raw in
            var hasher = SHA256()
            hasher.update(data: secretCheckLabel)
            hasher.update(bufferPointer: raw)
            return Array(hasher.finalize().prefix(secretCheckByteCount))
        }
    }
}

/// GF(2⁸) with the AES polynomial, in constant time.
enum GF256 {
    static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var a = a, b = b, product: UInt8 = 0
        for _ in 0..<8 {
            product ^= a & (0 &- (b & 1))          // add a when the low bit of b is set, without a branch
            let carry = 0 &- (a >> 7)              // 0xff when the high bit of a is set
            a = (a << 1) ^ (0x1b & carry)
            b >>= 1
        }
        return product
    }

    /// a⁻¹ = a²⁵⁴ (and 0 for 0), by the fixed chain 254 = 0b11111110.
    static func inverse(_ a: UInt8) -> UInt8 {
        var result: UInt8 = 1
        var power = a                                // a^(2^k)
        for k in 0..<8 {
            power = k == 0 ? a : multiply(power, power)
            let use = 0 &- UInt8((254 >> k) & 1)     // k is public; the choice does not depend on a
            result = (multiply(result, power) & use) | (result & ~use)
        }
        return result
    }
}
