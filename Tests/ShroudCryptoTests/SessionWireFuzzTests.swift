import Testing
@testable import ShroudCrypto
import ShroudWire

/// Every session-layer parser on seeded random and mutated bytes: it parses or throws, never traps;
/// whatever parses re-serializes to the same bytes.
@Suite struct SessionWireFuzzTests {
    static var parsers: [(String, ([UInt8]) throws -> [UInt8])] { [
        ("bundle", { try PreKeyBundle(parsing: $0).serialize() }),
        ("prekey message", { try PreKeyMessage(parsing: $0).serialize() }),
        ("ratchet message", { try RatchetMessage(parsing: $0).serialize() }),
        ("session message", { try SessionMessage(parsing: $0).serialize() }),
        ("session record", { try SessionRecord(parsing: $0).serialize() }),
        ("sender key message", { try SenderKeyMessage(parsing: $0).serialize() }),
        ("distribution", { try SenderKeyDistributionMessage(parsing: $0).serialize() }),
        ("sender key record", { try SenderKeyRecord(parsing: $0).serialize() }),
        ("own sender key", { try OwnSenderKey(parsing: $0).serialize() }),
        ("signed prekey", { try SignedPreKey(parsing: $0).serialize() }),
        ("direct payload", { try DirectPayload(parsing: $0).serialize() }),
        ("channel payload", { try ChannelPayload(parsing: $0).serialize() }),
    ] }

    /// Valid samples of every format, to mutate.
    static func samples() throws -> [(String, [UInt8])] {
        var pair = try RatchetPair(seed: 70)
        var random = SeededRandom(seed: 71)
        let bob = try Party(seed: 72)
        let bundle = try bob.bundle()
        let alice = try Party(seed: 73)
        try alice.start(with: bob)
        let initial = try alice.send("fuzz", to: bob)
        var own = OwnSenderKey(random: &random)
        let channelMessage = try own.encrypt([1, 2, 3], associatedData: [])
        var record = SenderKeyRecord()
        record.process(own.distribution)
        _ = try pair.bobReceives(try pair.aliceSends("x"))
        return [("bundle", bundle.serialize()), ("session message", initial.serialize()),
                ("ratchet message", try pair.aliceSends("y").serialize()), ("session record", pair.bobBytes),
                ("sender key message", channelMessage.serialize()), ("distribution", own.distribution.serialize()),
                ("sender key record", record.serialize()), ("own sender key", own.serialize()),
                ("signed prekey", try SignedPreKey.generate(id: 1, identity: bob.identity, now: 1, random: &random).serialize()),
                ("direct payload", DirectPayload.senderKey(channel: try ChannelID([UInt8](repeating: 7, count: 16)),
                                                           distribution: own.distribution).serialize()),
                ("direct payload", DirectPayload.text(DirectText(sentAt: 5, text: "fuzz")).serialize()),
                ("channel payload", try ChannelPayload.text("fuzz", sentAt: 9).serialize()),
                ("channel payload", try ChannelPayload(kind: try #require(ChannelPayload.Kind(rawValue: 0x10)), sentAt: 1, body: [1, 2]).serialize())]
    }

    @Test func randomBytesNeverCrash() throws {
        var random = SeededRandom(seed: 77)
        for round in 0..<3_000 {
            let length = Int(random.bytes(2).reduce(0) { Int($0) << 8 | Int($1) }) % 600
            var bytes = random.bytes(length)
            if round % 2 == 0, !bytes.isEmpty { bytes[0] = 1 }  // get past the version byte
            for (name, parse) in Self.parsers {
                if let out = try? parse(bytes) { #expect(out == bytes, "\(name) re-serializes differently") }
            }
        }
    }

    @Test func mutatedValidMessagesNeverCrash() throws {
        var random = SeededRandom(seed: 78)
        let samples = try Self.samples()
        for (_, sample) in samples {
            for _ in 0..<300 {
                var bytes = sample
                let kind = random.bytes(1)[0] % 4
                let position = Int(random.bytes(2).reduce(0) { Int($0) << 8 | Int($1) }) % max(1, bytes.count)
                switch kind {
                case 0: if !bytes.isEmpty { bytes[position] ^= random.bytes(1)[0] | 1 }
                case 1: bytes = Array(bytes.prefix(position))
                case 2: bytes.insert(random.bytes(1)[0], at: position)
                default: if !bytes.isEmpty { bytes.remove(at: position) }
                }
                for (name, parse) in Self.parsers {
                    if let out = try? parse(bytes) { #expect(out == bytes, "\(name) re-serializes differently") }
                }
            }
        }
        // Each sample parses with its own parser.
        for (name, sample) in samples {
            let parse = try #require(Self.parsers.first { $0.0 == name }?.1)
            #expect(try parse(sample) == sample, "\(name)")
        }
    }

    @Test func lengthFieldsAreBounded() throws {
        // A ratchet message whose body length is one past the limit is refused before reading it.
        var w = ByteWriter()
        w.write(RatchetMessage.version)
        w.write(bytes: [UInt8](repeating: 0, count: RatchetMessage.encryptedHeaderLength))
        w.write(UInt32(RatchetMessage.maxBodyLength + 1))
        #expect(throws: WireError.tooLarge(field: "ratchet message body", size: RatchetMessage.maxBodyLength + 1,
                                           limit: RatchetMessage.maxBodyLength)) { try RatchetMessage(parsing: w.bytes) }
        // At the limit it is accepted.
        var atLimit = w
        atLimit = ByteWriter()
        atLimit.write(RatchetMessage.version)
        atLimit.write(bytes: [UInt8](repeating: 0, count: RatchetMessage.encryptedHeaderLength))
        atLimit.write(UInt32(RatchetMessage.maxBodyLength))
        atLimit.write(bytes: [UInt8](repeating: 0, count: RatchetMessage.maxBodyLength))
        #expect(try RatchetMessage(parsing: atLimit.bytes).body.count == RatchetMessage.maxBodyLength)
        #expect(throws: WireError.self) { try RatchetMessage(parsing: atLimit.bytes + [0]) }
        // Body shorter than a tag.
        var short = ByteWriter()
        short.write(RatchetMessage.version)
        short.write(bytes: [UInt8](repeating: 0, count: RatchetMessage.encryptedHeaderLength))
        short.write(UInt32(15))
        short.write(bytes: [UInt8](repeating: 0, count: 15))
        #expect(throws: WireError.self) { try RatchetMessage(parsing: short.bytes) }
        // Sender key ciphertext length past its limit.
        var s = ByteWriter()
        s.write(SenderKeyMessage.version); s.write(UInt32(1)); s.write(UInt32(0)); s.write(UInt32(SenderKeyMessage.maxCiphertextLength + 1))
        #expect(throws: WireError.self) { try SenderKeyMessage(parsing: s.bytes) }
        #expect(throws: WireError.self) { try SessionMessage(parsing: []) }
        #expect(throws: WireError.self) { try SessionMessage(parsing: [9]) }
    }
}

@Suite struct SessionLimitTests {
    @Test func initialMessageAtAndPastItsMaximumLength() throws {
        let alice = try Party(seed: 95), bob = try Party(seed: 96)
        let body = [UInt8](repeating: 1, count: RatchetMessage.maxBodyLength)
        let inner = RatchetMessage(encryptedHeader: [UInt8](repeating: 2, count: RatchetMessage.encryptedHeaderLength), body: body)
        let message = PreKeyMessage(initiator: alice.publicIdentity, ephemeralKey: bob.publicIdentity.agreementKey,
                                    signedPreKeyId: 1, oneTimePreKeyId: 2, message: inner)
        let bytes = message.serialize()
        #expect(bytes.count == PreKeyMessage.maxLength)
        #expect(try PreKeyMessage(parsing: bytes) == message)
        #expect(throws: WireError.tooLarge(field: "prekey message", size: PreKeyMessage.maxLength + 1, limit: PreKeyMessage.maxLength)) {
            try PreKeyMessage(parsing: bytes + [0])
        }
        let envelope = SessionMessage.preKey(message).serialize()
        #expect(envelope.count == SessionMessage.maxLength)
        #expect(try SessionMessage(parsing: envelope) == .preKey(message))
        #expect(throws: WireError.self) { try SessionMessage(parsing: envelope + [0]) }
    }

    @Test func senderKeyPlaintextAtAndPastTheLimit() throws {
        var random = SeededRandom(seed: 97)
        var own = OwnSenderKey(random: &random)
        var record = SenderKeyRecord()
        record.process(own.distribution)
        let atLimit = [UInt8](repeating: 3, count: SenderKeyMessage.maxPlaintextLength)
        let m = try own.encrypt(atLimit, associatedData: [])
        let bytes = m.serialize()
        #expect(bytes.count == SenderKeyMessage.maxLength)
        #expect(try record.decrypt(try SenderKeyMessage(parsing: bytes), associatedData: []) == atLimit)
        #expect(throws: WireError.self) { try SenderKeyMessage(parsing: bytes + [0]) }
        #expect(throws: CryptoError.self) { try own.encrypt(atLimit + [0], associatedData: []) }
    }

    @Test func tamperedMessageLeavesTheStoredRecordUnchanged() throws {
        let alice = try Party(seed: 98), bob = try Party(seed: 99)
        try alice.start(with: bob)
        _ = try bob.receive(try alice.send("hi", to: bob), from: alice)
        guard case let .ratchet(reply) = try bob.send("reply", to: alice) else { Issue.record("expected ratchet"); return }
        let stored = alice.record(with: bob)
        var body = reply.body
        body[body.count - 1] ^= 1
        #expect(throws: CryptoError.self) {
            try alice.receive(.ratchet(RatchetMessage(encryptedHeader: reply.encryptedHeader, body: body)), from: bob)
        }
        #expect(alice.record(with: bob) == stored)
        #expect(try alice.receive(.ratchet(reply), from: bob) == "reply")
        #expect(alice.record(with: bob) != stored)
    }
}
