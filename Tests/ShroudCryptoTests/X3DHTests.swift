import Testing
@testable import ShroudCrypto
import ShroudWire

@Suite struct X3DHTests {
    func setup(seed: UInt64, oneTime: Bool) throws -> (IdentityKeyPair, IdentityKeyPair, SignedPreKey, OneTimePreKey?, SeededRandom) {
        var random = SeededRandom(seed: seed)
        let alice = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        let bob = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        let spk = try SignedPreKey.generate(id: 1, identity: bob, now: 0, random: &random)
        let opk = oneTime ? OneTimePreKey.generate(id: 2, random: &random) : nil
        return (alice, bob, spk, opk, random)
    }

    @Test(arguments: [true, false])
    func bothSidesAgree(oneTime: Bool) throws {
        var (alice, bob, spk, opk, random) = try setup(seed: 1, oneTime: oneTime)
        let bundle = try PreKeyBundle(identity: bob, signedPreKey: spk, oneTimePreKey: opk)
        let start = try X3DH.initiate(identity: alice, bundle: bundle, random: &random)
        let secrets = try X3DH.respond(identity: bob, initiator: alice.publicIdentity, ephemeralPublicKey: start.ephemeralPublicKey,
                                       signedPreKey: spk, oneTimePreKey: opk)
        #expect(start.secrets.sharedKey.bytes == secrets.sharedKey.bytes)
        #expect(start.secrets.initiatorHeaderKey.bytes == secrets.initiatorHeaderKey.bytes)
        #expect(start.secrets.responderNextHeaderKey.bytes == secrets.responderNextHeaderKey.bytes)
        #expect(start.secrets.associatedData == alice.publicIdentity.sessionEncoding + bob.publicIdentity.sessionEncoding)
        #expect(start.oneTimePreKeyId == opk?.id)
        // The three outputs are distinct keys.
        #expect(secrets.sharedKey.bytes != secrets.initiatorHeaderKey.bytes)
    }

    @Test func oneTimePreKeyChangesTheSecret() throws {
        var (alice, bob, spk, opk, random) = try setup(seed: 2, oneTime: true)
        let withOPK = try PreKeyBundle(identity: bob, signedPreKey: spk, oneTimePreKey: opk)
        let start = try X3DH.initiate(identity: alice, bundle: withOPK, random: &random)
        // The responder computing without the one-time key gets a different secret.
        let without = try X3DH.respond(identity: bob, initiator: alice.publicIdentity, ephemeralPublicKey: start.ephemeralPublicKey,
                                       signedPreKey: spk, oneTimePreKey: nil)
        #expect(start.secrets.sharedKey.bytes != without.sharedKey.bytes)
    }

    @Test func bundleWithBadSignatureIsRefused() throws {
        let (_, bob, spk, _, _) = try setup(seed: 3, oneTime: false)
        var signature = spk.signature
        signature[5] ^= 0x01
        #expect(throws: CryptoError.self) {
            try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: spk.id, signedPreKey: spk.publicKey,
                             signedPreKeySignature: signature)
        }
        // A signature for another id does not carry over.
        #expect(throws: CryptoError.self) {
            try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: spk.id + 1, signedPreKey: spk.publicKey,
                             signedPreKeySignature: spk.signature)
        }
        // Signed by someone else.
        let (mallory, _, _, _, _) = try setup(seed: 4, oneTime: false)
        #expect(throws: CryptoError.self) {
            try PreKeyBundle(identity: mallory.publicIdentity, signedPreKeyId: spk.id, signedPreKey: spk.publicKey,
                             signedPreKeySignature: spk.signature)
        }
    }

    @Test func bundleWithWrongLengthsIsRefused() throws {
        let (_, bob, spk, _, _) = try setup(seed: 5, oneTime: false)
        #expect(throws: CryptoError.self) {
            try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: 1, signedPreKey: Array(spk.publicKey.prefix(31)),
                             signedPreKeySignature: spk.signature)
        }
        #expect(throws: CryptoError.self) {
            try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: 1, signedPreKey: spk.publicKey,
                             signedPreKeySignature: spk.signature + [0])
        }
        #expect(throws: CryptoError.self) {
            try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: 1, signedPreKey: spk.publicKey,
                             signedPreKeySignature: spk.signature, oneTimePreKeyId: 3, oneTimePreKey: [UInt8](repeating: 9, count: 33))
        }
        #expect(throws: CryptoError.self) {
            try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: 1, signedPreKey: spk.publicKey,
                             signedPreKeySignature: spk.signature, oneTimePreKeyId: 3, oneTimePreKey: nil)
        }
    }

    /// Low-order points: every X25519 output with them is all zero.
    static let lowOrderPoints: [[UInt8]] = [
        [UInt8](repeating: 0, count: 32),
        [1] + [UInt8](repeating: 0, count: 31),
        [UInt8](hex: "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        [UInt8](hex: "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    ]

    @Test(arguments: lowOrderPoints)
    func lowOrderOneTimeKeyIsRefused(point: [UInt8]) throws {
        var (alice, bob, spk, _, random) = try setup(seed: 6, oneTime: false)
        // A signed prekey cannot be forged, but a relay could hand out a bad one-time key.
        let bundle = try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: spk.id, signedPreKey: spk.publicKey,
                                      signedPreKeySignature: spk.signature, oneTimePreKeyId: 1, oneTimePreKey: point)
        #expect(throws: CryptoError.self) { try X3DH.initiate(identity: alice, bundle: bundle, random: &random) }
    }

    @Test(arguments: lowOrderPoints)
    func lowOrderSignedPreKeyIsRefused(point: [UInt8]) throws {
        var (alice, bob, _, _, random) = try setup(seed: 7, oneTime: false)
        // Even correctly signed by the identity, a low-order prekey yields an all-zero DH.
        let signature = try bob.sign(SignedPreKey.signedMessage(id: 1, publicKey: point))
        let bundle = try PreKeyBundle(identity: bob.publicIdentity, signedPreKeyId: 1, signedPreKey: point,
                                      signedPreKeySignature: signature)
        #expect(throws: CryptoError.self) { try X3DH.initiate(identity: alice, bundle: bundle, random: &random) }
    }

    @Test(arguments: lowOrderPoints)
    func lowOrderEphemeralIsRefusedByResponder(point: [UInt8]) throws {
        let (alice, bob, spk, _, _) = try setup(seed: 8, oneTime: false)
        #expect(throws: CryptoError.self) {
            try X3DH.respond(identity: bob, initiator: alice.publicIdentity, ephemeralPublicKey: point,
                             signedPreKey: spk, oneTimePreKey: nil)
        }
    }

    @Test func bundleRoundTripsAndRejectsMalformedBytes() throws {
        let (_, bob, spk, opk, _) = try setup(seed: 9, oneTime: true)
        for key in [opk, nil] {
            let bundle = try PreKeyBundle(identity: bob, signedPreKey: spk, oneTimePreKey: key)
            let bytes = bundle.serialize()
            #expect(try PreKeyBundle(parsing: bytes) == bundle)
            for cut in 0..<bytes.count {
                #expect(throws: (any Error).self) { try PreKeyBundle(parsing: Array(bytes.prefix(cut))) }
            }
            #expect(throws: (any Error).self) { try PreKeyBundle(parsing: bytes + [0]) }
            var wrongVersion = bytes
            wrongVersion[0] = 2
            #expect(throws: WireError.self) { try PreKeyBundle(parsing: wrongVersion) }
            // Any flipped bit in the signed part or the identity is refused.
            var flipped = bytes
            flipped[1 + 128 + 4 + 3] ^= 0x80
            #expect(throws: CryptoError.self) { try PreKeyBundle(parsing: flipped) }
        }
        #expect(PreKeyBundle.maxLength == 266)
        let full = try PreKeyBundle(identity: bob, signedPreKey: spk, oneTimePreKey: opk).serialize()
        #expect(full.count == PreKeyBundle.maxLength)
        #expect(throws: WireError.self) { try PreKeyBundle(parsing: full + [0]) }
    }

    @Test func signedPreKeyRotationKeepsThePreviousKeyForTheGracePeriod() throws {
        var random = SeededRandom(seed: 10)
        let bob = try IdentityKeyPair(seed: SecureBytes(copying: random.bytes(64)))
        let store = InMemoryPreKeyStore()
        let t0: UInt64 = 1_700_000_000
        let first = try SignedPreKeyRotation.rotateIfDue(store: store, identity: bob, now: t0, random: &random)
        #expect(first.id == 1)
        // Not yet due: one second before the interval ends.
        let same = try SignedPreKeyRotation.rotateIfDue(store: store, identity: bob, now: t0 + SignedPreKeyRotation.rotationInterval - 1,
                                                        random: &random)
        #expect(same.id == 1)
        // Due exactly at the interval.
        let t1 = t0 + SignedPreKeyRotation.rotationInterval
        let second = try SignedPreKeyRotation.rotateIfDue(store: store, identity: bob, now: t1, random: &random)
        #expect(second.id == 2)
        #expect(store.signedPreKey(id: 1) != nil)
        // The previous key survives until grace period after its replacement... (a rotation happens
        // in between too, which must not drop it early)
        _ = try SignedPreKeyRotation.rotateIfDue(store: store, identity: bob, now: t1 + SignedPreKeyRotation.gracePeriod - 1,
                                                 random: &random)
        #expect(store.signedPreKey(id: 1) != nil)
        _ = try SignedPreKeyRotation.rotateIfDue(store: store, identity: bob, now: t1 + SignedPreKeyRotation.gracePeriod,
                                                 random: &random)
        #expect(store.signedPreKey(id: 1) == nil)
        // Every stored key carries a valid signature.
        for key in store.allSignedPreKeys() {
            #expect(bob.publicIdentity.isValidSignature(key.signature, for: SignedPreKey.signedMessage(id: key.id, publicKey: key.publicKey)))
            #expect(try SignedPreKey(parsing: key.serialize()).publicKey == key.publicKey)
        }
    }
}
