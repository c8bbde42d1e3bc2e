import ShroudWire
import Crypto

/// Why an identity text was refused.
public enum IdentityTextError: Error, Equatable, Sendable, CustomStringConvertible {
    case missingPrefix
    case wrongLength(Int)
    case invalidCharacter(Character, position: Int)
    case checksumMismatch

    public var description: String {
        switch self {
        case .missingPrefix:
            return "not a Shroud id: it must start with \"\(IdentityID.prefix)\""
        case let .wrongLength(n):
            return "wrong id length: expected \(IdentityID.textLength) characters, got \(n)"
        case let .invalidCharacter(c, position):
            return "invalid character \"\(c)\" at position \(position) of the id (allowed: a-z, 2-7)"
        case .checksumMismatch:
            return "id checksum mismatch: the id has a typo"
        }
    }
}

/// The identity's name on the command line and in contact lists: the Ed25519 public key with a
/// checksum, as `sid1` followed by 58 lowercase RFC 4648 base32 characters (no padding).
///
///     payload  = signingKey (32 bytes) ‖ SHA-256("shroud/v1/identity/id-checksum" ‖ signingKey)[0..<4]
///     text     = "sid1" ‖ base32(payload)          (36 bytes → 58 characters, the last 3 bits zero)
///
/// The X25519 agreement key is not part of the id: it is bound to the signing key by a signature
/// (`PublicIdentity`), so knowing the id is enough to check any agreement key offered for it.
/// Parsing ignores case and surrounding whitespace; any typo fails the checksum (chance of a miss
/// 2⁻³²).
public struct IdentityID: Hashable, Sendable, CustomStringConvertible {
    public static let prefix = "sid1"
    public static let checksumLabel = Array("shroud/v1/identity/id-checksum".utf8)
    public static let checksumByteCount = 4
    public static let textLength = prefix.count + Base32.encodedLength(32 + checksumByteCount)

    public let signingKey: [UInt8]

    public init(signingKey: [UInt8]) throws {
        guard signingKey.count == 32 else { throw CryptoError.invalidKey("identity signing key must be 32 bytes") }
        self.signingKey = signingKey
    }

    public init(parsing input: String) throws {
        let text = input.trimmingWhitespace().lowercased()
        guard text.hasPrefix(Self.prefix) else { throw IdentityTextError.missingPrefix }
        guard text.count == Self.textLength else { throw IdentityTextError.wrongLength(text.count) }
        let body = text.dropFirst(Self.prefix.count)
        let payload: [UInt8]
        do { payload = try Base32.decode(body, byteCount: 32 + Self.checksumByteCount) } catch let Base32.Invalid.character(c, offset) {
            throw IdentityTextError.invalidCharacter(c, position: Self.prefix.count + offset + 1)
        }
        let key = Array(payload[0..<32])
        guard constantTimeEquals(Array(payload[32...]), Self.checksum(key)) else { throw IdentityTextError.checksumMismatch }
        signingKey = key
    }

    public var text: String { Self.prefix + Base32.encode(signingKey + Self.checksum(signingKey)) }
    public var description: String { text }

    static func checksum(_ key: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: checksumLabel + key).prefix(checksumByteCount))
    }
}

extension PublicIdentity {
    /// The identity's id (its text form is what `shroud id show` prints and `contact add` takes).
    public var id: IdentityID {
        // signingKey is 32 bytes (checked in init), so this cannot fail.
        (try? IdentityID(signingKey: signingKey)) ?? IdentityID(unchecked: signingKey)
    }
}

extension IdentityID {
    fileprivate init(unchecked key: [UInt8]) { signingKey = key }
}

/// Safety number of two identities: 60 digits in 12 groups of 5, the same on both sides.
///
/// For each identity: h₀ = SHA-512(label ‖ version (u16 BE) ‖ signingKey); hᵢ₊₁ = SHA-512(hᵢ ‖ signingKey)
/// for `iterations` rounds; the first 30 bytes, in six 5-byte big-endian chunks, each taken mod 100000,
/// give 30 digits. The two 30-digit halves are ordered by string comparison and concatenated, so the
/// number does not depend on who computes it. The iterations make a second identity that collides
/// with a given number expensive to search for.
public enum SafetyNumber {
    public static let label = Array("shroud/v1/safety-number".utf8)
    public static let version: UInt16 = 1
    public static let iterations = 5200
    public static let digitsPerIdentity = 30
    public static let groupLength = 5

    public static func digits(for identity: IdentityID) -> String {
        var hash = Array(SHA512.hash(data: label + [UInt8(version >> 8), UInt8(version & 0xff)] + identity.signingKey))
        for _ in 0..<iterations {
            var hasher = SHA512()
            hasher.update(data: hash)
            hasher.update(data: identity.signingKey)
            hash = Array(hasher.finalize())
        }
        var out = ""
        for chunk in 0..<(digitsPerIdentity / groupLength) {
            var value: UInt64 = 0
            for i in 0..<5 { value = value << 8 | UInt64(hash[chunk * 5 + i]) }
            let group = String(value % 100_000)
            out += String(repeating: "0", count: groupLength - group.count) + group
        }
        return out
    }

    /// The 60 digits for a pair, grouped as "12345 67890 …".
    public static func between(_ a: IdentityID, _ b: IdentityID) -> String {
        let halves = [digits(for: a), digits(for: b)].sorted()
        let all = Array(halves.joined())
        return stride(from: 0, to: all.count, by: groupLength)
            .map { String(all[$0..<min($0 + groupLength, all.count)]) }
            .joined(separator: " ")
    }
}

/// RFC 4648 base32, lowercase alphabet, no padding.
enum Base32 {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
    enum Invalid: Error { case character(Character, offset: Int) }

    static func encodedLength(_ byteCount: Int) -> Int { (byteCount * 8 + 4) / 5 }

    static func encode(_ bytes: [UInt8]) -> String {
        var out = ""
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int(buffer >> UInt32(bits - 5)) & 31])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int(buffer << UInt32(5 - bits)) & 31]) }
        return out
    }

    /// Decodes exactly `byteCount` bytes; unused trailing bits must be zero, so each byte string has
    /// exactly one text.
    static func decode(_ text: Substring, byteCount: Int) throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(byteCount)
        var buffer: UInt32 = 0
        var bits = 0
        for (offset, c) in text.enumerated() {
            guard let value = alphabet.firstIndex(of: c) else { throw Invalid.character(c, offset: offset) }
            buffer = (buffer << 5 | UInt32(value)) & 0xffff
            bits += 5
            if bits >= 8 {
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits - 8)))
                bits -= 8
            }
        }
        guard out.count == byteCount, buffer & ((1 << UInt32(bits)) - 1) == 0 else {
            throw Invalid.character(text.last ?? " ", offset: max(text.count - 1, 0))
        }
        return out
    }
}

extension String {
    func trimmingWhitespace() -> String {
        String(drop(while: { $0.isWhitespace }).reversed().drop(while: { $0.isWhitespace }).reversed())
    }
}
