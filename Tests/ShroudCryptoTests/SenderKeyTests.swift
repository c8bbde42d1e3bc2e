import Testing
@testable import ShroudCrypto
import ShroudWire

@Suite struct SenderKeyTests {
    let channel = Array("channel-42".utf8)

    func receiver(of own: OwnSenderKey) -> SenderKeyRecord {
        var record = SenderKeyRecord()
        record.process(own.distribution)
        return record
    }

    @Test func signedMessagesOpenInOrderAndOutOfOrder() throws {
        var random = SeededRandom(seed: 80)
        var own = OwnSenderKey(random: &random)
        var bob = receiver(of: own)
        var messages: [SenderKeyMessage] = []
        for i in 0..<10 { messages.append(try own.encrypt(Array("m\(i)".utf8), associatedData: channel)) }
        for i in [0, 1, 5, 2, 9, 3, 4, 8, 7, 6] {
            #expect(try bob.decrypt(messages[i], associatedData: channel) == Array("m\(i)".utf8))
        }
        #expect(bob.states[0].skippedKeyCount == 0)
        #expect(messages.allSatisfy { $0.signature.count == SenderKeyMessage.signatureLength })
    }

    @Test func tamperedSignatureOrCiphertextIsRefusedAndStateUnchanged() throws {
        var random = SeededRandom(seed: 81)
        var own = OwnSenderKey(random: &random)
        var bob = receiver(of: own)
        let m = try own.encrypt(Array("hello".utf8), associatedData: channel)
        let before = bob.serialize()
        var badSignature = m.signature
        badSignature[10] ^= 1
        #expect(throws: CryptoError.badSignature("channel message signature does not verify")) {
            try bob.decrypt(SenderKeyMessage(keyId: m.keyId, iteration: m.iteration, ciphertext: m.ciphertext, signature: badSignature),
                            associatedData: channel)
        }
        #expect(bob.serialize() == before)
        var badCiphertext = m.ciphertext
        badCiphertext[0] ^= 1
        #expect(throws: CryptoError.badSignature("channel message signature does not verify")) {
            try bob.decrypt(SenderKeyMessage(keyId: m.keyId, iteration: m.iteration, ciphertext: badCiphertext, signature: m.signature),
                            associatedData: channel)
        }
        // Iteration moved forward: the signature covers it.
        #expect(throws: CryptoError.self) {
            try bob.decrypt(SenderKeyMessage(keyId: m.keyId, iteration: 500, ciphertext: m.ciphertext, signature: m.signature),
                            associatedData: channel)
        }
        #expect(bob.serialize() == before)
        // Another channel: the signature holds but AEAD fails, and state is unchanged.
        #expect(throws: CryptoError.self) { try bob.decrypt(m, associatedData: Array("other".utf8)) }
        #expect(bob.serialize() == before)
        #expect(try bob.decrypt(m, associatedData: channel) == Array("hello".utf8))
        // A replay fails and changes nothing.
        let after = bob.serialize()
        #expect(throws: CryptoError.self) { try bob.decrypt(m, associatedData: channel) }
        #expect(bob.serialize() == after)
    }

    @Test func forwardJumpAtAndPastTheWindow() throws {
        var random = SeededRandom(seed: 82)
        var own = OwnSenderKey(random: &random)
        let distribution = own.distribution
        var messages: [SenderKeyMessage] = []
        for _ in 0...(Int(SenderKeys.maxForwardJump) + 1) { messages.append(try own.encrypt([7], associatedData: channel)) }
        var tooFar = SenderKeyRecord()
        tooFar.process(distribution)
        let before = tooFar.serialize()
        #expect(throws: CryptoError.self) { try tooFar.decrypt(messages[Int(SenderKeys.maxForwardJump) + 1], associatedData: channel) }
        #expect(tooFar.serialize() == before)
        var bob = SenderKeyRecord()
        bob.process(distribution)
        #expect(try bob.decrypt(messages[Int(SenderKeys.maxForwardJump)], associatedData: channel) == [7])
        #expect(bob.states[0].skippedKeyCount == Int(SenderKeys.maxForwardJump))
        #expect(try bob.decrypt(messages[0], associatedData: channel) == [7])
    }

    @Test func skippedKeysAtAndPastTheCap() throws {
        var random = SeededRandom(seed: 83)
        var own = OwnSenderKey(random: &random)
        var bob = receiver(of: own)
        var messages: [SenderKeyMessage] = []
        for _ in 0..<(SenderKeys.maxSkippedKeys + 2) { messages.append(try own.encrypt([1], associatedData: channel)) }
        // Skip exactly the cap: all kept.
        _ = try bob.decrypt(messages[SenderKeys.maxSkippedKeys], associatedData: channel)
        #expect(bob.states[0].skippedKeyCount == SenderKeys.maxSkippedKeys)
        // The next message skips none; then one more skipped key drops the oldest.
        _ = try bob.decrypt(messages[SenderKeys.maxSkippedKeys + 1], associatedData: channel)
        #expect(bob.states[0].skippedKeyCount == SenderKeys.maxSkippedKeys)
        let messages2 = try (0..<2).map { _ in try own.encrypt([2], associatedData: channel) }
        _ = try bob.decrypt(messages2[1], associatedData: channel)
        #expect(bob.states[0].skippedKeyCount == SenderKeys.maxSkippedKeys)
        #expect(throws: CryptoError.self) { try bob.decrypt(messages[0], associatedData: channel) }
        #expect(try bob.decrypt(messages[1], associatedData: channel) == [1])
    }

    @Test func rotationLocksOutOldKeyHolders() throws {
        var random = SeededRandom(seed: 84)
        var own = OwnSenderKey(random: &random)
        var remaining = receiver(of: own)
        var removed = receiver(of: own)
        let oldKeyId = own.keyId
        _ = try remaining.decrypt(try own.encrypt([1], associatedData: channel), associatedData: channel)
        // Membership change: rotate, and send the new distribution only to the remaining member.
        own.rotate(random: &random)
        #expect(own.keyId != oldKeyId)
        #expect(own.iteration == 0)
        remaining.process(own.distribution)
        let secret = try own.encrypt(Array("after the kick".utf8), associatedData: channel)
        #expect(try remaining.decrypt(secret, associatedData: channel) == Array("after the kick".utf8))
        #expect(throws: CryptoError.self) { try removed.decrypt(secret, associatedData: channel) }
        // Even installing a stale distribution under the new key id would not help: the chain differs.
        var forged = SenderKeyRecord()
        forged.process(SenderKeyDistributionMessage(keyId: own.keyId, iteration: 0, chainKey: SecureBytes(count: 32) { _ in },
                                                    signingKey: own.signingKey))
        #expect(throws: CryptoError.self) { try forged.decrypt(secret, associatedData: channel) }
    }

    @Test func storeForgetsRemovedMembers() throws {
        var random = SeededRandom(seed: 85)
        let store = InMemorySenderKeyStore()
        let carol = OwnSenderKey(random: &random), dave = OwnSenderKey(random: &random)
        store.storeSenderKeyRecord(receiver(of: carol), channel: channel, sender: [1])
        store.storeSenderKeyRecord(receiver(of: dave), channel: channel, sender: [2])
        #expect(store.senders(channel: channel) == [[1], [2]])
        store.removeSender(channel: channel, sender: [2])
        #expect(store.senders(channel: channel) == [[1]])
        #expect(store.senderKeyRecord(channel: channel, sender: [2]) == nil)
    }

    @Test func distributionTravelsInsideThePairwiseSession() throws {
        var pair = try RatchetPair(seed: 86)
        var random = SeededRandom(seed: 87)
        let own = OwnSenderKey(random: &random)
        let sealed = try own.distribution.seal(in: &pair.alice, localIdentity: pair.aliceIdentity.publicIdentity)
        // The chain key never appears in the clear on the wire.
        let wire = sealed.serialize()
        let chainKey = own.distribution.chainKey.bytes
        #expect(!wire.indices.dropLast(31).contains { Array(wire[$0..<$0 + 32]) == chainKey })
        let opened = try SenderKeyDistributionMessage.open(RatchetPair.ratchetMessage(sealed), in: &pair.bob, now: 0, random: &pair.random)
        #expect(opened.serialize() == own.distribution.serialize())
        // Something that is not a distribution does not advance the session.
        let before = pair.bobBytes
        let notDistribution = try pair.aliceSends("plain text")
        #expect(throws: (any Error).self) {
            try SenderKeyDistributionMessage.open(notDistribution, in: &pair.bob, now: 0, random: &pair.random)
        }
        #expect(pair.bobBytes == before)
    }

    @Test func iterationNeverWraps() throws {
        var random = SeededRandom(seed: 88)
        let fresh = OwnSenderKey(random: &random)
        var own = try OwnSenderKey(keyId: 5, iteration: UInt32.max - 1, chainKey: SecureBytes(copying: fresh.chainKey.bytes), signingSeed: fresh.signingSeed)
        var bob = receiver(of: own)
        let last = try own.encrypt([1], associatedData: channel)
        #expect(throws: CryptoError.self) { try own.encrypt([2], associatedData: channel) }
        #expect(try bob.decrypt(last, associatedData: channel) == [1])
    }

    @Test func recordsRoundTrip() throws {
        var random = SeededRandom(seed: 89)
        var own = OwnSenderKey(random: &random)
        var bob = receiver(of: own)
        let ms = try (0..<4).map { _ in try own.encrypt([3], associatedData: channel) }
        _ = try bob.decrypt(ms[3], associatedData: channel)
        let bytes = bob.serialize()
        var reloaded = try SenderKeyRecord(parsing: bytes)
        #expect(reloaded.serialize() == bytes)
        #expect(try reloaded.decrypt(ms[1], associatedData: channel) == [3])
        let ownBytes = own.serialize()
        #expect(try OwnSenderKey(parsing: ownBytes).serialize() == ownBytes)
        for cut in 0..<ownBytes.count { #expect(throws: (any Error).self) { try OwnSenderKey(parsing: Array(ownBytes.prefix(cut))) } }
        let m = ms[0].serialize()
        #expect(try SenderKeyMessage(parsing: m) == ms[0])
        for cut in 0..<m.count { #expect(throws: WireError.self) { try SenderKeyMessage(parsing: Array(m.prefix(cut))) } }
        let d = own.distribution.serialize()
        #expect(d.count == SenderKeyDistributionMessage.length)
        for cut in 0..<d.count { #expect(throws: WireError.self) { try SenderKeyDistributionMessage(parsing: Array(d.prefix(cut))) } }
    }

    @Test func keepsAFewOldKeyIds() throws {
        var random = SeededRandom(seed: 90)
        var own = OwnSenderKey(random: &random)
        var bob = SenderKeyRecord()
        for _ in 0...SenderKeys.maxStatesPerSender {
            bob.process(own.distribution)
            own.rotate(random: &random)
        }
        #expect(bob.states.count == SenderKeys.maxStatesPerSender)
    }
}


@Suite struct SenderKeyCipherTests {
    let channel = Array("ops".utf8)

    @Test func kickRotatesAndForgets() throws {
        var random = SeededRandom(seed: 91)
        let alice = InMemorySenderKeyStore(), bob = InMemorySenderKeyStore(), carol = InMemorySenderKeyStore()
        let (a, b, c): ([UInt8], [UInt8], [UInt8]) = ([0xA], [0xB], [0xC])
        // Everyone hands their distribution to everyone else.
        let stores = [(a, alice), (b, bob), (c, carol)]
        for (id, store) in stores {
            let d = try SenderKeyCipher.ownDistribution(channel: channel, store: store, random: &random)
            for (other, otherStore) in stores where other != id { try SenderKeyCipher.process(d, channel: channel, sender: id, store: otherStore) }
        }
        let hello = try SenderKeyCipher.encrypt(Array("hello all".utf8), channel: channel, store: alice, random: &random)
        #expect(try SenderKeyCipher.decrypt(hello, channel: channel, sender: a, store: bob) == Array("hello all".utf8))
        #expect(try SenderKeyCipher.decrypt(hello, channel: channel, sender: a, store: carol) == Array("hello all".utf8))
        // Carol is kicked: Alice and Bob forget her keys and rotate; the new keys go to the remaining member.
        let aliceNew = try SenderKeyCipher.memberRemoved(c, channel: channel, store: alice, random: &random)
        let bobNew = try SenderKeyCipher.memberRemoved(c, channel: channel, store: bob, random: &random)
        try SenderKeyCipher.process(aliceNew, channel: channel, sender: a, store: bob)
        try SenderKeyCipher.process(bobNew, channel: channel, sender: b, store: alice)
        #expect(alice.senders(channel: channel) == [b])
        let secret = try SenderKeyCipher.encrypt(Array("without carol".utf8), channel: channel, store: alice, random: &random)
        #expect(try SenderKeyCipher.decrypt(secret, channel: channel, sender: a, store: bob) == Array("without carol".utf8))
        let carolBefore = carol.senderKeyRecord(channel: channel, sender: a)?.serialize()
        #expect(throws: CryptoError.self) { try SenderKeyCipher.decrypt(secret, channel: channel, sender: a, store: carol) }
        #expect(carol.senderKeyRecord(channel: channel, sender: a)?.serialize() == carolBefore)
        // Carol's own messages are no longer accepted by Alice.
        let fromCarol = try SenderKeyCipher.encrypt([1], channel: channel, store: carol, random: &random)
        #expect(throws: CryptoError.self) { try SenderKeyCipher.decrypt(fromCarol, channel: channel, sender: c, store: alice) }
    }

    @Test func joinRotatesSoTheNewcomerCannotReadThePast() throws {
        var random = SeededRandom(seed: 92)
        let alice = InMemorySenderKeyStore(), dave = InMemorySenderKeyStore()
        let before = try SenderKeyCipher.encrypt(Array("before dave".utf8), channel: channel, store: alice, random: &random)
        let d = try SenderKeyCipher.memberAdded(channel: channel, store: alice, random: &random)
        try SenderKeyCipher.process(d, channel: channel, sender: [0xA], store: dave)
        #expect(throws: CryptoError.self) { try SenderKeyCipher.decrypt(before, channel: channel, sender: [0xA], store: dave) }
        let after = try SenderKeyCipher.encrypt(Array("welcome".utf8), channel: channel, store: alice, random: &random)
        #expect(try SenderKeyCipher.decrypt(after, channel: channel, sender: [0xA], store: dave) == Array("welcome".utf8))
    }
}
