import Foundation
import Testing
@testable import ShroudCrypto

@Suite struct IdentityTextTests {
    static func identity(_ seed: UInt64) throws -> IdentityKeyPair {
        var random = SeededRandom(seed: seed)
        return try RecoveryPhrase.generate(using: &random).identity()
    }

    @Test func idRoundTripsAndHasTheDocumentedShape() throws {
        let id = try Self.identity(1).publicIdentity.id
        let text = id.text
        #expect(text.hasPrefix("sid1"))
        #expect(text.count == IdentityID.textLength && IdentityID.textLength == 62)
        #expect(text.dropFirst(4).allSatisfy { "abcdefghijklmnopqrstuvwxyz234567".contains($0) })
        #expect(try IdentityID(parsing: text) == id)
        #expect(try IdentityID(parsing: "  " + text.uppercased() + "\n") == id)
    }

    @Test func everySingleCharacterTypoIsCaught() throws {
        let text = Array(try Self.identity(2).publicIdentity.id.text)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        for position in 4..<text.count {
            var typo = text
            typo[position] = alphabet[(alphabet.firstIndex(of: text[position])! + 1) % 32]
            #expect(throws: (any Error).self) { try IdentityID(parsing: String(typo)) }
        }
        // Transposition of two neighbouring characters.
        var swapped = text
        let i = try #require((4..<text.count - 1).first { text[$0] != text[$0 + 1] })
        swapped.swapAt(i, i + 1)
        #expect(throws: (any Error).self) { try IdentityID(parsing: String(swapped)) }
    }

    @Test func parseErrorsAreSpecific() throws {
        let text = try Self.identity(3).publicIdentity.id.text
        #expect(throws: IdentityTextError.missingPrefix) { try IdentityID(parsing: "xyz" + text.dropFirst(3)) }
        #expect(throws: IdentityTextError.wrongLength(61)) { try IdentityID(parsing: String(text.dropLast())) }
        #expect(throws: IdentityTextError.invalidCharacter("1", position: 10)) {
            var chars = Array(text); chars[9] = "1"; _ = try IdentityID(parsing: String(chars))
        }
        // A typo in the middle that stays in the alphabet: the checksum catches it.
        var chars = Array(text)
        chars[20] = chars[20] == "a" ? "b" : "a"
        #expect(throws: IdentityTextError.checksumMismatch) { try IdentityID(parsing: String(chars)) }
    }

    @Test func safetyNumberIsOrderIndependentGroupedAndDistinct() throws {
        let a = try Self.identity(4).publicIdentity.id
        let b = try Self.identity(5).publicIdentity.id
        let c = try Self.identity(6).publicIdentity.id
        let ab = SafetyNumber.between(a, b)
        #expect(ab == SafetyNumber.between(b, a))
        let groups = ab.split(separator: " ")
        #expect(groups.count == 12)
        #expect(groups.allSatisfy { $0.count == 5 && $0.allSatisfy(\.isNumber) })
        #expect(ab != SafetyNumber.between(a, c))
    }

    @Test func agreementKeyBindingRejectsASubstitutedKey() throws {
        let alice = try Self.identity(7).publicIdentity
        let mallory = try Self.identity(8).publicIdentity
        #expect(throws: CryptoError.self) {
            try PublicIdentity(signingKey: alice.signingKey, agreementKey: mallory.agreementKey,
                               agreementSignature: alice.agreementSignature)
        }
        #expect(throws: CryptoError.self) {
            try PublicIdentity(signingKey: alice.signingKey, agreementKey: mallory.agreementKey,
                               agreementSignature: mallory.agreementSignature)
        }
        #expect(try PublicIdentity(signingKey: alice.signingKey, agreementKey: alice.agreementKey,
                                   agreementSignature: alice.agreementSignature) == alice)
    }
}

/// docs/vectors/identity-derivation.json is generated from the code; this suite checks the committed
/// file. Regenerate with: SHROUD_WRITE_VECTORS=1 swift test --skip-build --filter IdentityVectorDocument
@Suite struct IdentityVectorDocument {
    static let path = "docs/vectors/identity-derivation.json"

    static func document() throws -> Data {
        let entropies = [
            String(repeating: "00", count: 32),
            String(repeating: "7f", count: 32),
            "68a79eaca2324873eacc50cb9c6eca8cc68ea5d936f98787c60c7ebc74e6ce7c",
        ]
        var vectors: [[String: Any]] = []
        var ids: [IdentityID] = []
        for entropyHex in entropies {
            let phrase = try RecoveryPhrase(entropy: secure(entropyHex))
            let seed = try phrase.seed()
            let identity = try IdentityKeyPair(seed: seed)
            let pub = identity.publicIdentity
            ids.append(pub.id)
            vectors.append([
                "entropy": entropyHex,
                "phrase": phrase.text,
                "bip39_seed": seed.bytes.hexString,
                "ed25519_private_seed": identity.signingSeed.bytes.hexString,
                "ed25519_public": pub.signingKey.hexString,
                "x25519_private": identity.agreementSecret.bytes.hexString,
                "x25519_public": pub.agreementKey.hexString,
                "agreement_signature": pub.agreementSignature.hexString,
                "id": pub.id.text,
            ])
        }
        let document: [String: Any] = [
            "description": "Shroud identity derivation (docs/CRYPTO.md §1): 24-word BIP39 phrase, empty passphrase -> 64-byte seed -> HKDF-SHA512(salt empty, info label) -> Ed25519 seed / X25519 scalar; agreement key signed with Ed25519 over label || key; id = sid1 + base32(ed25519_public || SHA-256(checksum label || ed25519_public)[0..4]).",
            "labels": [
                "ed25519": String(decoding: IdentityKeyPair.signingKeyLabel, as: UTF8.self),
                "x25519": String(decoding: IdentityKeyPair.agreementKeyLabel, as: UTF8.self),
                "agreement_binding": String(decoding: PublicIdentity.agreementBindingLabel, as: UTF8.self),
                "id_checksum": String(decoding: IdentityID.checksumLabel, as: UTF8.self),
                "safety_number": String(decoding: SafetyNumber.label, as: UTF8.self),
            ],
            "vectors": vectors,
            "safety_number": [
                "a": ids[0].text, "b": ids[1].text,
                "iterations": SafetyNumber.iterations,
                "digits_a": SafetyNumber.digits(for: ids[0]),
                "digits_b": SafetyNumber.digits(for: ids[1]),
                "number": SafetyNumber.between(ids[0], ids[1]),
            ] as [String: Any],
        ]
        var data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        data.append(0x0a)
        return data
    }

    @Test func committedDocumentMatchesTheCode() throws {
        let url = TestResource.repositoryRoot.appendingPathComponent(Self.path)
        let generated = try Self.document()
        if ProcessInfo.processInfo.environment["SHROUD_WRITE_VECTORS"] == "1" {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try generated.write(to: url)
        }
        let committed = try Data(contentsOf: url)
        #expect(committed == generated, "\(Self.path) is out of date: regenerate it (see this suite's comment)")
    }
}
