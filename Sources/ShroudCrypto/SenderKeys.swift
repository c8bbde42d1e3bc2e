import Crypto
import CSodium
import ShroudWire

/// Sender Keys for channels: each member encrypts once per message under its own symmetric chain
/// and signs with its own per-sender Ed25519 key; members learn each other's chains through
/// distribution messages sent over the pairwise Double Ratchet sessions.
///
///     message key, next chain key = HMAC-SHA256(ck, 0x01), HMAC-SHA256(ck, 0x02)
///     key(32) ‖ nonce(12) = HKDF-SHA256(salt = 32 × 0x00, ikm = message key, info = messageKdfInfo, L = 44)
public enum SenderKeys {
    public static let messageKdfInfo = Array("shroud/v1/sender-key/message".utf8)
    public static let messageKdfSalt = [UInt8](repeating: 0, count: 32)
    public static let signatureLabel = Array("shroud/v1/sender-key/signature".utf8)
    /// How far ahead of the next expected iteration a message may be (skipped keys are kept for the gap).
    public static let maxForwardJump: UInt32 = 1000
    /// Most skipped message keys kept per sender key; beyond it the oldest are dropped.
    public static let maxSkippedKeys = 1000
    /// Older key ids kept per sender after a rotation, for messages still in flight.
    public static let maxStatesPerSender = 5

    static let messageKeysLength = 44

    /// Expands a raw message key into key(32) ‖ nonce(12).
    static func messageKeys(_ messageKey: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        messageKdfSalt.withUnsafeBytes { salt in
            messageKdfInfo.withUnsafeBytes { info in SessionPrimitives.hkdf(salt: salt, ikm: messageKey, info: info, into: out) }
        }
    }

    /// Opens a channel message's ciphertext with a raw message key.
    static func open(_ message: SenderKeyMessage, messageKey: UnsafeRawBufferPointer, associatedData: [UInt8]) throws -> [UInt8] {
        try withUnsafeTemporaryAllocation(byteCount: messageKeysLength, alignment: 16) { keys in
            defer { sodium_memzero(keys.baseAddress, keys.count) }
            messageKeys(messageKey, into: keys)
            let ad = SenderKeyMessage.header(keyId: message.keyId, iteration: message.iteration) + associatedData
            return try ad.withUnsafeBytes { a in
                try SessionPrimitives.open(key: UnsafeRawBufferPointer(rebasing: keys[0..<32]),
                                           nonce: UnsafeRawBufferPointer(rebasing: keys[32..<44]),
                                           sealed: message.ciphertext[...], associatedData: a, what: "channel message")
            }
        }
    }

    static func messageKeys(_ messageKey: SecureBytes) -> (key: SymmetricKey, nonce: [UInt8]) {
        let derived = HKDF<SHA256>.deriveKey(inputKeyMaterial: SessionPrimitives.symmetricKey(messageKey),
                                             salt: messageKdfSalt, info: messageKdfInfo, outputByteCount: 44)
        return derived.withUnsafeBytes { raw in
            (SymmetricKey(data: UnsafeRawBufferPointer(rebasing: raw[0..<32])), Array(raw[32..<44]))
        }
    }
}

/// A channel message. Wire layout (v1), big-endian:
///
///     version          u8  = 1
///     keyId            u32
///     iteration        u32
///     ciphertextLength u32  16 ... maxCiphertextLength
///     ciphertext       AES-256-GCM(key, plaintext, AD = version ‖ keyId ‖ iteration ‖ channel AD) ‖ tag
///     signature        64   Ed25519 over SenderKeys.signatureLabel ‖ all bytes above
public struct SenderKeyMessage: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let maxPlaintextLength = 256 * 1024
    public static let maxCiphertextLength = maxPlaintextLength + SessionPrimitives.tagLength
    public static let signatureLength = 64
    public static let fixedLength = 1 + 4 + 4 + 4 + signatureLength
    public static let maxLength = fixedLength + maxCiphertextLength

    public let keyId: UInt32
    public let iteration: UInt32
    public let ciphertext: [UInt8]
    public let signature: [UInt8]

    public init(keyId: UInt32, iteration: UInt32, ciphertext: [UInt8], signature: [UInt8]) {
        self.keyId = keyId
        self.iteration = iteration
        self.ciphertext = ciphertext
        self.signature = signature
    }

    static func header(keyId: UInt32, iteration: UInt32) -> [UInt8] {
        var w = ByteWriter(capacity: 9)
        w.write(version); w.write(keyId); w.write(iteration)
        return w.bytes
    }

    /// The bytes the signature covers.
    var signedBytes: [UInt8] {
        var w = ByteWriter(capacity: SenderKeys.signatureLabel.count + 13 + ciphertext.count)
        w.write(bytes: SenderKeys.signatureLabel)
        w.write(bytes: Self.header(keyId: keyId, iteration: iteration))
        w.write(UInt32(ciphertext.count))
        w.write(bytes: ciphertext)
        return w.bytes
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: Self.fixedLength + ciphertext.count)
        w.write(bytes: Self.header(keyId: keyId, iteration: iteration))
        w.write(UInt32(ciphertext.count))
        w.write(bytes: ciphertext)
        w.write(bytes: signature)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count <= Self.maxLength else {
            throw WireError.tooLarge(field: "sender key message", size: bytes.count, limit: Self.maxLength)
        }
        var r = ByteReader(bytes)
        try r.readVersion(expecting: Self.version, "sender key message")
        keyId = try r.readUInt32("key id")
        iteration = try r.readUInt32("iteration")
        let length = Int(try r.readUInt32("ciphertext length"))
        guard length >= SessionPrimitives.tagLength else {
            throw WireError.invalid(field: "ciphertext length", reason: "\(length) is shorter than the 16-byte tag")
        }
        guard length <= Self.maxCiphertextLength else {
            throw WireError.tooLarge(field: "sender key ciphertext", size: length, limit: Self.maxCiphertextLength)
        }
        ciphertext = try r.readBytes(length, "ciphertext")
        signature = try r.readBytes(Self.signatureLength, "signature")
        try r.rejectTrailingBytes("sender key message")
    }
}

/// Hands a member's sender key to another member. It carries a chain key, so it only ever travels
/// inside a pairwise Double Ratchet session (`seal(in:)`). Wire layout (v1):
///
///     version u8 = 1 ‖ keyId u32 ‖ iteration u32 ‖ chainKey 32 ‖ signingKey 32 (Ed25519 public)
public struct SenderKeyDistributionMessage: Sendable {
    public static let version: UInt8 = 1
    public static let length = 1 + 4 + 4 + 32 + 32

    public let keyId: UInt32
    public let iteration: UInt32
    public let chainKey: SecureBytes
    public let signingKey: [UInt8]

    public init(keyId: UInt32, iteration: UInt32, chainKey: SecureBytes, signingKey: [UInt8]) {
        self.keyId = keyId
        self.iteration = iteration
        self.chainKey = chainKey
        self.signingKey = signingKey
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: Self.length)
        w.write(Self.version); w.write(keyId); w.write(iteration); w.writeSecret(chainKey); w.write(bytes: signingKey)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count <= Self.length else {
            throw WireError.tooLarge(field: "sender key distribution", size: bytes.count, limit: Self.length)
        }
        var r = ByteReader(bytes)
        try r.readVersion(expecting: Self.version, "sender key distribution")
        keyId = try r.readUInt32("key id")
        iteration = try r.readUInt32("iteration")
        chainKey = try r.readSecret(32, "chain key")
        signingKey = try r.readBytes(32, "signing key")
        try r.rejectTrailingBytes("sender key distribution")
        guard (try? Curve25519.Signing.PublicKey(rawRepresentation: signingKey)) != nil else {
            throw CryptoError.invalidKey("sender signing key is not a valid Ed25519 key")
        }
    }

    /// Encrypts this distribution for one member through the pairwise session with it.
    public func seal(in session: inout Session, localIdentity: PublicIdentity) throws -> SessionMessage {
        try session.encrypt(serialize(), localIdentity: localIdentity)
    }

    /// Opens a distribution that arrived through the pairwise session; the session advances only
    /// if the message authenticates and parses.
    public static func open(_ message: RatchetMessage, in session: inout Session, now: UInt64,
                            random: inout some RandomSource) throws -> SenderKeyDistributionMessage {
        var working = session
        let plaintext = try working.decrypt(message, now: now, random: &random)
        let distribution = try SenderKeyDistributionMessage(parsing: plaintext)
        session = working
        return distribution
    }
}

/// Our own sending state in one channel.
public struct OwnSenderKey {
    public private(set) var keyId: UInt32
    public private(set) var iteration: UInt32
    var chainKey: ChainKey
    var signingSeed: SecureBytes
    public private(set) var signingKey: [UInt8]
    /// The private key object for `signingSeed`, built once per key id rather than per message
    /// (building it derives the public key, a scalar multiplication). swift-crypto zeroes it on release.
    private var signer: Curve25519.Signing.PrivateKey?

    public init(random: inout some RandomSource) {
        keyId = 0; iteration = 0
        chainKey = ChainKey { _ in }; signingSeed = SecureBytes(count: 32) { _ in }; signingKey = []
        rotate(random: &random)
    }

    init(keyId: UInt32, iteration: UInt32, chainKey: SecureBytes, signingSeed: SecureBytes) throws {
        self.keyId = keyId
        self.iteration = iteration
        self.chainKey = ChainKey(chainKey)
        self.signingSeed = signingSeed
        let signer = try signingSeed.withUnsafeBytes { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
        self.signer = signer
        signingKey = Array(signer.publicKey.rawRepresentation)
    }

    /// A fresh chain, signing key and key id. Call on every membership change (join, leave, kick)
    /// and then send the new distribution to the remaining members (DESIGN.md §1.4).
    public mutating func rotate(random: inout some RandomSource) {
        let previous = keyId
        var id: UInt32 = 0
        repeat {
            id = random.bytes(4).reduce(0) { $0 << 8 | UInt32($1) }
        } while id == previous
        keyId = id
        iteration = 0
        chainKey = ChainKey { random.fill($0) }
        signingSeed = SecureBytes(randomCount: 32, using: &random)
        // A 32-byte seed is always a valid Ed25519 private key.
        signer = signingSeed.withUnsafeBytes { try? Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
        signingKey = signer.map { Array($0.publicKey.rawRepresentation) } ?? []
    }

    public var distribution: SenderKeyDistributionMessage {
        let chain = chainKey
        return SenderKeyDistributionMessage(keyId: keyId, iteration: iteration,
                                            chainKey: SecureBytes(count: 32) { out in chain.withUnsafeBytes { out.copyMemory(from: $0) } },
                                            signingKey: signingKey)
    }

    /// Encrypts and signs one channel message. `associatedData` binds the channel (e.g. its id).
    public mutating func encrypt(_ plaintext: [UInt8], associatedData: [UInt8]) throws -> SenderKeyMessage {
        guard plaintext.count <= SenderKeyMessage.maxPlaintextLength else {
            throw CryptoError.limitExceeded("channel message of \(plaintext.count) bytes exceeds \(SenderKeyMessage.maxPlaintextLength)")
        }
        // The iteration names the key; it must never wrap under one key id (DESIGN.md §1.4).
        guard iteration < UInt32.max else { throw CryptoError.limitExceeded("sender key exhausted; rotate it") }
        guard let signer else { throw CryptoError.invalidKey("sender signing key is unavailable") }
        let header = SenderKeyMessage.header(keyId: keyId, iteration: iteration)
        let ad = header + associatedData
        let message: SenderKeyMessage = try withUnsafeTemporaryAllocation(byteCount: 32 + 32 + SenderKeys.messageKeysLength,
                                                                           alignment: 16) { scratch in
            defer { sodium_memzero(scratch.baseAddress, scratch.count) }
            let messageKey = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<32])
            let next = UnsafeMutableRawBufferPointer(rebasing: scratch[32..<64])
            let keys = UnsafeMutableRawBufferPointer(rebasing: scratch[64...])
            chainKey.withUnsafeBytes { SessionPrimitives.chainStep($0, messageKey: messageKey, nextChainKey: next) }
            SenderKeys.messageKeys(UnsafeRawBufferPointer(messageKey), into: keys)
            let ciphertext = try plaintext.withUnsafeBytes { p in
                try ad.withUnsafeBytes { a in
                    try SessionPrimitives.seal(key: UnsafeRawBufferPointer(rebasing: keys[0..<32]),
                                               nonce: UnsafeRawBufferPointer(rebasing: keys[32..<44]), plaintext: p, associatedData: a)
                }
            }
            let unsigned = SenderKeyMessage(keyId: keyId, iteration: iteration, ciphertext: ciphertext, signature: [])
            let signature = Array(try signer.signature(for: unsigned.signedBytes))
            ChainKey.advance(&chainKey, to: UnsafeRawBufferPointer(next))
            return SenderKeyMessage(keyId: keyId, iteration: iteration, ciphertext: ciphertext, signature: signature)
        }
        iteration += 1
        return message
    }

    /// Storage form (v1): version u8 ‖ keyId u32 ‖ iteration u32 ‖ chainKey 32 ‖ signingSeed 32.
    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 73)
        w.write(UInt8(1)); w.write(keyId); w.write(iteration); chainKey.withUnsafeBytes { w.write(bytes: $0) }; w.writeSecret(signingSeed)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        try r.readVersion(expecting: 1, "own sender key")
        let keyId = try r.readUInt32("key id")
        let iteration = try r.readUInt32("iteration")
        let chainKey = try r.readSecret(32, "chain key")
        let seed = try r.readSecret(32, "signing seed")
        try r.rejectTrailingBytes("own sender key")
        try self.init(keyId: keyId, iteration: iteration, chainKey: chainKey, signingSeed: seed)
    }
}

/// What we hold of one other member's sender key (one key id).
public struct SenderKeyState {
    public let keyId: UInt32
    public let signingKey: [UInt8]
    private let verifier: Curve25519.Signing.PublicKey?
    public private(set) var iteration: UInt32
    var chainKey: ChainKey
    var skipped: [(iteration: UInt32, messageKey: SecureBytes)] = []

    public init(distribution: SenderKeyDistributionMessage) {
        keyId = distribution.keyId
        signingKey = distribution.signingKey
        verifier = try? Curve25519.Signing.PublicKey(rawRepresentation: distribution.signingKey)
        iteration = distribution.iteration
        chainKey = ChainKey(distribution.chainKey)
    }

    public var skippedKeyCount: Int { skipped.count }

    /// Verifies the signature first, then derives the key on a copy; commits only after the
    /// ciphertext authenticated (DESIGN.md §1.5).
    public mutating func decrypt(_ message: SenderKeyMessage, associatedData: [UInt8]) throws -> [UInt8] {
        guard message.keyId == keyId else { throw CryptoError.invalidInput("message is for sender key \(message.keyId), not \(keyId)") }
        guard let verifier, verifier.isValidSignature(message.signature, for: message.signedBytes) else {
            throw CryptoError.badSignature("channel message signature does not verify")
        }
        // The next message in order: derive in scratch memory, advance only after it opened.
        if message.iteration == iteration, iteration < UInt32.max {
            let plaintext: [UInt8] = try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { scratch in
                defer { sodium_memzero(scratch.baseAddress, scratch.count) }
                let messageKey = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<32])
                let next = UnsafeMutableRawBufferPointer(rebasing: scratch[32..<64])
                chainKey.withUnsafeBytes { SessionPrimitives.chainStep($0, messageKey: messageKey, nextChainKey: next) }
                let plaintext = try SenderKeys.open(message, messageKey: UnsafeRawBufferPointer(messageKey), associatedData: associatedData)
                ChainKey.advance(&chainKey, to: UnsafeRawBufferPointer(next))
                return plaintext
            }
            iteration += 1
            return plaintext
        }
        var working = self
        let messageKey = try working.messageKey(for: message.iteration)
        let plaintext = try messageKey.withUnsafeBytes {
            try SenderKeys.open(message, messageKey: $0, associatedData: associatedData)
        }
        self = working
        return plaintext
    }

    private mutating func messageKey(for target: UInt32) throws -> SecureBytes {
        if target < iteration {
            guard let index = skipped.firstIndex(where: { $0.iteration == target }) else {
                throw CryptoError.authenticationFailed("duplicate or too old channel message (iteration \(target))")
            }
            return skipped.remove(at: index).messageKey
        }
        guard target - iteration <= SenderKeys.maxForwardJump else {
            throw CryptoError.limitExceeded(
                "channel message is \(target - iteration) iterations ahead, more than \(SenderKeys.maxForwardJump)")
        }
        // A sender never uses iteration UInt32.max (it must rotate first).
        guard target < UInt32.max else { throw CryptoError.limitExceeded("sender key exhausted") }
        var chain = chainKey.bytes
        defer { chain.withUnsafeMutableBytes { sodium_memzero($0.baseAddress, $0.count) } }
        var found: SecureBytes?
        while iteration <= target {
            let key = SecureBytes(count: 32) { mk in
                chain.withUnsafeMutableBytes { c in SessionPrimitives.chainStep(UnsafeRawBufferPointer(c), messageKey: mk, nextChainKey: c) }
            }
            if iteration == target { found = key } else { skipped.append((iteration, key)) }
            iteration += 1
        }
        if skipped.count > SenderKeys.maxSkippedKeys { skipped.removeFirst(skipped.count - SenderKeys.maxSkippedKeys) }
        chainKey = chain.withUnsafeBytes { ChainKey(copying: $0) }
        guard let found else { throw CryptoError.authenticationFailed("no key for iteration \(target)") }
        return found
    }

    func serialize(into w: inout ByteWriter) {
        w.write(keyId); w.write(bytes: signingKey); w.write(iteration); chainKey.withUnsafeBytes { w.write(bytes: $0) }
        w.write(UInt32(skipped.count))
        for entry in skipped { w.write(entry.iteration); w.writeSecret(entry.messageKey) }
    }

    init(reading r: inout ByteReader) throws {
        keyId = try r.readUInt32("key id")
        signingKey = try r.readBytes(32, "signing key")
        verifier = try? Curve25519.Signing.PublicKey(rawRepresentation: signingKey)
        iteration = try r.readUInt32("iteration")
        chainKey = ChainKey(try r.readSecret(32, "chain key"))
        let count = Int(try r.readUInt32("skipped count"))
        guard count <= SenderKeys.maxSkippedKeys else {
            throw WireError.tooLarge(field: "skipped sender keys", size: count, limit: SenderKeys.maxSkippedKeys)
        }
        skipped = try (0..<count).map { _ in (try r.readUInt32("skipped iteration"), try r.readSecret(32, "skipped key")) }
    }
}

/// Every key id we hold for one member in one channel, newest first.
public struct SenderKeyRecord {
    public static let version: UInt8 = 1
    public private(set) var states: [SenderKeyState] = []

    public init() {}

    /// Installs a member's distribution. A key id we already hold is not replaced (a replayed
    /// distribution must not rewind the chain).
    public mutating func process(_ distribution: SenderKeyDistributionMessage) {
        guard !states.contains(where: { $0.keyId == distribution.keyId }) else { return }
        states.insert(SenderKeyState(distribution: distribution), at: 0)
        if states.count > SenderKeys.maxStatesPerSender { states.removeLast(states.count - SenderKeys.maxStatesPerSender) }
    }

    public mutating func decrypt(_ message: SenderKeyMessage, associatedData: [UInt8]) throws -> [UInt8] {
        guard let index = states.firstIndex(where: { $0.keyId == message.keyId }) else {
            throw CryptoError.invalidInput("no sender key \(message.keyId) from this member; it may have rotated")
        }
        return try states[index].decrypt(message, associatedData: associatedData)
    }

    /// Storage form: version u8 ‖ count u8 ‖ count × (keyId u32 ‖ signingKey 32 ‖ iteration u32 ‖
    /// chainKey 32 ‖ skippedCount u32 ‖ skippedCount × (iteration u32 ‖ messageKey 32)).
    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.write(Self.version)
        w.write(UInt8(states.count))
        for s in states { s.serialize(into: &w) }
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        try r.readVersion(expecting: Self.version, "sender key record")
        let count = Int(try r.readUInt8("state count"))
        guard count <= SenderKeys.maxStatesPerSender else {
            throw WireError.tooLarge(field: "sender key states", size: count, limit: SenderKeys.maxStatesPerSender)
        }
        states = try (0..<count).map { _ in try SenderKeyState(reading: &r) }
        try r.rejectTrailingBytes("sender key record")
    }
}

/// Channel encryption over a `SenderKeyStore`: our own sender key per channel, the other members'
/// sender keys, and the membership-change rule (DESIGN.md §1.4). Store writes happen only after a
/// message authenticated (DESIGN.md §1.5).
public enum SenderKeyCipher {
    /// Our current distribution for a channel, creating our sender key on first use. Send it to each
    /// member through the pairwise session (`SenderKeyDistributionMessage.seal(in:localIdentity:)`).
    public static func ownDistribution(channel: [UInt8], store: some SenderKeyStore,
                                       random: inout some RandomSource) throws -> SenderKeyDistributionMessage {
        if let own = try store.ownSenderKey(channel: channel) { return own.distribution }
        let own = OwnSenderKey(random: &random)
        try store.storeOwnSenderKey(own, channel: channel)
        return own.distribution
    }

    public static func encrypt(_ plaintext: [UInt8], channel: [UInt8], store: some SenderKeyStore,
                               random: inout some RandomSource) throws -> SenderKeyMessage {
        var own = try store.ownSenderKey(channel: channel) ?? OwnSenderKey(random: &random)
        let message = try own.encrypt(plaintext, associatedData: channel)
        try store.storeOwnSenderKey(own, channel: channel)
        return message
    }

    /// Installs a member's distribution that arrived through the pairwise session with that member.
    public static func process(_ distribution: SenderKeyDistributionMessage, channel: [UInt8], sender: [UInt8],
                               store: some SenderKeyStore) throws {
        var record = try store.senderKeyRecord(channel: channel, sender: sender) ?? SenderKeyRecord()
        record.process(distribution)
        try store.storeSenderKeyRecord(record, channel: channel, sender: sender)
    }

    public static func decrypt(_ message: SenderKeyMessage, channel: [UInt8], sender: [UInt8],
                               store: some SenderKeyStore) throws -> [UInt8] {
        guard var record = try store.senderKeyRecord(channel: channel, sender: sender) else {
            throw CryptoError.invalidInput("no sender key from this member in this channel")
        }
        let plaintext = try record.decrypt(message, associatedData: channel)
        try store.storeSenderKeyRecord(record, channel: channel, sender: sender)
        return plaintext
    }

    /// A member left or was removed: forget everything received from them and rotate our own sender
    /// key. Returns the new distribution, to be sent to the remaining members only.
    public static func memberRemoved(_ member: [UInt8], channel: [UInt8], store: some SenderKeyStore,
                                     random: inout some RandomSource) throws -> SenderKeyDistributionMessage {
        try store.removeSender(channel: channel, sender: member)
        return try rotate(channel: channel, store: store, random: &random)
    }

    /// A member joined: rotate so the newcomer cannot read what was sent before. Returns the new
    /// distribution, to be sent to every member including the newcomer.
    public static func memberAdded(channel: [UInt8], store: some SenderKeyStore,
                                   random: inout some RandomSource) throws -> SenderKeyDistributionMessage {
        try rotate(channel: channel, store: store, random: &random)
    }

    static func rotate(channel: [UInt8], store: some SenderKeyStore, random: inout some RandomSource) throws -> SenderKeyDistributionMessage {
        var own = try store.ownSenderKey(channel: channel) ?? OwnSenderKey(random: &random)
        own.rotate(random: &random)
        try store.storeOwnSenderKey(own, channel: channel)
        return own.distribution
    }
}
