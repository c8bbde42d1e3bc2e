import Crypto
import Foundation
import Testing
import ShroudWire

/// Checks the committed vectors in docs/vectors with swift-crypto's standard primitives only (none
/// of ShroudCrypto's session code), the way another implementation would use them.
@Suite struct SessionVectorCheckTests {
    static func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: sessionRepositoryRoot.appendingPathComponent("docs/vectors/\(name)"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func bytes(_ object: [String: Any], _ key: String) throws -> [UInt8] {
        [UInt8](hex: try #require(object[key] as? String, "missing \(key)"))
    }

    static func dh(_ secret: [UInt8], _ pub: [UInt8]) throws -> [UInt8] {
        let key = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: secret)
        let shared = try key.sharedSecretFromKeyAgreement(with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: pub))
        return shared.withUnsafeBytes { Array($0) }
    }

    static func hkdf(_ ikm: [UInt8], salt: [UInt8], info: [UInt8], _ length: Int) -> [UInt8] {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: ikm), salt: salt, info: info, outputByteCount: length)
            .withUnsafeBytes { Array($0) }
    }

    static func hmac(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    static func gcmOpen(key: [UInt8], nonce: [UInt8], sealed: [UInt8], ad: [UInt8]) throws -> [UInt8] {
        let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonce), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
        return Array(try AES.GCM.open(box, using: SymmetricKey(data: key), authenticating: ad))
    }

    @Test(arguments: ["with_one_time_prekey", "without_one_time_prekey"])
    func x3dh(_ variant: String) throws {
        let v = try #require(try Self.load("x3dh.json")[variant] as? [String: Any])
        let alice = try #require(v["alice_identity"] as? [String: Any])
        let bob = try #require(v["bob_identity"] as? [String: Any])
        let spk = try #require(v["bob_signed_prekey"] as? [String: Any])
        let eph = try #require(v["alice_ephemeral"] as? [String: Any])
        let aliceEncoded = try Self.bytes(alice, "encoded"), bobEncoded = try Self.bytes(bob, "encoded")
        // Public keys are inside the 128-byte identity encodings: signing(32) ‖ agreement(32) ‖ signature(64).
        let bobAgreement = Array(bobEncoded[32..<64])
        var dhs = [try Self.dh(try Self.bytes(alice, "x25519_secret"), try Self.bytes(spk, "public")),
                   try Self.dh(try Self.bytes(eph, "secret"), bobAgreement),
                   try Self.dh(try Self.bytes(eph, "secret"), try Self.bytes(spk, "public"))]
        if let opk = v["bob_one_time_prekey"] as? [String: Any] {
            dhs.append(try Self.dh(try Self.bytes(eph, "secret"), try Self.bytes(opk, "public")))
        }
        #expect(dhs.map { Hex.encode($0) } == (v["dh"] as? [String]))
        let ikm = [UInt8](repeating: 0xFF, count: 32) + dhs.flatMap { $0 }
        let out = Self.hkdf(ikm, salt: [UInt8](repeating: 0, count: 32), info: Array("shroud/v1/x3dh".utf8), 96)
        #expect(Array(out[0..<32]) == (try Self.bytes(v, "sk")))
        #expect(Array(out[32..<64]) == (try Self.bytes(v, "hk_a")))
        #expect(Array(out[64..<96]) == (try Self.bytes(v, "nhk_b")))
        #expect(aliceEncoded + bobEncoded == (try Self.bytes(v, "associated_data")))
        // The signed prekey signature verifies with Bob's Ed25519 key over the labelled message.
        let verifier = try Curve25519.Signing.PublicKey(rawRepresentation: Array(bobEncoded[0..<32]))
        var message = Array("shroud/v1/x3dh/signed-prekey".utf8)
        let id = try #require(spk["id"] as? Int)
        message += [UInt8(id >> 24 & 0xFF), UInt8(id >> 16 & 0xFF), UInt8(id >> 8 & 0xFF), UInt8(id & 0xFF)] + (try Self.bytes(spk, "public"))
        #expect(message == (try Self.bytes(spk, "signed_message")))
        #expect(verifier.isValidSignature(try Self.bytes(spk, "signature"), for: message))
    }

    @Test func doubleRatchetSteps() throws {
        let v = try Self.load("double-ratchet-he.json")
        let steps = try #require(v["steps"] as? [[String: Any]])
        var checked = 0
        for step in steps where step["wire"] != nil {
            let ck = try Self.bytes(step, "chain_key")
            let mk = Self.hmac(ck, [0x01])
            #expect(mk == (try Self.bytes(step, "message_key")))
            let keys = Self.hkdf(mk, salt: [UInt8](repeating: 0, count: 32), info: Array("shroud/v1/ratchet/message".utf8), 56)
            #expect(Array(keys[0..<32]) == (try Self.bytes(step, "body_key")))
            #expect(Array(keys[32..<44]) == (try Self.bytes(step, "body_nonce")))
            #expect(Array(keys[44..<56]) == (try Self.bytes(step, "header_nonce")))
            // Wire: version ‖ header nonce 12 ‖ sealed header 56 ‖ body length u32 ‖ body.
            let wire = try Self.bytes(step, "wire")
            var reader = ByteReader(wire)
            #expect(try reader.readUInt8("version") == 1)
            let headerNonce = try reader.readBytes(12, "nonce")
            let sealedHeader = try reader.readBytes(56, "header")
            let length = Int(try reader.readUInt32("length"))
            let body = try reader.readBytes(length, "body")
            #expect(headerNonce == Array(keys[44..<56]))
            let header = try Self.gcmOpen(key: try Self.bytes(step, "header_key"), nonce: headerNonce, sealed: sealedHeader,
                                          ad: try Self.bytes(step, "header_associated_data"))
            #expect(header == (try Self.bytes(step, "header_plaintext")))
            let bodyAD = try Self.bytes(step, "body_associated_data")
            #expect(bodyAD == (try Self.bytes(v["setup"] as? [String: Any] ?? [:], "associated_data")) + [1] + headerNonce + sealedHeader)
            let plaintext = try Self.gcmOpen(key: Array(keys[0..<32]), nonce: Array(keys[32..<44]), sealed: body, ad: bodyAD)
            #expect(String(decoding: plaintext, as: UTF8.self) == step["plaintext"] as? String)
            checked += 1
        }
        #expect(checked == 4)
    }

    @Test func senderKeyMessages() throws {
        let v = try Self.load("sender-keys.json")
        let verifier = try Curve25519.Signing.PublicKey(rawRepresentation: try Self.bytes(v, "signing_public"))
        let channel = try Self.bytes(v, "channel_associated_data")
        let messages = try #require(v["messages"] as? [[String: Any]])
        var chainKey = Array((try Self.bytes(v, "distribution"))[9..<41])
        for m in messages {
            #expect(chainKey == (try Self.bytes(m, "chain_key")))
            let mk = Self.hmac(chainKey, [0x01])
            chainKey = Self.hmac(chainKey, [0x02])
            let keys = Self.hkdf(mk, salt: [UInt8](repeating: 0, count: 32), info: Array("shroud/v1/sender-key/message".utf8), 44)
            let wire = try Self.bytes(m, "wire")
            // version ‖ keyId ‖ iteration ‖ length ‖ ciphertext ‖ signature(64)
            let signed = Array("shroud/v1/sender-key/signature".utf8) + wire.dropLast(64)
            #expect(verifier.isValidSignature(Array(wire.suffix(64)), for: signed))
            let ciphertext = Array(wire[13..<(wire.count - 64)])
            let plaintext = try Self.gcmOpen(key: Array(keys[0..<32]), nonce: Array(keys[32..<44]), sealed: ciphertext,
                                             ad: Array(wire[0..<9]) + channel)
            #expect(String(decoding: plaintext, as: UTF8.self) == m["plaintext"] as? String)
        }
    }
}
