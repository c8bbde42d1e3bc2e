import Crypto
import Testing
@testable import ShroudCrypto

/// The hand-driven HMAC/HKDF (libsodium) and AES-256-GCM paths agree with swift-crypto.
@Suite struct SessionPrimitivesTests {
    @Test(arguments: [1, 31, 32, 33, 56, 64, 96, 100])
    func hkdfMatchesSwiftCrypto(length: Int) throws {
        var random = SeededRandom(seed: UInt64(length) + 500)
        for saltLength in [0, 16, 32, 80] {
            let ikm = random.bytes(48), salt = random.bytes(saltLength), info = random.bytes(20)
            let expected = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: ikm), salt: salt, info: info,
                                                  outputByteCount: length).withUnsafeBytes { Array($0) }
            let ours = SessionPrimitives.hkdf(ikm: SecureBytes(copying: ikm), salt: salt, info: info, outputLength: length).bytes
            #expect(ours == expected, "salt \(saltLength), length \(length)")
        }
    }

    @Test func chainStepMatchesHMAC() throws {
        var random = SeededRandom(seed: 510)
        let ck = random.bytes(32)
        let (next, mk) = SessionPrimitives.chainStep(SecureBytes(copying: ck))
        #expect(mk.bytes == Array(HMAC<SHA256>.authenticationCode(for: [0x01], using: SymmetricKey(data: ck))))
        #expect(next.bytes == Array(HMAC<SHA256>.authenticationCode(for: [0x02], using: SymmetricKey(data: ck))))
    }

    @Test(arguments: [0, 1, 15, 16, 17, 1024])
    func gcmMatchesSwiftCrypto(length: Int) throws {
        var random = SeededRandom(seed: 520 + UInt64(length))
        let key = random.bytes(32), nonce = random.bytes(12), plaintext = random.bytes(length), ad = random.bytes(length % 7 * 10)
        let ours = try key.withUnsafeBytes { k in try nonce.withUnsafeBytes { n in try plaintext.withUnsafeBytes { p in
            try ad.withUnsafeBytes { a in try SessionPrimitives.seal(key: k, nonce: n, plaintext: p, associatedData: a) } } } }
        let theirs = try SessionPrimitives.seal(key: SymmetricKey(data: key), nonce: nonce, plaintext: plaintext, associatedData: ad)
        #expect(ours == theirs)
        let opened = try key.withUnsafeBytes { k in try nonce.withUnsafeBytes { n in try ad.withUnsafeBytes { a in
            try SessionPrimitives.open(key: k, nonce: n, sealed: ours[...], associatedData: a, what: "test") } } }
        #expect(opened == plaintext)
        var tampered = ours
        tampered[tampered.count - 1] ^= 1
        #expect(throws: ShroudCrypto.CryptoError.self) {
            try key.withUnsafeBytes { k in try nonce.withUnsafeBytes { n in try ad.withUnsafeBytes { a in
                try SessionPrimitives.open(key: k, nonce: n, sealed: tampered[...], associatedData: a, what: "test") } } }
        }
        #expect(try SessionPrimitives.open(key: SymmetricKey(data: key), nonce: nonce, sealed: ours[...], associatedData: ad,
                                           what: "test") == plaintext)
    }
}
