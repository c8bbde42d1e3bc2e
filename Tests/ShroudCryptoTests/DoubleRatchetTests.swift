import Testing
@testable import ShroudCrypto
import ShroudWire

@Suite struct DoubleRatchetTests {
    @Test func pingPong() throws {
        var pair = try RatchetPair(seed: 20)
        for round in 0..<20 {
            let a = try pair.aliceSends("a\(round)")
            #expect(try pair.bobReceives(a) == "a\(round)")
            let b = try pair.bobSends("b\(round)")
            #expect(try pair.aliceReceives(b) == "b\(round)")
        }
        #expect(!pair.alice.isAwaitingReply)
    }

    @Test func withoutOneTimePreKey() throws {
        var pair = try RatchetPair(seed: 21, oneTime: false)
        let b = try pair.bobSends("reply")
        #expect(try pair.aliceReceives(b) == "reply")
    }

    @Test func responderCannotSendFirst() throws {
        var random = SeededRandom(seed: 22)
        let alice = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        let bob = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        let spk = try SignedPreKey.generate(id: 1, identity: bob, now: 0, random: &random)
        let secrets = try X3DH.initiate(identity: alice, bundle: PreKeyBundle(identity: bob, signedPreKey: spk, oneTimePreKey: nil),
                                        random: &random).secrets
        var ratchet = try DoubleRatchet.responder(secrets: secrets, signedPreKey: spk)
        #expect(!ratchet.canSend)
        #expect(throws: CryptoError.self) { try ratchet.encrypt([1], associatedData: secrets.associatedData) }
    }

    @Test func longOneWayRun() throws {
        var pair = try RatchetPair(seed: 23)
        for i in 0..<2_000 {
            let m = try pair.aliceSends("m\(i)")
            #expect(try pair.bobReceives(m) == "m\(i)")
        }
        #expect(pair.bob.skippedKeyCount == 0)
    }

    @Test func lostMessagesDoNotBlockLaterOnes() throws {
        var pair = try RatchetPair(seed: 24)
        var lost: [RatchetMessage] = []
        for i in 0..<10 {
            let m = try pair.aliceSends("m\(i)")
            if i % 3 == 0 { lost.append(m) } else { #expect(try pair.bobReceives(m) == "m\(i)") }
        }
        #expect(pair.bob.skippedKeyCount == 3)  // index 9 is not known to be lost yet
        // The ratchet turns; lost messages of the old chain still open afterwards.
        let b = try pair.bobSends("turn")
        #expect(try pair.aliceReceives(b) == "turn")
        let a = try pair.aliceSends("new chain")
        #expect(try pair.bobReceives(a) == "new chain")
        for (n, m) in lost.enumerated() { #expect(try pair.bobReceives(m) == "m\(n * 3)") }
        #expect(pair.bob.skippedKeyCount == 0)
    }

    @Test func reorderedAcrossRatchetSteps() throws {
        var pair = try RatchetPair(seed: 25)
        let a1 = try pair.aliceSends("a1")
        let a2 = try pair.aliceSends("a2")
        #expect(try pair.bobReceives(a2) == "a2")
        let b1 = try pair.bobSends("b1")
        let b2 = try pair.bobSends("b2")
        #expect(try pair.aliceReceives(b2) == "b2")
        let a3 = try pair.aliceSends("a3")
        #expect(try pair.bobReceives(a3) == "a3")
        #expect(try pair.aliceReceives(b1) == "b1")
        #expect(try pair.bobReceives(a1) == "a1")
    }

    @Test func duplicateLeavesStateUnchanged() throws {
        var pair = try RatchetPair(seed: 26)
        let m1 = try pair.aliceSends("one")
        let m2 = try pair.aliceSends("two")
        let m3 = try pair.aliceSends("three")
        #expect(try pair.bobReceives(m3) == "three")  // m1, m2 now skipped
        #expect(try pair.bobReceives(m1) == "one")
        for replay in [m1, m3] {
            let before = pair.bobBytes
            #expect(throws: CryptoError.self) { try pair.bobReceives(replay) }
            #expect(pair.bobBytes == before)
        }
        #expect(try pair.bobReceives(m2) == "two")
        // The initial message replayed to the established session also fails without change.
        let before = pair.aliceBytes
        let b = try pair.bobSends("b")
        #expect(try pair.aliceReceives(b) == "b")
        let afterFirst = pair.aliceBytes
        #expect(afterFirst != before)
        #expect(throws: CryptoError.self) { try pair.aliceReceives(b) }
        #expect(pair.aliceBytes == afterFirst)
    }

    @Test func tamperedMessagesLeaveStateUnchanged() throws {
        var pair = try RatchetPair(seed: 27)
        // Tamper both within a chain and on a message that would step the ratchet.
        let b = try pair.bobSends("turn")
        let bytes = b.serialize()
        let before = pair.aliceBytes
        for position in [1, 5, 13, 40, 68, 69, 72, 73, bytes.count - 1] {
            var tampered = bytes
            tampered[position] ^= 0x04
            if let m = try? RatchetMessage(parsing: tampered) {
                #expect(throws: (any Error).self) { try pair.aliceReceives(m) }
            }
            #expect(pair.aliceBytes == before)
        }
        // Swapping headers between two valid messages fails too.
        let b2 = try pair.bobSends("second")
        let swapped = RatchetMessage(encryptedHeader: b2.encryptedHeader, body: b.body)
        #expect(throws: CryptoError.self) { try pair.aliceReceives(swapped) }
        #expect(pair.aliceBytes == before)
        #expect(try pair.aliceReceives(b) == "turn")
        #expect(try pair.aliceReceives(b2) == "second")
    }

    @Test func forgedRandomMessagesLeaveStateUnchanged() throws {
        var pair = try RatchetPair(seed: 28)
        var noise = SeededRandom(seed: 99)
        let before = pair.bobBytes
        for length in [16, 17, 100, 1000] {
            let forged = RatchetMessage(encryptedHeader: noise.bytes(RatchetMessage.encryptedHeaderLength), body: noise.bytes(length))
            #expect(throws: CryptoError.self) { try pair.bobReceives(forged) }
            #expect(pair.bobBytes == before)
        }
        // Another session's genuine message does not open here either.
        var other = try RatchetPair(seed: 29)
        let foreign = try other.aliceSends("foreign")
        #expect(throws: CryptoError.self) { try pair.bobReceives(foreign) }
        #expect(pair.bobBytes == before)
    }

    @Test func associatedDataIsBound() throws {
        var pair = try RatchetPair(seed: 30)
        let m = try pair.alice.ratchet.encrypt([1, 2, 3], associatedData: pair.alice.associatedData)
        var wrongAD = pair.bob.associatedData
        wrongAD[200] ^= 1
        var ratchet = pair.bob.ratchet
        #expect(throws: CryptoError.self) { try ratchet.decrypt(m, associatedData: wrongAD, now: 0, random: &pair.random) }
        #expect(try ratchet.decrypt(m, associatedData: pair.bob.associatedData, now: 0, random: &pair.random) == [1, 2, 3])
    }

    // MARK: Limits

    @Test func maxSkipPerChainAtAndPastTheLimit() throws {
        var pair = try RatchetPair(seed: 31)
        var messages: [RatchetMessage] = []
        for i in 0...(DoubleRatchet.maxSkipPerChain + 1) { messages.append(try pair.aliceSends("m\(i)")) }
        // Index maxSkipPerChain + 1 would skip one key too many (Bob already has index 0 = "hello").
        var tooFar = pair
        let before = tooFar.bobBytes
        #expect(throws: CryptoError.limitExceeded("message would skip \(DoubleRatchet.maxSkipPerChain + 1) keys, more than \(DoubleRatchet.maxSkipPerChain)")) {
            try tooFar.bobReceives(messages[DoubleRatchet.maxSkipPerChain + 1])
        }
        #expect(tooFar.bobBytes == before)
        // Index maxSkipPerChain skips exactly the limit.
        #expect(try pair.bobReceives(messages[DoubleRatchet.maxSkipPerChain]) == "m\(DoubleRatchet.maxSkipPerChain)")
        #expect(pair.bob.skippedKeyCount == DoubleRatchet.maxSkipPerChain)
        #expect(try pair.bobReceives(messages[0]) == "m0")
    }

    @Test func maxSkipPerChainAppliesToThePreviousChainOnARatchetStep() throws {
        var pair = try RatchetPair(seed: 32)
        for _ in 0...DoubleRatchet.maxSkipPerChain { _ = try pair.aliceSends("lost") }
        // Alice's next chain starts after she hears from Bob; its header names previous length.
        let b = try pair.bobSends("turn")
        #expect(try pair.aliceReceives(b) == "turn")
        let next = try pair.aliceSends("next chain")
        let before = pair.bobBytes
        #expect(throws: CryptoError.self) { try pair.bobReceives(next) }
        #expect(pair.bobBytes == before)
    }

    @Test func maxSkippedKeysTotalAtAndPastTheCap() throws {
        var pair = try RatchetPair(seed: 33)
        var oldest: RatchetMessage?
        var secondOldest: RatchetMessage?
        let chains = DoubleRatchet.maxSkippedKeysTotal / DoubleRatchet.maxSkipPerChain
        // Fill exactly to the cap: `chains` chains, each skipping maxSkipPerChain keys.
        for chain in 0..<chains {
            var skippedHere: [RatchetMessage] = []
            for _ in 0..<DoubleRatchet.maxSkipPerChain { skippedHere.append(try pair.aliceSends("skipped")) }
            if chain == 0 { oldest = skippedHere[0]; secondOldest = skippedHere[1] }
            let last = try pair.aliceSends("delivered \(chain)")
            #expect(try pair.bobReceives(last) == "delivered \(chain)")
            let b = try pair.bobSends("turn")
            #expect(try pair.aliceReceives(b) == "turn")
        }
        // Chain 0 skipped one fewer: "hello" (index 0) was delivered... so chain 0 holds index 1...
        #expect(pair.bob.skippedKeyCount == DoubleRatchet.maxSkippedKeysTotal)
        // One more skipped key evicts the oldest.
        _ = try pair.aliceSends("skipped")
        let last = try pair.aliceSends("delivered")
        #expect(try pair.bobReceives(last) == "delivered")
        #expect(pair.bob.skippedKeyCount == DoubleRatchet.maxSkippedKeysTotal)
        let oldestMessage = try #require(oldest)
        #expect(throws: CryptoError.self) { try pair.bobReceives(oldestMessage) }
        #expect(try pair.bobReceives(try #require(secondOldest)) == "skipped")
    }

    @Test func skippedKeysExpireAfterTheirLifetime() throws {
        var pair = try RatchetPair(seed: 34)
        let stored: UInt64 = 1_000_000
        let m0 = try pair.aliceSends("zero")
        let m1 = try pair.aliceSends("one")
        let m2 = try pair.aliceSends("two")
        #expect(try pair.bobReceives(m2, now: stored) == "two")
        // Exactly at the lifetime the key still opens.
        #expect(try pair.bobReceives(m0, now: stored + DoubleRatchet.skippedKeyLifetime) == "zero")
        // One second past, it is gone (and the failed attempt changes nothing).
        let before = pair.bobBytes
        #expect(throws: CryptoError.self) { try pair.bobReceives(m1, now: stored + DoubleRatchet.skippedKeyLifetime + 1) }
        #expect(pair.bobBytes == before)
        pair.bob.ratchet.expireSkippedKeys(now: stored + DoubleRatchet.skippedKeyLifetime + 1)
        #expect(pair.bob.skippedKeyCount == 0)
    }

    @Test func plaintextLengthLimit() throws {
        var pair = try RatchetPair(seed: 35)
        let atLimit = [UInt8](repeating: 7, count: RatchetMessage.maxPlaintextLength)
        let m = try pair.alice.encrypt(atLimit, localIdentity: pair.aliceIdentity.publicIdentity)
        #expect(try SessionMessage(parsing: m.serialize()) == m)
        #expect(try pair.bob.decrypt(RatchetPair.ratchetMessage(m), now: 0, random: &pair.random) == atLimit)
        #expect(throws: CryptoError.self) {
            try pair.alice.encrypt(atLimit + [0], localIdentity: pair.aliceIdentity.publicIdentity)
        }
    }

    @Test func sendIndexNeverWraps() throws {
        var pair = try RatchetPair(seed: 36)
        pair.alice.ratchet.sendIndex = UInt32.max - 1
        _ = try pair.aliceSends("last")
        let before = pair.aliceBytes
        #expect(throws: CryptoError.self) { try pair.aliceSends("wrap") }
        #expect(pair.aliceBytes == before)
    }
}
