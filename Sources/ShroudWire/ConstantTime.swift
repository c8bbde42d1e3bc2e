/// Compares two byte strings in time that depends only on their lengths, not on where they
/// differ: for checksums and passphrase checks in the crypto core, and for the relay's admin token,
/// which must not be guessable byte by byte from response times.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference: UInt8 = a.count == b.count ? 0 : 1
    for index in 0..<max(a.count, b.count) {
        let x = index < a.count ? a[index] : 0
        let y = index < b.count ? b[index] : 0
        difference |= x ^ y
    }
    return difference == 0
}
