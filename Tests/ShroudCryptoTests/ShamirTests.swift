import Testing
@testable import ShroudCrypto

@Suite struct ShamirTests {
    static let secret: [UInt8] = (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }

    static func split(_ t: Int, of n: Int, seed: UInt64 = 1) throws -> [ShamirShare] {
        var random = SeededRandom(seed: seed)
        return try Shamir.split(secret: SecureBytes(copying: secret), threshold: t, shares: n, random: &random)
    }

    @Test func fieldArithmeticMatchesTheAESField() {
        #expect(GF256.multiply(0x57, 0x83) == 0xc1)   // FIPS-197 §4.2 example
        #expect(GF256.multiply(0x57, 0x13) == 0xfe)
        #expect(GF256.inverse(0) == 0)
        for a in 1...255 {
            #expect(GF256.multiply(UInt8(a), GF256.inverse(UInt8(a))) == 1)
        }
    }

    @Test func threeOfFiveRecoversFromAnyThree() throws {
        let shares = try Self.split(3, of: 5)
        #expect(shares.map(\.index) == [1, 2, 3, 4, 5])
        for a in 0..<5 { for b in (a + 1)..<5 { for c in (b + 1)..<5 {
            #expect(try Shamir.combine([shares[c], shares[a], shares[b]]).bytes == Self.secret)
        } } }
        #expect(try Shamir.combine(shares).bytes == Self.secret)
    }

    @Test func twoOfThreeNeededAreNotEnough() throws {
        let shares = try Self.split(3, of: 5)
        #expect(throws: ShamirError.notEnoughShares(have: 2, threshold: 3)) { try Shamir.combine([shares[0], shares[4]]) }
        #expect(throws: ShamirError.duplicateIndex(1)) { try Shamir.combine([shares[0], shares[0], shares[1]]) }
        // Relabelled as a 2-of-N split (valid checksums), two shares interpolate a wrong secret,
        // which the secret check refuses.
        for (a, b) in [(0, 1), (1, 4), (2, 3)] {
            let relabelled = [shares[a], shares[b]].map {
                ShamirShare(threshold: 2, index: $0.index, splitID: $0.splitID, value: $0.value)
            }
            #expect(throws: ShamirError.secretCheckMismatch) { try Shamir.combine(relabelled) }
        }
    }

    @Test func textFormRoundTripsAndShowsTheThreshold() throws {
        for share in try Self.split(3, of: 5) {
            #expect(share.text.hasPrefix("ss1-t3-i\(share.index)-"))
            #expect(!share.text.contains(" ") && !share.text.contains("\n"))
            #expect(try ShamirShare(parsing: share.text) == share)
            #expect(try ShamirShare(parsing: " " + share.text.uppercased() + "\n") == share)
        }
    }

    @Test func corruptedShareIsRefused() throws {
        let shares = try Self.split(3, of: 5)
        var chars = Array(shares[1].text)
        let position = chars.count - 15   // inside the value
        chars[position] = chars[position] == "a" ? "b" : "a"
        #expect(throws: ShamirError.shareChecksumMismatch(index: 2)) { try ShamirShare(parsing: String(chars)) }
        #expect(throws: ShamirError.self) { try ShamirShare(parsing: "ss1-t3-i2") }
        #expect(throws: ShamirError.self) { try ShamirShare(parsing: shares[1].text.replacingOccurrences(of: "-t3-", with: "-t1-")) }
        // Only the canonical spelling of the numbers parses.
        #expect(throws: ShamirError.self) { try ShamirShare(parsing: shares[1].text.replacingOccurrences(of: "-t3-", with: "-t+3-")) }
        #expect(throws: ShamirError.self) { try ShamirShare(parsing: shares[1].text.replacingOccurrences(of: "-i2-", with: "-i02-")) }
        // A wrong value with a recomputed checksum still fails the combined-secret check.
        var value = shares[1].value
        value[0] ^= 1
        let forged = ShamirShare(threshold: 3, index: 2, splitID: shares[1].splitID, value: value)
        let reparsed = try ShamirShare(parsing: forged.text)
        #expect(throws: ShamirError.secretCheckMismatch) { try Shamir.combine([shares[0], reparsed, shares[2]]) }
    }

    @Test func sharesOfDifferentSplitsAreDetected() throws {
        let a = try Self.split(2, of: 3, seed: 1), b = try Self.split(2, of: 3, seed: 2)
        #expect(throws: ShamirError.mixedSplits) { try Shamir.combine([a[0], b[1]]) }
        // Even if the split ids were made to agree, the combined-secret check catches the mix.
        let disguised = ShamirShare(threshold: 2, index: b[1].index, splitID: a[0].splitID, value: b[1].value)
        #expect(throws: ShamirError.secretCheckMismatch) { try Shamir.combine([a[0], disguised]) }
    }

    @Test func limitsAtAndPast() throws {
        #expect(Shamir.maximumShares == 255 && Shamir.minimumThreshold == 2)
        let most = try Self.split(2, of: Shamir.maximumShares)
        #expect(most.count == 255 && most.last?.index == 255)
        #expect(try Shamir.combine([most[254], most[100]]).bytes == Self.secret)
        #expect(try ShamirShare(parsing: most[254].text) == most[254])
        #expect(throws: ShamirError.tooManyShares(256)) { try Self.split(2, of: 256) }
        let all = try Self.split(5, of: 5)
        #expect(try Shamir.combine(all).bytes == Self.secret)
        #expect(throws: ShamirError.invalidThreshold(threshold: 6, shares: 5)) { try Self.split(6, of: 5) }
        #expect(throws: ShamirError.invalidThreshold(threshold: 1, shares: 5)) { try Self.split(1, of: 5) }
        var random = SeededRandom(seed: 1)
        #expect(throws: ShamirError.invalidSecretLength(Shamir.maximumSecretSize + 1)) {
            try Shamir.split(secret: SecureBytes(count: Shamir.maximumSecretSize + 1), threshold: 2, shares: 2, random: &random)
        }
        let big = try Shamir.split(secret: SecureBytes(count: Shamir.maximumSecretSize), threshold: 2, shares: 2, random: &random)
        #expect(try Shamir.combine([try ShamirShare(parsing: big[0].text), big[1]]).count == Shamir.maximumSecretSize)
    }

    @Test func recoveryEntropyRoundTripsToTheSameIdentity() throws {
        var random = SeededRandom(seed: 11)
        let phrase = RecoveryPhrase.generate(using: &random)
        let shares = try Shamir.split(secret: phrase.entropy, threshold: 2, shares: 3, random: &random)
        let restored = try RecoveryPhrase(entropy: Shamir.combine([shares[2], shares[0]]))
        #expect(restored.words == phrase.words)
        #expect(try restored.identity().publicIdentity == phrase.identity().publicIdentity)
    }
}

@Suite struct PaddingTests {
    @Test func bucketsAreTheDocumentedOnes() {
        #expect(BucketPadding.bucket(for: 0) == 256)
        #expect(BucketPadding.bucket(for: 256) == 256)
        #expect(BucketPadding.bucket(for: 257) == 512)
        #expect(BucketPadding.bucket(for: 65536) == 65536)
        #expect(BucketPadding.bucket(for: 65537) == 131072)
        #expect(BucketPadding.bucket(for: 131073) == 196608)
        #expect(BucketPadding.bucket(for: BucketPadding.maximumPaddedSize) == BucketPadding.maximumPaddedSize)
        #expect(BucketPadding.bucket(for: BucketPadding.maximumPaddedSize + 1) == nil)
    }

    @Test func roundTripAcrossSizes() throws {
        var random = SeededRandom(seed: 5)
        for size in [0, 1, 251, 252, 253, 1000, 4092, 4093, 65532, 65533, 200_000] {
            let content = random.bytes(size)
            let padded = try BucketPadding.pad(content)
            #expect(BucketPadding.isBucket(padded.count))
            #expect(padded.count == BucketPadding.bucket(for: size + 4))
            #expect(try BucketPadding.unpad(padded) == content)
        }
        #expect(try BucketPadding.pad(random.bytes(252)).count == 256)
        #expect(try BucketPadding.pad(random.bytes(253)).count == 512)
    }

    @Test func maximumContentAtAndPast() throws {
        let atLimit = [UInt8](repeating: 0xab, count: BucketPadding.maximumContentSize)
        let padded = try BucketPadding.pad(atLimit)
        #expect(padded.count == BucketPadding.maximumPaddedSize)
        #expect(try BucketPadding.unpad(padded) == atLimit)
        #expect(throws: PaddingError.tooLarge(BucketPadding.maximumContentSize + 1)) {
            try BucketPadding.pad(atLimit + [0])
        }
        #expect(throws: PaddingError.notABucketSize(BucketPadding.maximumPaddedSize + 65536)) {
            try BucketPadding.unpad(padded + [UInt8](repeating: 0, count: 65536))
        }
    }

    @Test func malformedPaddingIsRefused() throws {
        let padded = try BucketPadding.pad(Array("hello".utf8))
        #expect(throws: PaddingError.notABucketSize(255)) { try BucketPadding.unpad(Array(padded.dropLast())) }
        #expect(throws: PaddingError.notABucketSize(0)) { try BucketPadding.unpad([]) }
        var nonZero = padded; nonZero[200] = 1
        #expect(throws: PaddingError.nonZeroPadding) { try BucketPadding.unpad(nonZero) }
        var tooLong = padded; tooLong[2] = 0x10
        #expect(throws: PaddingError.badLength(declared: 0x1005, available: 252)) { try BucketPadding.unpad(tooLong) }
        // A small content in a bigger bucket than needed is a second form: refused.
        let oversized = Array(padded) + [UInt8](repeating: 0, count: 256)
        #expect(throws: PaddingError.notABucketSize(512)) { try BucketPadding.unpad(oversized) }
    }
}
