import ShroudWire
import Testing
@testable import ShroudCrypto

/// Random and mutated inputs to every parser of this part: none may crash (DESIGN.md §1.8), and
/// whatever parses must re-serialize to the same bytes where the format is canonical.
@Suite struct ParserFuzzTests {
    static let rounds = 3000

    @Test func sframeHeaderAndReceiver() throws {
        var random = SeededRandom(seed: 0x5f)
        let receiver = SFrameReceiver()
        try receiver.addKey(keyID: 1, baseKey: SecureBytes(copying: [UInt8](repeating: 1, count: 32)))
        for _ in 0..<Self.rounds {
            let length = Int(random.bytes(1)[0]) % 48
            let bytes = random.bytes(length)
            if let header = try? SFrameHeader(parsing: bytes) {
                #expect(header.serialized() == Array(bytes.prefix(header.encodedLength)))
            }
            #expect(throws: SFrameError.self) { try receiver.open(bytes) }
        }
    }

    @Test func textParsers() {
        var random = SeededRandom(seed: 0x7e)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789- \nSID1ss1t3i2é")
        for _ in 0..<Self.rounds {
            let length = Int(random.bytes(1)[0]) % 80
            let text = String(random.bytes(length).map { alphabet[Int($0) % alphabet.count] })
            _ = try? IdentityID(parsing: text)
            _ = try? ShamirShare(parsing: text)
            _ = try? RecoveryPhrase(parsing: text)
            _ = try? IdentityID(parsing: "sid1" + text)
            _ = try? ShamirShare(parsing: "ss1-t2-i1-00000000-" + text)
        }
    }

    @Test func mutatedValidTexts() throws {
        var random = SeededRandom(seed: 0x11)
        let identity = try RecoveryPhrase.generate(using: &random).identity()
        let idText = Array(identity.publicIdentity.id.text)
        let shareText = Array(try Shamir.split(secret: SecureBytes(copying: [1, 2, 3, 4]), threshold: 2, shares: 3, random: &random)[0].text)
        for _ in 0..<Self.rounds {
            for original in [idText, shareText] {
                var chars = original
                let r = random.bytes(3)
                let position = Int(r[0]) % chars.count
                switch r[1] % 3 {
                case 0: chars[position] = Character(UnicodeScalar(r[2] % 95 + 32))
                case 1: chars.remove(at: position)
                default: chars.insert(Character(UnicodeScalar(r[2] % 95 + 32)), at: position)
                }
                _ = try? IdentityID(parsing: String(chars))
                _ = try? ShamirShare(parsing: String(chars))
            }
        }
    }

    @Test func binaryParsers() throws {
        var random = SeededRandom(seed: 0x33)
        var seedRandom = SeededRandom(seed: 1)
        let record = try Keystore.seal(secret: SecureBytes(copying: [1, 2, 3]), passphrase: "p",
                                       parameters: .testOnly, random: &seedRandom).serialized()
        let padded = try BucketPadding.pad([1, 2, 3])
        for _ in 0..<Self.rounds {
            let length = Int(random.bytes(2)[0]) * 2
            let bytes = random.bytes(length)
            #expect(throws: KeystoreError.self) { try SealedRecord(parsing: bytes) }
            _ = try? BucketPadding.unpad(bytes)
            if let bundle = try? SecretBundle.parse(SecureBytes(copying: bytes)) {
                #expect(try SecretBundle.serialize(bundle).bytes == bytes)
            }
            var mutated = record
            let r = random.bytes(2)
            mutated[Int(r[0]) % mutated.count] ^= r[1] | 1
            #expect(throws: KeystoreError.self) { try SealedRecord(parsing: mutated) }
            var p = padded
            let position = Int(r[0]) % p.count
            p[position] ^= r[1] | 1
            // Padding is not integrity protection (the AEAD around it is): a changed length or
            // content byte may still unpad, but never to the original, and always canonically.
            if let content = try? BucketPadding.unpad(p) {
                #expect(content != [1, 2, 3] && position < 7)
                #expect(try BucketPadding.pad(content) == p)
            }
        }
        // Random 256-byte blobs are almost never valid padding; whatever passes is canonical.
        for _ in 0..<200 {
            let blob = random.bytes(256)
            if let content = try? BucketPadding.unpad(blob) { #expect(try BucketPadding.pad(content) == blob) }
        }
    }
}
