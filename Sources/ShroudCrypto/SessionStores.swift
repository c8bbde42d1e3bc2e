/// Storage for the session layer, as protocols (the SQLite versions live in ShroudStore) with
/// in-memory versions for tests and for the pure cores. Remote identities are addressed by their
/// Ed25519 signing key.

/// How far a pinned remote identity is trusted.
public enum TrustDecision: UInt8, Sendable, Equatable {
    /// Pinned the first time it was seen; no safety-number check yet.
    case pinnedOnFirstUse = 1
    /// The safety number was compared out of band.
    case verified = 2
    /// The user refuses this identity: nothing from it is decrypted.
    case blocked = 3
}

/// What the store says about an identity presented by a peer.
public enum IdentityCheck: Equatable, Sendable {
    case unknown
    case trusted(TrustDecision)
    /// Same signing key, different agreement key or binding: a loud warning, never a silent swap.
    case changed(pinned: PublicIdentity)
    case blocked
}

/// A session-layer refusal that the user must see (DESIGN.md §1.2).
public enum SessionTrustError: Error, Equatable, Sendable, CustomStringConvertible {
    case identityChanged(signingKey: [UInt8])
    case blocked(signingKey: [UInt8])

    public var description: String {
        switch self {
        case let .identityChanged(key): return "identity \(identityHexPrefix(key)) changed since it was pinned; verify the safety number"
        case let .blocked(key): return "identity \(identityHexPrefix(key)) is blocked"
        }
    }
}

func identityHexPrefix(_ bytes: [UInt8]) -> String {
    bytes.prefix(8).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

// Every method that reads or writes state throws, so a database-backed store can report a storage
// failure (disk full, damaged row, locked profile) instead of pretending a record is absent.

public protocol IdentityStore: AnyObject {
    var localIdentity: IdentityKeyPair { get }
    func pinnedIdentity(signingKey: [UInt8]) throws -> (identity: PublicIdentity, decision: TrustDecision)?
    func pin(_ identity: PublicIdentity, decision: TrustDecision) throws
}

extension IdentityStore {
    public func check(_ identity: PublicIdentity) throws -> IdentityCheck {
        guard let pinned = try pinnedIdentity(signingKey: identity.signingKey) else { return .unknown }
        if pinned.decision == .blocked { return .blocked }
        guard pinned.identity == identity else { return .changed(pinned: pinned.identity) }
        return .trusted(pinned.decision)
    }

    /// Trust on first use: pins an unknown identity, accepts a pinned one, refuses a changed or
    /// blocked one with an error the user sees.
    public func acceptOnFirstUse(_ identity: PublicIdentity) throws {
        switch try check(identity) {
        case .unknown: try pin(identity, decision: .pinnedOnFirstUse)
        case .trusted: break
        case .changed: throw SessionTrustError.identityChanged(signingKey: identity.signingKey)
        case .blocked: throw SessionTrustError.blocked(signingKey: identity.signingKey)
        }
    }
}

public protocol PreKeyStore: AnyObject {
    func oneTimePreKey(id: UInt32) throws -> OneTimePreKey?
    func storeOneTimePreKey(_ key: OneTimePreKey) throws
    func removeOneTimePreKey(id: UInt32) throws
    var oneTimePreKeyCount: Int { get throws }
}

public protocol SignedPreKeyStore: AnyObject {
    func signedPreKey(id: UInt32) throws -> SignedPreKey?
    func storeSignedPreKey(_ key: SignedPreKey) throws
    func removeSignedPreKey(id: UInt32) throws
    func allSignedPreKeys() throws -> [SignedPreKey]
}

public protocol SessionStore: AnyObject {
    func sessionRecord(for remoteSigningKey: [UInt8]) throws -> SessionRecord?
    func storeSessionRecord(_ record: SessionRecord, for remoteSigningKey: [UInt8]) throws
    func removeSessionRecord(for remoteSigningKey: [UInt8]) throws
}

public protocol SenderKeyStore: AnyObject {
    /// Our own sending state in a channel.
    func ownSenderKey(channel: [UInt8]) throws -> OwnSenderKey?
    func storeOwnSenderKey(_ key: OwnSenderKey, channel: [UInt8]) throws
    /// A member's receiving states in a channel, keyed by the member's signing key.
    func senderKeyRecord(channel: [UInt8], sender: [UInt8]) throws -> SenderKeyRecord?
    func storeSenderKeyRecord(_ record: SenderKeyRecord, channel: [UInt8], sender: [UInt8]) throws
    /// Forgets everything received from a member (called when the member leaves or is removed).
    func removeSender(channel: [UInt8], sender: [UInt8]) throws
    func senders(channel: [UInt8]) throws -> [[UInt8]]
}

// MARK: In-memory versions

public final class InMemoryIdentityStore: IdentityStore {
    public let localIdentity: IdentityKeyPair
    private var pinned: [[UInt8]: (PublicIdentity, TrustDecision)] = [:]

    public init(localIdentity: IdentityKeyPair) { self.localIdentity = localIdentity }

    public func pinnedIdentity(signingKey: [UInt8]) -> (identity: PublicIdentity, decision: TrustDecision)? {
        pinned[signingKey].map { (identity: $0.0, decision: $0.1) }
    }

    public func pin(_ identity: PublicIdentity, decision: TrustDecision) { pinned[identity.signingKey] = (identity, decision) }
}

public final class InMemoryPreKeyStore: PreKeyStore, SignedPreKeyStore {
    private var oneTime: [UInt32: OneTimePreKey] = [:]
    private var signed: [UInt32: SignedPreKey] = [:]

    public init() {}

    public func oneTimePreKey(id: UInt32) -> OneTimePreKey? { oneTime[id] }
    public func storeOneTimePreKey(_ key: OneTimePreKey) { oneTime[key.id] = key }
    public func removeOneTimePreKey(id: UInt32) { oneTime[id] = nil }
    public var oneTimePreKeyCount: Int { oneTime.count }

    public func signedPreKey(id: UInt32) -> SignedPreKey? { signed[id] }
    public func storeSignedPreKey(_ key: SignedPreKey) { signed[key.id] = key }
    public func removeSignedPreKey(id: UInt32) { signed[id] = nil }
    public func allSignedPreKeys() -> [SignedPreKey] { signed.values.sorted { $0.id < $1.id } }
}

/// Stores serialized records, exactly as a database would, so tests exercise the format.
public final class InMemorySessionStore: SessionStore {
    private var records: [[UInt8]: [UInt8]] = [:]

    public init() {}

    public func sessionRecord(for remoteSigningKey: [UInt8]) -> SessionRecord? {
        records[remoteSigningKey].flatMap { try? SessionRecord(parsing: $0) }
    }

    public func storeSessionRecord(_ record: SessionRecord, for remoteSigningKey: [UInt8]) {
        records[remoteSigningKey] = record.serialize()
    }

    public func removeSessionRecord(for remoteSigningKey: [UInt8]) { records[remoteSigningKey] = nil }

    /// The stored bytes, for tests that check a failed decrypt left them untouched.
    public func serializedRecord(for remoteSigningKey: [UInt8]) -> [UInt8]? { records[remoteSigningKey] }
}

public final class InMemorySenderKeyStore: SenderKeyStore {
    private struct Key: Hashable { let channel: [UInt8]; let sender: [UInt8] }
    private var own: [[UInt8]: OwnSenderKey] = [:]
    private var received: [Key: SenderKeyRecord] = [:]

    public init() {}

    public func ownSenderKey(channel: [UInt8]) -> OwnSenderKey? { own[channel] }
    public func storeOwnSenderKey(_ key: OwnSenderKey, channel: [UInt8]) { own[channel] = key }
    public func senderKeyRecord(channel: [UInt8], sender: [UInt8]) -> SenderKeyRecord? {
        received[Key(channel: channel, sender: sender)]
    }
    public func storeSenderKeyRecord(_ record: SenderKeyRecord, channel: [UInt8], sender: [UInt8]) {
        received[Key(channel: channel, sender: sender)] = record
    }
    public func removeSender(channel: [UInt8], sender: [UInt8]) { received[Key(channel: channel, sender: sender)] = nil }
    public func senders(channel: [UInt8]) -> [[UInt8]] {
        received.keys.filter { $0.channel == channel }.map(\.sender).sorted { bytesPrecede($0, $1) }
    }
}
