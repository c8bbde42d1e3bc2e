import CSodium

/// Where randomness comes from. Every operation that needs random bytes takes one as a parameter
/// (DESIGN.md §2), so tests run deterministically and production uses the system source.
public protocol RandomSource {
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer)
}

extension RandomSource {
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { fill($0) }
        return out
    }
}

/// The operating system's CSPRNG through libsodium (`randombytes_buf`, getrandom(2) on Linux).
public struct SystemRandom: RandomSource {
    public init() { _ = Sodium.ready }

    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        randombytes_buf(base, buffer.count)
    }
}

/// A reproducible stream for tests and vector generation: ChaCha20 keyed by a 32-byte seed
/// (`randombytes_buf_deterministic`), advanced by a block counter so successive calls differ.
public struct SeededRandom: RandomSource {
    private var seed: [UInt8]
    private var counter: UInt64 = 0

    public init(seed: UInt64) {
        _ = Sodium.ready
        var s = [UInt8](repeating: 0, count: 32)
        for i in 0..<8 { s[i] = UInt8(truncatingIfNeeded: seed >> (UInt64(i) * 8)) }
        self.seed = s
    }

    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        // Mix the call counter into the key so that each call yields a fresh stream.
        var key = seed
        for i in 0..<8 { key[24 + i] ^= UInt8(truncatingIfNeeded: counter >> (UInt64(i) * 8)) }
        counter &+= 1
        randombytes_buf_deterministic(base, buffer.count, key)
    }
}
