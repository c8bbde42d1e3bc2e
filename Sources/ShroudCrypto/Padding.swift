/// Why padded bytes were refused.
public enum PaddingError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooLarge(Int)
    case notABucketSize(Int)
    case badLength(declared: Int, available: Int)
    case nonZeroPadding

    public var description: String {
        switch self {
        case let .tooLarge(n): return "content too large to pad: \(n) bytes, limit \(BucketPadding.maximumContentSize)"
        case let .notABucketSize(n): return "padded blob of \(n) bytes is not a bucket size"
        case let .badLength(d, a): return "padding declares \(d) content bytes but only \(a) are present"
        case .nonZeroPadding: return "padding bytes are not zero"
        }
    }
}

/// Bucket padding for every blob the relay stores or forwards, so it learns only the bucket and
/// not the exact size (DESIGN.md §1).
///
/// Layout: content length (u32 big-endian) ‖ content ‖ zeros, total = the smallest bucket that
/// holds 4 + content. Buckets: 256, 512, 1024, … 65536 bytes (powers of two), then multiples of
/// 65536 up to `maximumPaddedSize` (4 MiB). Unpadding checks that the total is a bucket, that the
/// declared length fits, and that every padding byte is zero, so each content has exactly one
/// padded form and anything else is an error.
public enum BucketPadding {
    public static let smallestBucket = 256
    public static let largeBucketStep = 64 << 10
    public static let maximumPaddedSize = 4 << 20
    public static let lengthPrefixSize = 4
    public static let maximumContentSize = maximumPaddedSize - lengthPrefixSize

    /// The bucket (padded size) for a total of `size` bytes (prefix included), or nil past the maximum.
    public static func bucket(for size: Int) -> Int? {
        guard size <= maximumPaddedSize else { return nil }
        if size <= smallestBucket { return smallestBucket }
        if size <= largeBucketStep {
            var bucket = smallestBucket
            while bucket < size { bucket <<= 1 }
            return bucket
        }
        return (size + largeBucketStep - 1) / largeBucketStep * largeBucketStep
    }

    public static func isBucket(_ size: Int) -> Bool { bucket(for: size) == size }

    public static func pad(_ content: [UInt8]) throws -> [UInt8] {
        guard content.count <= maximumContentSize, let total = bucket(for: content.count + lengthPrefixSize) else {
            throw PaddingError.tooLarge(content.count)
        }
        var out = [UInt8]()
        out.reserveCapacity(total)
        let n = UInt32(content.count)
        out += [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
        out += content
        out += [UInt8](repeating: 0, count: total - out.count)
        return out
    }

    public static func unpad(_ padded: [UInt8]) throws -> [UInt8] {
        guard padded.count >= smallestBucket, isBucket(padded.count) else { throw PaddingError.notABucketSize(padded.count) }
        let declared = Int(padded[0]) << 24 | Int(padded[1]) << 16 | Int(padded[2]) << 8 | Int(padded[3])
        let available = padded.count - lengthPrefixSize
        guard declared <= available else { throw PaddingError.badLength(declared: declared, available: available) }
        // The bucket must be the smallest that fits, or the same content would have two forms.
        guard bucket(for: declared + lengthPrefixSize) == padded.count else { throw PaddingError.notABucketSize(padded.count) }
        var nonZero: UInt8 = 0
        for i in (lengthPrefixSize + declared)..<padded.count { nonZero |= padded[i] }
        guard nonZero == 0 else { throw PaddingError.nonZeroPadding }
        return Array(padded[lengthPrefixSize..<(lengthPrefixSize + declared)])
    }
}
