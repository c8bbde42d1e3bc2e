import ShroudWire

/// One pairwise session: the ratchet, the X3DH associated data bound into every AEAD, and — until
/// the first reply arrives — what the responder needs to rebuild the session (so every message sent
/// before then travels as a `PreKeyMessage`).
public struct Session {
    public let remoteIdentity: PublicIdentity
    /// AD = Encode(IK_initiator) ‖ Encode(IK_responder), 256 bytes.
    public let associatedData: [UInt8]
    /// The initiator's X3DH ephemeral key; names the session when an initial message is repeated.
    public let baseKey: [UInt8]
    var ratchet: DoubleRatchet
    var pendingPreKey: PendingPreKey?

    struct PendingPreKey: Equatable {
        let signedPreKeyId: UInt32
        let oneTimePreKeyId: UInt32?
    }

    /// The Ed25519 key of the identity that started this session (first 32 bytes of the AD).
    public var initiatorSigningKey: [UInt8] { Array(associatedData[0..<32]) }
    public var isAwaitingReply: Bool { pendingPreKey != nil }
    public var skippedKeyCount: Int { ratchet.skippedKeyCount }

    /// Starts a session from a fetched bundle (the initiator's side of X3DH).
    public static func initiate(identity: IdentityKeyPair, bundle: PreKeyBundle,
                                random: inout some RandomSource) throws -> Session {
        let start = try X3DH.initiate(identity: identity, bundle: bundle, random: &random)
        let ratchet = try DoubleRatchet.initiator(secrets: start.secrets, remoteRatchetKey: start.responderRatchetKey,
                                                  random: &random)
        return Session(remoteIdentity: bundle.identity, associatedData: start.secrets.associatedData,
                       baseKey: start.ephemeralPublicKey, ratchet: ratchet,
                       pendingPreKey: PendingPreKey(signedPreKeyId: start.signedPreKeyId,
                                                    oneTimePreKeyId: start.oneTimePreKeyId))
    }

    /// Builds the responder's session from an initial message and opens its ratchet message; the
    /// session exists only if that message authenticates.
    public static func respond(identity: IdentityKeyPair, message: PreKeyMessage, signedPreKey: SignedPreKey,
                               oneTimePreKey: OneTimePreKey?, now: UInt64,
                               random: inout some RandomSource) throws -> (session: Session, plaintext: [UInt8]) {
        guard signedPreKey.id == message.signedPreKeyId else {
            throw CryptoError.invalidInput("initial message names signed prekey \(message.signedPreKeyId), not \(signedPreKey.id)")
        }
        guard oneTimePreKey?.id == message.oneTimePreKeyId else {
            throw CryptoError.invalidInput("initial message names a one-time prekey that is not available")
        }
        let secrets = try X3DH.respond(identity: identity, initiator: message.initiator,
                                       ephemeralPublicKey: message.ephemeralKey, signedPreKey: signedPreKey,
                                       oneTimePreKey: oneTimePreKey)
        var session = Session(remoteIdentity: message.initiator, associatedData: secrets.associatedData,
                              baseKey: message.ephemeralKey,
                              ratchet: try DoubleRatchet.responder(secrets: secrets, signedPreKey: signedPreKey),
                              pendingPreKey: nil)
        let plaintext = try session.ratchet.decrypt(message.message, associatedData: session.associatedData, now: now,
                                                    random: &random)
        return (session, plaintext)
    }

    /// Encrypts; while no reply has arrived the result is a `PreKeyMessage`.
    public mutating func encrypt(_ plaintext: [UInt8], localIdentity: PublicIdentity) throws -> SessionMessage {
        let message = try ratchet.encrypt(plaintext, associatedData: associatedData)
        guard let pending = pendingPreKey else { return .ratchet(message) }
        return .preKey(PreKeyMessage(initiator: localIdentity, ephemeralKey: baseKey,
                                     signedPreKeyId: pending.signedPreKeyId, oneTimePreKeyId: pending.oneTimePreKeyId,
                                     message: message))
    }

    /// Decrypts a ratchet message; commits (and learns that the peer has the session) only on success.
    public mutating func decrypt(_ message: RatchetMessage, now: UInt64, random: inout some RandomSource) throws -> [UInt8] {
        let plaintext = try ratchet.decrypt(message, associatedData: associatedData, now: now, random: &random)
        pendingPreKey = nil
        return plaintext
    }

    // MARK: Serialization

    /// remoteIdentity 128 ‖ associatedData 256 ‖ baseKey 32 ‖ pending u8 [signedPreKeyId u32 ‖
    /// hasOneTime u8 [oneTimePreKeyId u32]] ‖ ratchet (DoubleRatchet.serialize).
    func serialize(into w: inout ByteWriter) {
        w.write(bytes: remoteIdentity.sessionEncoding)
        w.write(bytes: associatedData)
        w.write(bytes: baseKey)
        if let pendingPreKey {
            w.write(UInt8(1)); w.write(pendingPreKey.signedPreKeyId)
            if let id = pendingPreKey.oneTimePreKeyId { w.write(UInt8(1)); w.write(id) } else { w.write(UInt8(0)) }
        } else {
            w.write(UInt8(0))
        }
        ratchet.serialize(into: &w)
    }

    init(reading r: inout ByteReader) throws {
        remoteIdentity = try PublicIdentity.readSessionEncoding(from: &r, "session remote identity")
        associatedData = try r.readBytes(X3DH.associatedDataLength, "session associated data")
        baseKey = try r.readBytes(32, "session base key")
        switch try r.readUInt8("pending prekey flag") {
        case 0: pendingPreKey = nil
        case 1:
            let spk = try r.readUInt32("pending signed prekey id")
            let opk: UInt32?
            switch try r.readUInt8("pending one-time prekey flag") {
            case 0: opk = nil
            case 1: opk = try r.readUInt32("pending one-time prekey id")
            case let other: throw WireError.invalid(field: "pending one-time prekey flag", reason: "got \(other)")
            }
            pendingPreKey = PendingPreKey(signedPreKeyId: spk, oneTimePreKeyId: opk)
        case let other: throw WireError.invalid(field: "pending prekey flag", reason: "got \(other)")
        }
        ratchet = try DoubleRatchet(reading: &r)
    }

    init(remoteIdentity: PublicIdentity, associatedData: [UInt8], baseKey: [UInt8], ratchet: DoubleRatchet,
         pendingPreKey: PendingPreKey?) {
        self.remoteIdentity = remoteIdentity
        self.associatedData = associatedData
        self.baseKey = baseKey
        self.ratchet = ratchet
        self.pendingPreKey = pendingPreKey
    }
}

/// A message of the pairwise session layer. Wire layout: type u8 (1 = ratchet, 2 = prekey) ‖ the
/// message's own versioned bytes.
public enum SessionMessage: Equatable, Sendable {
    case ratchet(RatchetMessage)
    case preKey(PreKeyMessage)

    public static let ratchetType: UInt8 = 1
    public static let preKeyType: UInt8 = 2
    public static let maxLength = 1 + PreKeyMessage.maxLength

    public func serialize() -> [UInt8] {
        switch self {
        case let .ratchet(m): return [Self.ratchetType] + m.serialize()
        case let .preKey(m): return [Self.preKeyType] + m.serialize()
        }
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count <= Self.maxLength else {
            throw WireError.tooLarge(field: "session message", size: bytes.count, limit: Self.maxLength)
        }
        guard let type = bytes.first else { throw WireError.truncated(field: "session message type", offset: 0, needed: 1) }
        let rest = Array(bytes.dropFirst())
        switch type {
        case Self.ratchetType: self = .ratchet(try RatchetMessage(parsing: rest))
        case Self.preKeyType: self = .preKey(try PreKeyMessage(parsing: rest))
        default: throw WireError.invalid(field: "session message type", reason: "unknown type \(type)")
        }
    }
}

/// Every session with one remote identity: the current one (used to send) and a few archived ones
/// that still decrypt late messages. Serialized with a version byte so stored records keep loading.
///
/// Simultaneous initiation: when both sides start a session to each other, each ends up holding
/// both. The rule is deterministic and symmetric: the session whose initiator's identity signing
/// key sorts lower (bytewise) is current on both sides; the other stays archived and still decrypts.
/// A current session that has already heard from the peer always yields to a new incoming one (the
/// peer started over, so it no longer has the old session).
public struct SessionRecord {
    public static let version: UInt8 = 1
    /// Older sessions kept for late messages; beyond it the oldest is dropped.
    public static let maxArchivedSessions = 4

    public var current: Session?
    public var archived: [Session] = []

    public init(current: Session? = nil) { self.current = current }

    /// Adds a freshly built session and applies the simultaneous-initiation rule.
    public mutating func adopt(_ session: Session) {
        var all = [session]
        if let current { all.append(current) }
        all.append(contentsOf: archived)
        // Keep the session with the same base key only once (a retransmitted initial message).
        var unique: [Session] = []
        for s in all where !unique.contains(where: { $0.baseKey == s.baseKey }) { unique.append(s) }
        var chosen = unique[0]
        if let existing = current, existing.baseKey != session.baseKey, existing.isAwaitingReply,
           Self.preferred(existing, over: session) {
            chosen = existing
        }
        current = chosen
        archived = Array(unique.filter { $0.baseKey != chosen.baseKey }.prefix(Self.maxArchivedSessions))
    }

    /// True when `a` should stay current rather than `b`: lower initiator signing key wins; between
    /// two sessions of the same initiator, the newer (`b`) wins.
    static func preferred(_ a: Session, over b: Session) -> Bool {
        if a.initiatorSigningKey == b.initiatorSigningKey { return false }
        return bytesPrecede(a.initiatorSigningKey, b.initiatorSigningKey)
    }

    /// Decrypts with the current session, then each archived one; the first that authenticates is
    /// committed and nothing else changes.
    public mutating func decrypt(_ message: RatchetMessage, now: UInt64, random: inout some RandomSource) throws -> [UInt8] {
        var lastError: Error = CryptoError.authenticationFailed("no session with this identity")
        // In place: a session's decrypt commits only on success, so a failed attempt changes nothing.
        if current != nil {
            do {
                if let plaintext = try current?.decrypt(message, now: now, random: &random) { return plaintext }
            } catch { lastError = error }
        }
        for index in archived.indices {
            do {
                return try archived[index].decrypt(message, now: now, random: &random)
            } catch { lastError = error }
        }
        throw lastError
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 1024)
        w.write(Self.version)
        let sessions = (current.map { [$0] } ?? []) + archived
        w.write(UInt8(current == nil ? 0 : 1))
        w.write(UInt8(archived.count))
        for s in sessions { s.serialize(into: &w) }
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        try r.readVersion(expecting: Self.version, "session record")
        let hasCurrent = try r.readUInt8("current session flag")
        guard hasCurrent <= 1 else { throw WireError.invalid(field: "current session flag", reason: "got \(hasCurrent)") }
        let archivedCount = Int(try r.readUInt8("archived session count"))
        guard archivedCount <= Self.maxArchivedSessions else {
            throw WireError.tooLarge(field: "archived sessions", size: archivedCount, limit: Self.maxArchivedSessions)
        }
        current = hasCurrent == 1 ? try Session(reading: &r) : nil
        archived = try (0..<archivedCount).map { _ in try Session(reading: &r) }
        try r.rejectTrailingBytes("session record")
    }
}
