import Foundation
@testable import ShroudCrypto
import ShroudWire
import Testing

/// The sealed-sender envelope and the direct-message plaintext (docs/PROTOCOL.md §5).
@Suite struct SealedSenderTests {
    /// A real initial session message from Alice to Bob, sealed to Bob.
    private func sealedInitial() throws -> (alice: Party, bob: Party, message: SessionMessage, envelope: [UInt8]) {
        let alice = try Party(seed: 1), bob = try Party(seed: 2)
        try alice.start(with: bob)
        let message = try alice.send("hello", to: bob)
        var random = SeededRandom(seed: 3)
        let envelope = try SealedEnvelope.seal(sender: alice.signingKey, message: message, recipient: bob.publicIdentity, random: &random)
        return (alice, bob, message, envelope)
    }

    @Test func roundTripNamesTheSenderOnlyInside() throws {
        let (alice, bob, message, envelope) = try sealedInitial()
        let opened = try SealedEnvelope.open(envelope, recipient: bob.identity)
        #expect(opened.sender == alice.signingKey)
        #expect(opened.message == message)
        #expect(try bob.receive(opened.message, from: alice) == "hello")
        // Neither identity key of the sender appears in the sealed bytes.
        #expect(Data(envelope).range(of: Data(alice.signingKey)) == nil)
        #expect(Data(envelope).range(of: Data(alice.publicIdentity.agreementKey)) == nil)
        #expect(envelope[0] == SealedEnvelope.version)
    }

    @Test func everyAlteredByteIsRefused() throws {
        let (_, bob, _, envelope) = try sealedInitial()
        for index in stride(from: 0, to: envelope.count, by: 7) {
            var altered = envelope
            altered[index] ^= 0x01
            #expect(throws: (any Error).self, "byte \(index)") { try SealedEnvelope.open(altered, recipient: bob.identity) }
        }
    }

    @Test func anotherRecipientCannotOpenIt() throws {
        let (_, _, _, envelope) = try sealedInitial()
        let carol = try Party(seed: 9)
        #expect(throws: CryptoError.self) { try SealedEnvelope.open(envelope, recipient: carol.identity) }
    }

    @Test func truncationAtAndPastTheMinimumIsRefused() throws {
        let (_, bob, _, envelope) = try sealedInitial()
        for count in [0, 1, 33, SealedEnvelope.minimumSize - 1, SealedEnvelope.minimumSize, envelope.count - 1] {
            #expect(throws: CryptoError.self, "\(count) bytes") { try SealedEnvelope.open(Array(envelope.prefix(count)), recipient: bob.identity) }
        }
        // The minimum is exactly the length check: one byte less is "shorter than", at it the box fails.
        do {
            _ = try SealedEnvelope.open(Array(envelope.prefix(SealedEnvelope.minimumSize - 1)), recipient: bob.identity)
        } catch let error as CryptoError {
            #expect(String(describing: error).contains("shorter than"))
        }
        do {
            _ = try SealedEnvelope.open(Array(envelope.prefix(SealedEnvelope.minimumSize)), recipient: bob.identity)
        } catch let error as CryptoError {
            #expect(!String(describing: error).contains("shorter than"))
        }
    }

    @Test func badSenderKeyLengthIsRefused() throws {
        let (_, bob, message, _) = try sealedInitial()
        var random = SeededRandom(seed: 4)
        #expect(throws: CryptoError.self) {
            try SealedEnvelope.seal(sender: [UInt8](repeating: 1, count: 31), message: message, recipient: bob.publicIdentity, random: &random)
        }
    }

    @Test func directTextRoundTripsAndRefusesMalformedInput() throws {
        let text = DirectText(sentAt: 1_764_000_000_123, text: "ünïcödé ✓")
        #expect(try DirectText(parsing: text.serialize()) == text)
        #expect(try DirectText(parsing: DirectText(sentAt: 0, text: "").serialize()) == DirectText(sentAt: 0, text: ""))
        #expect(throws: (any Error).self) { try DirectText(parsing: Array(text.serialize().prefix(7))) }
        #expect(throws: CryptoError.self) { try DirectText(parsing: [UInt8](repeating: 0, count: 8) + [0xFF, 0xFE]) }
    }
}
