import Crypto
import CSodium
import ShroudWire

/// One message of the header-encrypted Double Ratchet. Wire layout (v1), big-endian:
///
///     version        u8  = 1
///     headerNonce    12   AES-GCM nonce of the header
///     header         56   AES-256-GCM(HK, header plaintext) = 40-byte ciphertext ‖ 16-byte tag
///     bodyLength     u32  16 ... maxBodyLength
///     body           AES-256-GCM(message key, plaintext) = ciphertext ‖ 16-byte tag
///
/// Header plaintext (40 bytes): ratchetKey(32, X25519 public) ‖ previousChainLength u32 ‖ index u32.
public struct RatchetMessage: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let headerPlaintextLength = 32 + 4 + 4
    public static let encryptedHeaderLength = SessionPrimitives.nonceLength + headerPlaintextLength + SessionPrimitives.tagLength
    /// Largest plaintext a ratchet message carries: text, signalling, keys (files travel P2P).
    public static let maxPlaintextLength = 256 * 1024
    public static let maxBodyLength = maxPlaintextLength + SessionPrimitives.tagLength
    public static let fixedLength = 1 + encryptedHeaderLength + 4
    public static let maxLength = fixedLength + maxBodyLength

    public let encryptedHeader: [UInt8]  // nonce ‖ sealed header, 68 bytes
    public let body: [UInt8]

    public init(encryptedHeader: [UInt8], body: [UInt8]) {
        self.encryptedHeader = encryptedHeader
        self.body = body
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: Self.fixedLength + body.count)
        w.write(Self.version)
        w.write(bytes: encryptedHeader)
        w.write(UInt32(body.count))
        w.write(bytes: body)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count <= Self.maxLength else {
            throw WireError.tooLarge(field: "ratchet message", size: bytes.count, limit: Self.maxLength)
        }
        var r = ByteReader(bytes)
        try r.readVersion(expecting: Self.version, "ratchet message")
        encryptedHeader = try r.readBytes(Self.encryptedHeaderLength, "encrypted header")
        let length = Int(try r.readUInt32("body length"))
        guard length >= SessionPrimitives.tagLength else {
            throw WireError.invalid(field: "body length", reason: "\(length) is shorter than the 16-byte tag")
        }
        guard length <= Self.maxBodyLength else {
            throw WireError.tooLarge(field: "ratchet message body", size: length, limit: Self.maxBodyLength)
        }
        body = try r.readBytes(length, "body")
        try r.rejectTrailingBytes("ratchet message")
    }
}

/// The decrypted header of a ratchet message.
struct RatchetHeader {
    let ratchetKey: [UInt8]
    let previousChainLength: UInt32
    let index: UInt32

    func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: RatchetMessage.headerPlaintextLength)
        w.write(bytes: ratchetKey); w.write(previousChainLength); w.write(index)
        return w.bytes
    }

    init(ratchetKey: [UInt8], previousChainLength: UInt32, index: UInt32) {
        self.ratchetKey = ratchetKey
        self.previousChainLength = previousChainLength
        self.index = index
    }

    init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        ratchetKey = try r.readBytes(32, "header ratchet key")
        previousChainLength = try r.readUInt32("header previous chain length")
        index = try r.readUInt32("header index")
        try r.rejectTrailingBytes("ratchet header")
    }
}

/// A message key kept for a message that has not arrived yet.
struct SkippedMessageKey {
    let headerKey: SecureBytes
    let index: UInt32
    let messageKey: SecureBytes
    /// Seconds since the Unix epoch when the key was stored; drives expiry.
    let storedAt: UInt64
}

/// The Double Ratchet with header encryption (Signal's Double Ratchet specification, §4), as a value.
///
/// `decrypt` runs on a copy and assigns it back only after the body authenticated, so a forged,
/// tampered, replayed or too-far-ahead message leaves the state exactly as it was (DESIGN.md §1.5).
public struct DoubleRatchet {
    /// Most message keys one chain may skip in one go (Signal's MAX_SKIP).
    public static let maxSkipPerChain = 1000
    /// Most skipped message keys held across all chains; beyond it the oldest are dropped.
    public static let maxSkippedKeysTotal = 2000
    /// Skipped keys older than this (seconds) are dropped and their messages no longer open.
    public static let skippedKeyLifetime: UInt64 = 30 * 24 * 3600

    public static let rootKdfInfo = Array("shroud/v1/ratchet/root".utf8)
    public static let messageKdfInfo = Array("shroud/v1/ratchet/message".utf8)
    public static let messageKdfSalt = [UInt8](repeating: 0, count: 32)

    var ratchetSecret: SecureBytes
    var ratchetPrivateKey: Curve25519.KeyAgreement.PrivateKey
    var ratchetPublicKey: [UInt8]
    var remoteRatchetKey: [UInt8]?
    var rootKey: SecureBytes
    var sendingChainKey: ChainKey?
    var receivingChainKey: ChainKey?
    var sendingHeaderKey: SecureBytes?
    var receivingHeaderKey: SecureBytes?
    var nextSendingHeaderKey: SecureBytes
    var nextReceivingHeaderKey: SecureBytes
    var sendIndex: UInt32 = 0
    var receiveIndex: UInt32 = 0
    var previousSendCount: UInt32 = 0
    var skipped: [SkippedMessageKey] = []

    /// RatchetInitAliceHE: the initiator knows the responder's signed prekey as its first remote
    /// ratchet key and can send at once.
    public static func initiator(secrets: X3DH.SharedSecrets, remoteRatchetKey: [UInt8],
                                 random: inout some RandomSource) throws -> DoubleRatchet {
        let pair = SessionPrimitives.generateAgreementKeyPair(using: &random)
        let (root, chain, nextHeader) = try rootStep(secrets.sharedKey, SessionPrimitives.agree(pair.secret, remoteRatchetKey))
        var state = try DoubleRatchet(ratchetSecret: pair.secret, rootKey: root,
                                  nextSendingHeaderKey: nextHeader, nextReceivingHeaderKey: secrets.responderNextHeaderKey)
        state.remoteRatchetKey = remoteRatchetKey
        state.sendingChainKey = ChainKey(chain)
        state.sendingHeaderKey = secrets.initiatorHeaderKey
        return state
    }

    /// RatchetInitBobHE: the responder's ratchet key pair is its signed prekey; it can send only
    /// after the first message arrives.
    public static func responder(secrets: X3DH.SharedSecrets, signedPreKey: SignedPreKey) throws -> DoubleRatchet {
        try DoubleRatchet(ratchetSecret: signedPreKey.secret, rootKey: secrets.sharedKey,
                      nextSendingHeaderKey: secrets.responderNextHeaderKey, nextReceivingHeaderKey: secrets.initiatorHeaderKey)
    }

    init(ratchetSecret: SecureBytes, rootKey: SecureBytes,
         nextSendingHeaderKey: SecureBytes, nextReceivingHeaderKey: SecureBytes) throws {
        self.ratchetSecret = ratchetSecret
        ratchetPrivateKey = try SessionPrimitives.agreementPrivateKey(ratchetSecret)
        ratchetPublicKey = Array(ratchetPrivateKey.publicKey.rawRepresentation)
        self.rootKey = rootKey
        self.nextSendingHeaderKey = nextSendingHeaderKey
        self.nextReceivingHeaderKey = nextReceivingHeaderKey
    }

    /// KDF_RK_HE: HKDF-SHA256(salt = root key, ikm = DH output, info = rootKdfInfo, L = 96)
    /// → new root key ‖ chain key ‖ next header key.
    static func rootStep(_ rootKey: SecureBytes, _ dhOutput: SecureBytes) throws -> (SecureBytes, SecureBytes, SecureBytes) {
        let out = SessionPrimitives.hkdf(ikm: dhOutput, secretSalt: rootKey, info: rootKdfInfo, outputLength: 96)
        let p = SessionPrimitives.split(out, [32, 32, 32])
        return (p[0], p[1], p[2])
    }

    /// Per-message keys: HKDF-SHA256(salt = 32 × 0x00, ikm = message key, info = messageKdfInfo, L = 56)
    /// → body key(32) ‖ body nonce(12) ‖ header nonce(12). Message keys are unique per message, so
    /// each nonce is used once under its key; the header nonce is a PRF output of a unique key, which
    /// is as good as a random 96-bit nonce under the header key (which changes every DH step).
    static let messageKeysLength = 56

    /// Expands a message key (raw) into body key ‖ body nonce ‖ header nonce (raw, 56 bytes).
    static func messageKeys(_ messageKey: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        messageKdfSalt.withUnsafeBytes { salt in
            messageKdfInfo.withUnsafeBytes { info in SessionPrimitives.hkdf(salt: salt, ikm: messageKey, info: info, into: out) }
        }
    }

    /// The same expansion as values, for tests and vectors.
    struct MessageKeys {
        let bodyKey: [UInt8]
        let bodyNonce: [UInt8]
        let headerNonce: [UInt8]
    }

    static func messageKeys(_ messageKey: SecureBytes) -> MessageKeys {
        var out = [UInt8](repeating: 0, count: messageKeysLength)
        messageKey.withUnsafeBytes { mk in out.withUnsafeMutableBytes { messageKeys(mk, into: $0) } }
        return MessageKeys(bodyKey: Array(out[0..<32]), bodyNonce: Array(out[32..<44]), headerNonce: Array(out[44..<56]))
    }

    /// Header AEAD associated data = version ‖ session AD; body AD = session AD ‖ version ‖ encrypted header.
    static func headerAssociatedData(_ ad: [UInt8]) -> [UInt8] { [RatchetMessage.version] + ad }

    static func bodyAssociatedData(_ ad: [UInt8], _ encryptedHeader: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(ad.count + 1 + encryptedHeader.count)
        out.append(contentsOf: ad)
        out.append(RatchetMessage.version)
        out.append(contentsOf: encryptedHeader)
        return out
    }

    public var canSend: Bool { sendingChainKey != nil && sendingHeaderKey != nil }

    /// RatchetEncryptHE.
    public mutating func encrypt(_ plaintext: [UInt8], associatedData: [UInt8]) throws -> RatchetMessage {
        guard plaintext.count <= RatchetMessage.maxPlaintextLength else {
            throw CryptoError.limitExceeded("message of \(plaintext.count) bytes exceeds \(RatchetMessage.maxPlaintextLength)")
        }
        guard sendingChainKey != nil, let headerKey = sendingHeaderKey else {
            throw CryptoError.invalidInput("this session cannot send before it has received the first message")
        }
        // Keys rotate with every DH step; a chain this long must not wrap its index (DESIGN.md §1.4).
        guard sendIndex < UInt32.max else { throw CryptoError.limitExceeded("sending chain exhausted; wait for a reply") }
        let header = RatchetHeader(ratchetKey: ratchetPublicKey, previousChainLength: previousSendCount, index: sendIndex)
            .serialize()
        let headerAD = Self.headerAssociatedData(associatedData)
        // Scratch: message key 0..<32, next chain key 32..<64, message keys 64..<120 (zeroed after use).
        let message: RatchetMessage = try withUnsafeTemporaryAllocation(byteCount: 120, alignment: 16) { scratch in
            defer { sodium_memzero(scratch.baseAddress, scratch.count) }
            let messageKey = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<32])
            let keys = UnsafeMutableRawBufferPointer(rebasing: scratch[64..<120])
            sendingChainKey?.withUnsafeBytes {
                SessionPrimitives.chainStep($0, messageKey: messageKey, nextChainKey: UnsafeMutableRawBufferPointer(rebasing: scratch[32..<64]))
            }
            Self.messageKeys(UnsafeRawBufferPointer(messageKey), into: keys)
            let headerNonce = UnsafeRawBufferPointer(rebasing: keys[44..<56])
            let sealedHeader = try headerKey.withUnsafeBytes { hk in
                try header.withUnsafeBytes { h in
                    try headerAD.withUnsafeBytes { ad in
                        try SessionPrimitives.seal(key: hk, nonce: headerNonce, plaintext: h, associatedData: ad)
                    }
                }
            }
            let encryptedHeader = Array(headerNonce) + sealedHeader
            let bodyAD = Self.bodyAssociatedData(associatedData, encryptedHeader)
            let body = try plaintext.withUnsafeBytes { p in
                try bodyAD.withUnsafeBytes { ad in
                    try SessionPrimitives.seal(key: UnsafeRawBufferPointer(rebasing: keys[0..<32]),
                                               nonce: UnsafeRawBufferPointer(rebasing: keys[32..<44]), plaintext: p, associatedData: ad)
                }
            }
            Self.advance(&sendingChainKey, to: UnsafeRawBufferPointer(rebasing: scratch[32..<64]))
            return RatchetMessage(encryptedHeader: encryptedHeader, body: body)
        }
        sendIndex += 1
        return message
    }

    /// Moves a chain to its next key: in place when this state is the key's only holder, otherwise
    /// (a copy of the state shares it) into a fresh key, so copies never see each other's changes.
    static func advance(_ chainKey: inout ChainKey?, to next: UnsafeRawBufferPointer) {
        // (The non-optional form is ChainKey.advance.)
        if chainKey != nil, isKnownUniquelyReferenced(&chainKey) {
            chainKey?.overwrite(from: next)
        } else {
            chainKey = ChainKey(copying: next)
        }
    }

    /// RatchetDecryptHE, committing only on success.
    public mutating func decrypt(_ message: RatchetMessage, associatedData: [UInt8], now: UInt64,
                                 random: inout some RandomSource) throws -> [UInt8] {
        if let plaintext = try decryptNextInChain(message, associatedData: associatedData) { return plaintext }
        var working = self
        let plaintext = try working.decryptInPlace(message, associatedData: associatedData, now: now, random: &random)
        self = working
        return plaintext
    }

    /// The common case without copying the state: the message is the next one of the current
    /// receiving chain. (No skipped key can belong to it: skipped keys of this chain have lower
    /// indexes, and other chains have other header keys; expiry waits for the next general-path
    /// message or `expireSkippedKeys`.) Returns nil when the message needs the general path; throws
    /// (changing nothing) when it is the next message but does not authenticate.
    private mutating func decryptNextInChain(_ message: RatchetMessage, associatedData: [UInt8]) throws -> [UInt8]? {
        guard receivingChainKey != nil, let headerKey = receivingHeaderKey,
              let header = Self.openHeader(message, headerKey: headerKey, associatedData: associatedData),
              header.index == receiveIndex, receiveIndex < UInt32.max else { return nil }
        let plaintext: [UInt8] = try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { scratch in
            defer { sodium_memzero(scratch.baseAddress, scratch.count) }
            let messageKey = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<32])
            let next = UnsafeMutableRawBufferPointer(rebasing: scratch[32..<64])
            receivingChainKey?.withUnsafeBytes { SessionPrimitives.chainStep($0, messageKey: messageKey, nextChainKey: next) }
            let plaintext = try Self.openBody(message, messageKey: UnsafeRawBufferPointer(messageKey), associatedData: associatedData)
            Self.advance(&receivingChainKey, to: UnsafeRawBufferPointer(next))
            return plaintext
        }
        receiveIndex += 1
        return plaintext
    }

    static func openHeader(_ message: RatchetMessage, headerKey: SecureBytes, associatedData: [UInt8]) -> RatchetHeader? {
        let encrypted = message.encryptedHeader
        guard encrypted.count == RatchetMessage.encryptedHeaderLength else { return nil }
        let headerAD = headerAssociatedData(associatedData)
        let plain: [UInt8]? = headerKey.withUnsafeBytes { hk in
            encrypted.withUnsafeBytes { e in
                headerAD.withUnsafeBytes { ad in
                    try? SessionPrimitives.open(key: hk, nonce: UnsafeRawBufferPointer(rebasing: e[0..<SessionPrimitives.nonceLength]),
                                                sealed: encrypted[SessionPrimitives.nonceLength...], associatedData: ad, what: "header")
                }
            }
        }
        guard let plain else { return nil }
        return try? RatchetHeader(parsing: plain)
    }

    static func openBody(_ message: RatchetMessage, messageKey: UnsafeRawBufferPointer, associatedData: [UInt8]) throws -> [UInt8] {
        try withUnsafeTemporaryAllocation(byteCount: messageKeysLength, alignment: 16) { keys in
            defer { sodium_memzero(keys.baseAddress, keys.count) }
            messageKeys(messageKey, into: keys)
            // The header nonce is bound to the message key: a header moved onto another body fails here.
            let sentNonce = message.encryptedHeader.prefix(SessionPrimitives.nonceLength)
            let expected = UnsafeRawBufferPointer(rebasing: keys[44..<56])
            let sameNonce = sentNonce.count == SessionPrimitives.nonceLength && sentNonce.withUnsafeBytes {
                sodium_memcmp($0.baseAddress, expected.baseAddress, SessionPrimitives.nonceLength) == 0
            }
            guard sameNonce else {
                throw CryptoError.authenticationFailed("message header does not belong to this message key")
            }
            let bodyAD = bodyAssociatedData(associatedData, message.encryptedHeader)
            return try bodyAD.withUnsafeBytes { ad in
                try SessionPrimitives.open(key: UnsafeRawBufferPointer(rebasing: keys[0..<32]),
                                           nonce: UnsafeRawBufferPointer(rebasing: keys[32..<44]),
                                           sealed: message.body[...], associatedData: ad, what: "message")
            }
        }
    }

    mutating func decryptInPlace(_ message: RatchetMessage, associatedData: [UInt8], now: UInt64,
                                 random: inout some RandomSource) throws -> [UInt8] {
        expireSkippedKeys(now: now)
        if let plaintext = try trySkippedKeys(message, associatedData: associatedData) { return plaintext }

        var header: RatchetHeader
        var stepRatchet = false
        if let hk = receivingHeaderKey, let h = Self.openHeader(message, headerKey: hk, associatedData: associatedData) {
            header = h
        } else if let h = Self.openHeader(message, headerKey: nextReceivingHeaderKey, associatedData: associatedData) {
            header = h
            stepRatchet = true
        } else {
            throw CryptoError.authenticationFailed("message header opens under no current, next or skipped header key")
        }
        if stepRatchet {
            try skipMessageKeys(until: header.previousChainLength, now: now)
            try dhRatchetStep(header, random: &random)
        }
        guard header.index >= receiveIndex else {
            throw CryptoError.authenticationFailed("duplicate message: index \(header.index) was already received")
        }
        try skipMessageKeys(until: header.index, now: now)
        guard receivingChainKey != nil, receiveIndex < UInt32.max else {
            throw CryptoError.authenticationFailed("no receiving chain for this header")
        }
        let plaintext: [UInt8] = try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { scratch in
            defer { sodium_memzero(scratch.baseAddress, scratch.count) }
            let messageKey = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<32])
            let next = UnsafeMutableRawBufferPointer(rebasing: scratch[32..<64])
            receivingChainKey?.withUnsafeBytes { SessionPrimitives.chainStep($0, messageKey: messageKey, nextChainKey: next) }
            let plaintext = try Self.openBody(message, messageKey: UnsafeRawBufferPointer(messageKey), associatedData: associatedData)
            Self.advance(&receivingChainKey, to: UnsafeRawBufferPointer(next))
            return plaintext
        }
        receiveIndex = header.index + 1
        return plaintext
    }

    /// TrySkippedMessageKeysHE: trial-decrypts the header under each distinct header key that has
    /// skipped keys, newest chain first.
    private mutating func trySkippedKeys(_ message: RatchetMessage, associatedData: [UInt8]) throws -> [UInt8]? {
        guard !skipped.isEmpty else { return nil }
        var tried: [SecureBytes] = []
        for entry in skipped.reversed() {
            if tried.contains(where: { $0 === entry.headerKey || $0.constantTimeEquals(entry.headerKey) }) { continue }
            tried.append(entry.headerKey)
            guard let header = Self.openHeader(message, headerKey: entry.headerKey, associatedData: associatedData) else { continue }
            guard let position = skipped.firstIndex(where: {
                $0.index == header.index && ($0.headerKey === entry.headerKey || $0.headerKey.constantTimeEquals(entry.headerKey))
            }) else {
                // The chain that has skipped keys may also be the current receiving chain: a new
                // index there is for the normal path, which also refuses duplicates.
                return nil
            }
            let plaintext = try skipped[position].messageKey.withUnsafeBytes {
                try Self.openBody(message, messageKey: $0, associatedData: associatedData)
            }
            skipped.remove(at: position)
            return plaintext
        }
        return nil
    }

    /// SkipMessageKeysHE, with the per-chain limit and the total cap.
    private mutating func skipMessageKeys(until: UInt32, now: UInt64) throws {
        guard until > receiveIndex else { return }
        guard Int(until) - Int(receiveIndex) <= Self.maxSkipPerChain else {
            throw CryptoError.limitExceeded(
                "message would skip \(Int(until) - Int(receiveIndex)) keys, more than \(Self.maxSkipPerChain)")
        }
        guard let chainKey = receivingChainKey, let headerKey = receivingHeaderKey else { return }
        var chain = [UInt8](repeating: 0, count: 32)
        defer { chain.withUnsafeMutableBytes { sodium_memzero($0.baseAddress, $0.count) } }
        chainKey.withUnsafeBytes { source in chain.withUnsafeMutableBytes { $0.copyMemory(from: source) } }
        while receiveIndex < until {
            let messageKey = SecureBytes(count: 32) { mk in
                chain.withUnsafeMutableBytes { c in SessionPrimitives.chainStep(UnsafeRawBufferPointer(c), messageKey: mk, nextChainKey: c) }
            }
            skipped.append(SkippedMessageKey(headerKey: headerKey, index: receiveIndex, messageKey: messageKey, storedAt: now))
            receiveIndex += 1
        }
        receivingChainKey = chain.withUnsafeBytes { ChainKey(copying: $0) }
        if skipped.count > Self.maxSkippedKeysTotal {
            skipped.removeFirst(skipped.count - Self.maxSkippedKeysTotal)
        }
    }

    /// Drops skipped keys older than `skippedKeyLifetime`. Runs inside a committed decrypt, or
    /// explicitly from housekeeping.
    public mutating func expireSkippedKeys(now: UInt64) {
        skipped.removeAll { now > $0.storedAt && now - $0.storedAt > Self.skippedKeyLifetime }
    }

    /// DHRatchetHE.
    private mutating func dhRatchetStep(_ header: RatchetHeader, random: inout some RandomSource) throws {
        previousSendCount = sendIndex
        sendIndex = 0
        receiveIndex = 0
        sendingHeaderKey = nextSendingHeaderKey
        receivingHeaderKey = nextReceivingHeaderKey
        remoteRatchetKey = header.ratchetKey
        let (root1, receiving, nextReceiving) = try Self.rootStep(rootKey, SessionPrimitives.agree(ratchetPrivateKey, header.ratchetKey))
        receivingChainKey = ChainKey(receiving)
        nextReceivingHeaderKey = nextReceiving
        ratchetSecret = SecureBytes(randomCount: 32, using: &random)
        ratchetPrivateKey = try SessionPrimitives.agreementPrivateKey(ratchetSecret)
        ratchetPublicKey = Array(ratchetPrivateKey.publicKey.rawRepresentation)
        let (root2, sending, nextSending) = try Self.rootStep(root1, SessionPrimitives.agree(ratchetPrivateKey, header.ratchetKey))
        rootKey = root2
        sendingChainKey = ChainKey(sending)
        nextSendingHeaderKey = nextSending
    }

    public var skippedKeyCount: Int { skipped.count }

    // MARK: Serialization (inside SessionRecord)

    /// Layout: ratchetSecret 32 ‖ remoteRatchetKey opt32 ‖ rootKey 32 ‖ sendingChainKey opt32 ‖
    /// receivingChainKey opt32 ‖ sendingHeaderKey opt32 ‖ receivingHeaderKey opt32 ‖
    /// nextSendingHeaderKey 32 ‖ nextReceivingHeaderKey 32 ‖ sendIndex u32 ‖ receiveIndex u32 ‖
    /// previousSendCount u32 ‖ skippedCount u32 ‖ skippedCount × (headerKey 32 ‖ index u32 ‖
    /// messageKey 32 ‖ storedAt u64). "opt32" is a 0/1 presence byte then 32 bytes when present.
    func serialize(into w: inout ByteWriter) {
        w.writeSecret(ratchetSecret)
        w.writePresenceFlagged(remoteRatchetKey)
        w.writeSecret(rootKey)
        w.writePresenceFlagged(chain: sendingChainKey)
        w.writePresenceFlagged(chain: receivingChainKey)
        w.writePresenceFlagged(secure: sendingHeaderKey)
        w.writePresenceFlagged(secure: receivingHeaderKey)
        w.writeSecret(nextSendingHeaderKey)
        w.writeSecret(nextReceivingHeaderKey)
        w.write(sendIndex); w.write(receiveIndex); w.write(previousSendCount)
        w.write(UInt32(skipped.count))
        for entry in skipped {
            w.writeSecret(entry.headerKey); w.write(entry.index); w.writeSecret(entry.messageKey); w.write(entry.storedAt)
        }
    }

    init(reading r: inout ByteReader) throws {
        ratchetSecret = try r.readSecret(32, "ratchet secret")
        ratchetPrivateKey = try SessionPrimitives.agreementPrivateKey(ratchetSecret)
        ratchetPublicKey = Array(ratchetPrivateKey.publicKey.rawRepresentation)
        remoteRatchetKey = try r.readPresenceFlaggedBytes(32, "remote ratchet key")
        rootKey = try r.readSecret(32, "root key")
        sendingChainKey = try r.readPresenceFlaggedSecret(32, "sending chain key").map(ChainKey.init)
        receivingChainKey = try r.readPresenceFlaggedSecret(32, "receiving chain key").map(ChainKey.init)
        sendingHeaderKey = try r.readPresenceFlaggedSecret(32, "sending header key")
        receivingHeaderKey = try r.readPresenceFlaggedSecret(32, "receiving header key")
        nextSendingHeaderKey = try r.readSecret(32, "next sending header key")
        nextReceivingHeaderKey = try r.readSecret(32, "next receiving header key")
        sendIndex = try r.readUInt32("send index")
        receiveIndex = try r.readUInt32("receive index")
        previousSendCount = try r.readUInt32("previous send count")
        let count = Int(try r.readUInt32("skipped key count"))
        guard count <= Self.maxSkippedKeysTotal else {
            throw WireError.tooLarge(field: "skipped keys", size: count, limit: Self.maxSkippedKeysTotal)
        }
        skipped = []
        skipped.reserveCapacity(count)
        for _ in 0..<count {
            skipped.append(SkippedMessageKey(headerKey: try r.readSecret(32, "skipped header key"),
                                             index: try r.readUInt32("skipped index"),
                                             messageKey: try r.readSecret(32, "skipped message key"),
                                             storedAt: try r.readUInt64("skipped stored at")))
        }
    }
}
