import Crypto
import Foundation
import Testing
@testable import ShroudCrypto

@Suite struct BIP39Tests {
    @Test func wordlistIsTheStandardEnglishList() {
        let words = BIP39.englishWordlist
        #expect(words.count == 2048)
        #expect(words == words.sorted())
        #expect(Set(words).count == 2048)
        let digest = SHA256.hash(data: Array((words.joined(separator: "\n") + "\n").utf8))
        #expect(digest.map { String(format: "%02x", $0) }.joined() == BIP39.englishWordlistSHA256)
        #expect(words.first == "abandon" && words.last == "zoo")
    }

    @Test func allTrezorVectorsPass() throws {
        let file = try #require(try TestResource.json("bip39-english") as? [String: Any])
        let passphrase = try #require(file["passphrase"] as? String)
        let vectors = try #require(file["vectors"] as? [[String]])
        #expect(vectors.count == 24)
        var lengths = Set<Int>()
        for vector in vectors {
            let entropy = secure(vector[0])
            let words = try BIP39.words(entropy: entropy)
            #expect(words.joined(separator: " ") == vector[1])
            lengths.insert(words.count)
            #expect(try BIP39.entropy(words: words).bytes == entropy.bytes)
            let seed = try BIP39.seed(words: words, passphrase: passphrase)
            #expect(seed.bytes.hexString == vector[2])
        }
        #expect(lengths == [12, 18, 24])
    }

    @Test func wrongWordCountIsNamed() {
        let words = Array(repeating: "abandon", count: 23)
        #expect(throws: RecoveryPhraseError.wrongWordCount(23)) { try BIP39.entropy(words: words) }
        #expect(throws: RecoveryPhraseError.wrongWordCount(25)) { try BIP39.entropy(words: words + ["abandon", "art"]) }
        #expect(throws: RecoveryPhraseError.wrongWordCount(0)) { try RecoveryPhrase(parsing: "   ") }
        #expect(RecoveryPhraseError.wrongWordCount(23).description.contains("got 23"))
    }

    @Test func unknownWordIsNamedWithPosition() {
        var words = Array(repeating: "abandon", count: 23) + ["art"]
        words[4] = "abandom"
        #expect(throws: RecoveryPhraseError.unknownWord("abandom", position: 5)) { try BIP39.entropy(words: words) }
        #expect(RecoveryPhraseError.unknownWord("abandom", position: 5).description == "unknown word \"abandom\" at position 5")
    }

    @Test func checksumMismatchIsNamed() throws {
        // "abandon ×23 art" is valid; "abandon ×24" has the wrong checksum word.
        _ = try BIP39.entropy(words: Array(repeating: "abandon", count: 23) + ["art"])
        #expect(throws: RecoveryPhraseError.checksumMismatch) { try BIP39.entropy(words: Array(repeating: "abandon", count: 24)) }
        // Swapping two words of a valid phrase breaks the checksum.
        var random = SeededRandom(seed: 7)
        let phrase = RecoveryPhrase.generate(using: &random)
        var swapped = phrase.words
        let firstDifferent = try #require(swapped.indices.first { swapped[$0] != swapped[0] })
        swapped.swapAt(0, firstDifferent)
        #expect(throws: RecoveryPhraseError.checksumMismatch) { try BIP39.seed(words: swapped) }
    }

    @Test func invalidEntropyLengthIsRefused() {
        #expect(throws: RecoveryPhraseError.invalidEntropyLength(15)) { try BIP39.words(entropy: SecureBytes(count: 15)) }
        #expect(throws: RecoveryPhraseError.invalidEntropyLength(36)) { try BIP39.words(entropy: SecureBytes(count: 36)) }
    }

    @Test func generatedPhraseHas24WordsAndRestoresTheSameIdentity() throws {
        var random = SeededRandom(seed: 42)
        let phrase = RecoveryPhrase.generate(using: &random)
        #expect(phrase.words.count == BIP39.recoveryWordCount)
        let original = try phrase.identity()
        // The user types it back with odd spacing and capitals.
        let typed = "  " + phrase.words.map { $0.uppercased() }.joined(separator: "  \n ") + " "
        let restored = try RecoveryPhrase(parsing: typed).identity()
        #expect(restored.publicIdentity == original.publicIdentity)
        #expect(restored.signingSeed.bytes == original.signingSeed.bytes)
        #expect(restored.agreementSecret.bytes == original.agreementSecret.bytes)
        // A different phrase gives a different identity.
        let other = try RecoveryPhrase.generate(using: &random).identity()
        #expect(other.publicIdentity != original.publicIdentity)
    }
}

@Suite struct SecureBytesTests {
    @Test func wipeZeroesAndMarks() {
        let secret = SecureBytes(copying: [1, 2, 3, 4, 5])
        #expect(!secret.isWiped)
        secret.wipe()
        #expect(secret.isWiped)
        #expect(secret.bytes == [0, 0, 0, 0, 0])
    }

    @Test func identityWipeClearsBothPrivateKeys() throws {
        var random = SeededRandom(seed: 3)
        let identity = try RecoveryPhrase.generate(using: &random).identity()
        #expect(identity.signingSeed.bytes != [UInt8](repeating: 0, count: 32))
        _ = try identity.sign([1, 2, 3])
        identity.wipe()
        #expect(identity.isWiped)
        #expect(throws: ShroudCrypto.CryptoError.self) { try identity.sign([1, 2, 3]) }
        #expect(throws: ShroudCrypto.CryptoError.self) { try identity.signingPrivateKey() }
        #expect(throws: ShroudCrypto.CryptoError.self) { try identity.agreementPrivateKey() }
        #expect(identity.signingSeed.bytes == [UInt8](repeating: 0, count: 32))
        #expect(identity.agreementSecret.bytes == [UInt8](repeating: 0, count: 32))
    }
}
