import CSodium

/// libsodium must be initialised once before any of its functions run; every entry point that
/// touches libsodium goes through `Sodium.ready` first.
enum Sodium {
    static let ready: Bool = sodium_init() >= 0
}

/// Key material that is zeroed when released (DESIGN.md §1.9).
///
/// The bytes live in their own allocation, outside Swift's copy-on-write arrays, so no stray copy
/// survives; the pages are locked with `mlock` where the system permits (so they are not swapped
/// out), and `sodium_memzero` wipes them in `deinit` or on an explicit `wipe()` (profile lock).
/// The contents never change after creation except by `wipe()`, which is why the type may be shared
/// across threads.
public final class SecureBytes: @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    public let count: Int
    private let locked: Bool
    public private(set) var isWiped = false

    /// Zero-filled secure buffer of `count` bytes, filled by `initializer`.
    public init(count: Int, _ initializer: (UnsafeMutableRawBufferPointer) throws -> Void = { _ in }) rethrows {
        _ = Sodium.ready
        self.count = count
        base = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1))
        locked = sodium_mlock(base, max(count, 1)) == 0
        do {
            try initializer(UnsafeMutableRawBufferPointer(start: base, count: count))
        } catch {
            sodium_memzero(base, max(count, 1))
            if locked { sodium_munlock(base, max(count, 1)) }
            base.deallocate()
            throw error
        }
    }

    /// Copies `bytes` into a secure buffer. The caller remains responsible for the source.
    public convenience init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
        self.init(count: bytes.count) { buffer in
            _ = buffer.initializeMemory(as: UInt8.self, from: bytes)
        }
    }

    /// Fresh random bytes from `random`.
    public convenience init(randomCount count: Int, using random: inout some RandomSource) {
        self.init(count: count) { buffer in random.fill(buffer) }
    }

    deinit {
        // munlock also zeroes in libsodium, but wipe explicitly so the intent does not depend on it.
        sodium_memzero(base, max(count, 1))
        if locked { sodium_munlock(base, max(count, 1)) }
        base.deallocate()
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// A plain copy of the bytes, for APIs (swift-crypto keys, serialisation into an encrypted
    /// record) that need one. Prefer `withUnsafeBytes` where possible.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Zeroes the bytes now. Any later use sees zeros; `isWiped` tells callers the key is gone.
    public func wipe() {
        sodium_memzero(base, max(count, 1))
        isWiped = true
    }

    /// Constant-time comparison (`sodium_memcmp`).
    public func constantTimeEquals(_ other: SecureBytes) -> Bool {
        guard count == other.count else { return false }
        return sodium_memcmp(base, other.base, count) == 0
    }
}
