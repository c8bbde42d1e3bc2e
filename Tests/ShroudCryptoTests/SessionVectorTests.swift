import Foundation
import Testing
@testable import ShroudCrypto
import ShroudWire

/// Generates docs/vectors/{x3dh,double-ratchet-he,sender-keys}.json deterministically and checks
/// that the committed files are exactly what the code produces, so the document's vectors are
/// checked by the tests. Regenerate with SHROUD_UPDATE_VECTORS=1.
@Suite struct SessionVectorTests {
    static let updating = ProcessInfo.processInfo.environment["SHROUD_UPDATE_VECTORS"] == "1"

    static func json(_ object: Any) throws -> Data {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        data.append(0x0A)
        return data
    }

    static func check(_ name: String, _ object: [String: Any]) throws {
        let url = sessionRepositoryRoot.appendingPathComponent("docs/vectors/\(name)")
        let generated = try json(object)
        if updating {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try generated.write(to: url)
        }
        let committed = try Data(contentsOf: url)
        #expect(committed == generated, "docs/vectors/\(name) differs from what the code generates")
    }

    static func identityObject(_ seed: [UInt8], _ identity: IdentityKeyPair) -> [String: Any] {
        ["bip39_seed": Hex.encode(seed), "ed25519_seed": Hex.encode(identity.signingSeed.bytes), "x25519_secret": Hex.encode(identity.agreementSecret.bytes),
         "encoded": Hex.encode(identity.publicIdentity.sessionEncoding)]
    }

    // MARK: X3DH

    static func x3dhVector(oneTime: Bool, seed: UInt64) throws -> [String: Any] {
        var random = SeededRandom(seed: seed)
        let aliceSeed = random.bytes(64), bobSeed = random.bytes(64)
        let alice = try IdentityKeyPair(seed: SecureBytes(copying: aliceSeed))
        let bob = try IdentityKeyPair(seed: SecureBytes(copying: bobSeed))
        let spk = try SignedPreKey.generate(id: 1, identity: bob, now: 0, random: &random)
        let opk = oneTime ? OneTimePreKey.generate(id: 2, random: &random) : nil
        let bundle = try PreKeyBundle(identity: bob, signedPreKey: spk, oneTimePreKey: opk)
        let ephemeral = SessionPrimitives.generateAgreementKeyPair(using: &random)
        let start = try X3DH.initiate(identity: alice, bundle: bundle, ephemeral: ephemeral)
        var dhs = [try SessionPrimitives.agree(alice.agreementSecret, spk.publicKey),
                   try SessionPrimitives.agree(ephemeral.secret, bob.publicIdentity.agreementKey),
                   try SessionPrimitives.agree(ephemeral.secret, spk.publicKey)]
        if let opk { dhs.append(try SessionPrimitives.agree(ephemeral.secret, opk.publicKey)) }
        let responder = try X3DH.respond(identity: bob, initiator: alice.publicIdentity, ephemeralPublicKey: ephemeral.publicKey,
                                         signedPreKey: spk, oneTimePreKey: opk)
        #expect(responder.sharedKey.bytes == start.secrets.sharedKey.bytes)
        var object: [String: Any] = [
            "alice_identity": identityObject(aliceSeed, alice),
            "bob_identity": identityObject(bobSeed, bob),
            "bob_signed_prekey": ["id": Int(spk.id), "secret": Hex.encode(spk.secret.bytes), "public": Hex.encode(spk.publicKey),
                                  "signed_message": Hex.encode(SignedPreKey.signedMessage(id: spk.id, publicKey: spk.publicKey)),
                                  "signature": Hex.encode(spk.signature)],
            "bundle": Hex.encode(bundle.serialize()),
            "alice_ephemeral": ["secret": Hex.encode(ephemeral.secret.bytes), "public": Hex.encode(ephemeral.publicKey)],
            "dh": dhs.map { Hex.encode($0.bytes) },
            "kdf_input": Hex.encode(X3DH.keyMaterial(dhs).bytes),
            "kdf_salt": Hex.encode(X3DH.kdfSalt),
            "kdf_info": String(decoding: X3DH.kdfInfo, as: UTF8.self),
            "sk": Hex.encode(start.secrets.sharedKey.bytes),
            "hk_a": Hex.encode(start.secrets.initiatorHeaderKey.bytes),
            "nhk_b": Hex.encode(start.secrets.responderNextHeaderKey.bytes),
            "associated_data": Hex.encode(start.secrets.associatedData),
        ]
        if let opk {
            object["bob_one_time_prekey"] = ["id": Int(opk.id), "secret": Hex.encode(opk.secret.bytes), "public": Hex.encode(opk.publicKey)]
        }
        return object
    }

    @Test func x3dhVectorsMatchTheCommittedFile() throws {
        try Self.check("x3dh.json", [
            "description": "X3DH as in docs/CRYPTO.md §2; hex bytes; DH outputs in order DH1..DH4",
            "with_one_time_prekey": try Self.x3dhVector(oneTime: true, seed: 1001),
            "without_one_time_prekey": try Self.x3dhVector(oneTime: false, seed: 1002),
        ])
    }

    // MARK: Double Ratchet with header encryption

    static func stateObject(_ r: DoubleRatchet) -> [String: Any] {
        func h(_ s: SecureBytes?) -> Any { s.map { Hex.encode($0.bytes) } ?? NSNull() }
        func h(_ s: ChainKey?) -> Any { s.map { Hex.encode($0.bytes) } ?? NSNull() }
        return ["ratchet_secret": Hex.encode(r.ratchetSecret.bytes), "ratchet_public": Hex.encode(r.ratchetPublicKey),
                "remote_ratchet_key": r.remoteRatchetKey.map { Hex.encode($0) } ?? NSNull(), "root_key": Hex.encode(r.rootKey.bytes),
                "sending_chain_key": h(r.sendingChainKey), "receiving_chain_key": h(r.receivingChainKey),
                "sending_header_key": h(r.sendingHeaderKey), "receiving_header_key": h(r.receivingHeaderKey),
                "next_sending_header_key": Hex.encode(r.nextSendingHeaderKey.bytes),
                "next_receiving_header_key": Hex.encode(r.nextReceivingHeaderKey.bytes),
                "send_index": Int(r.sendIndex), "receive_index": Int(r.receiveIndex),
                "previous_send_count": Int(r.previousSendCount), "skipped_keys": r.skipped.count]
    }

    @Test func doubleRatchetVectorsMatchTheCommittedFile() throws {
        var pair = try RatchetPair(seed: 2001, oneTime: true)
        // RatchetPair already sent and delivered "hello"; script more traffic with one reordering.
        var steps: [[String: Any]] = []
        func send(_ fromAlice: Bool, _ text: String) throws -> RatchetMessage {
            let sender = fromAlice ? pair.alice.ratchet : pair.bob.ratchet
            let chainKey = SecureBytes(copying: try #require(sender.sendingChainKey).bytes)
            let headerKey = try #require(sender.sendingHeaderKey)
            let (_, messageKey) = SessionPrimitives.chainStep(chainKey)
            let keys = DoubleRatchet.messageKeys(messageKey)
            let header = RatchetHeader(ratchetKey: sender.ratchetPublicKey, previousChainLength: sender.previousSendCount,
                                       index: sender.sendIndex)
            let message = fromAlice ? try pair.aliceSends(text) : try pair.bobSends(text)
            steps.append([
                "sender": fromAlice ? "alice" : "bob", "plaintext": text,
                "sender_state_before": Self.stateObject(sender),
                "chain_key": Hex.encode(chainKey.bytes), "message_key": Hex.encode(messageKey.bytes),
                "body_key": Hex.encode(keys.bodyKey), "body_nonce": Hex.encode(keys.bodyNonce),
                "header_nonce": Hex.encode(keys.headerNonce), "header_key": Hex.encode(headerKey.bytes),
                "header_plaintext": Hex.encode(header.serialize()),
                "header_associated_data": Hex.encode(DoubleRatchet.headerAssociatedData(pair.alice.associatedData)),
                "body_associated_data": Hex.encode(DoubleRatchet.bodyAssociatedData(pair.alice.associatedData, message.encryptedHeader)),
                "wire": Hex.encode(message.serialize()),
            ])
            return message
        }
        func deliver(_ toBob: Bool, _ message: RatchetMessage, _ text: String) throws {
            let got = toBob ? try pair.bobReceives(message) : try pair.aliceReceives(message)
            #expect(got == text)
            steps.append(["deliver_to": toBob ? "bob" : "alice", "plaintext": text,
                          "receiver_state_after": Self.stateObject(toBob ? pair.bob.ratchet : pair.alice.ratchet)])
        }
        let initialAlice = Self.stateObject(pair.alice.ratchet)
        let initialBob = Self.stateObject(pair.bob.ratchet)
        let a1 = try send(true, "a1"), a2 = try send(true, "a2")
        try deliver(true, a2, "a2")
        try deliver(true, a1, "a1")          // out of order: opened with a skipped key
        let b1 = try send(false, "b1")
        try deliver(false, b1, "b1")         // DH ratchet step at Alice
        let a3 = try send(true, "a3")
        try deliver(true, a3, "a3")          // DH ratchet step at Bob
        try Self.check("double-ratchet-he.json", [
            "description": "Double Ratchet with header encryption; starts after X3DH (see setup) and the first message \"hello\"",
            "setup": [
                "seed_note": "RatchetPair(seed: 2001) in Tests/ShroudCryptoTests/SessionTestSupport.swift",
                "alice_identity": Hex.encode(pair.aliceIdentity.publicIdentity.sessionEncoding),
                "bob_identity": Hex.encode(pair.bobIdentity.publicIdentity.sessionEncoding),
                "associated_data": Hex.encode(pair.alice.associatedData),
                "root_kdf_info": String(decoding: DoubleRatchet.rootKdfInfo, as: UTF8.self),
                "message_kdf_info": String(decoding: DoubleRatchet.messageKdfInfo, as: UTF8.self),
                "message_kdf_salt": Hex.encode(DoubleRatchet.messageKdfSalt),
            ],
            "alice_state_after_hello": initialAlice,
            "bob_state_after_hello": initialBob,
            "steps": steps,
        ])
    }

    // MARK: Sender keys

    @Test func senderKeyVectorsMatchTheCommittedFile() throws {
        var random = SeededRandom(seed: 3001)
        var own = OwnSenderKey(random: &random)
        let channel = Array("channel-id".utf8)
        let distribution = own.distribution
        var receiver = SenderKeyRecord()
        receiver.process(distribution)
        var messages: [[String: Any]] = []
        for text in ["first", "second", "third"] {
            let chainKey = SecureBytes(copying: own.chainKey.bytes)
            let (_, messageKey) = SessionPrimitives.chainStep(chainKey)
            let keys = SenderKeys.messageKeys(messageKey)
            let iteration = own.iteration
            let m = try own.encrypt(Array(text.utf8), associatedData: channel)
            #expect(try receiver.decrypt(m, associatedData: channel) == Array(text.utf8))
            messages.append([
                "plaintext": text, "iteration": Int(iteration), "chain_key": Hex.encode(chainKey.bytes),
                "message_key": Hex.encode(messageKey.bytes), "key": keys.key.withUnsafeBytes { Hex.encode(Array($0)) },
                "nonce": Hex.encode(keys.nonce),
                "aead_associated_data": Hex.encode(SenderKeyMessage.header(keyId: m.keyId, iteration: m.iteration) + channel),
                "signed_bytes": Hex.encode(m.signedBytes), "signature": Hex.encode(m.signature), "wire": Hex.encode(m.serialize()),
            ])
        }
        try Self.check("sender-keys.json", [
            "description": "Sender keys: HMAC chain, HKDF key+nonce, AES-256-GCM, Ed25519 signature; channel AD = \"channel-id\"",
            "key_id": Int(distribution.keyId),
            "signing_seed": Hex.encode(own.signingSeed.bytes),
            "signing_public": Hex.encode(own.signingKey),
            "distribution": Hex.encode(distribution.serialize()),
            "message_kdf_info": String(decoding: SenderKeys.messageKdfInfo, as: UTF8.self),
            "signature_label": String(decoding: SenderKeys.signatureLabel, as: UTF8.self),
            "channel_associated_data": Hex.encode(channel),
            "messages": messages,
        ])
    }
}
