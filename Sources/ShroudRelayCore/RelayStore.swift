import ShroudWire

/// What the relay keeps between connections (docs/PROTOCOL.md §2, "Storage"). The relay core calls
/// these synchronously and relies on each call being atomic: a call that returns has committed its
/// change durably (so the relay may then acknowledge it), and a call that throws changed nothing.
/// Operations that read and change together (taking a one-time prekey, redeeming an invite) are a
/// single call so that two connections can never both get the same prekey or the last use.
///
/// No record holds a message's sender: a direct message has only its recipient, a channel message
/// only its channel.
public protocol RelayStore: AnyObject {
    // MARK: Prekeys

    /// Replaces the owner's agreement key (already checked by the core) and signed prekey and adds
    /// one-time prekeys (an id already stored is replaced). Returns false and stores nothing if the
    /// owner would hold more than `maximumOneTime` one-time prekeys.
    func publishPrekeys(owner: IdentityKey, agreement: IdentityAgreementKey, signed: SignedPrekey, oneTime: [OneTimePrekey],
                        maximumOneTime: Int) throws -> Bool
    /// The owner's bundle with one one-time prekey removed from the store in the same transaction,
    /// or nil if the owner never published a signed prekey with an agreement key.
    func takeBundle(owner: IdentityKey) throws -> PrekeyBundle?
    func oneTimePrekeyCount(owner: IdentityKey) throws -> Int

    // MARK: Sealed direct messages

    /// Queues a message and returns its per-store sequence number (increasing), or nil if the
    /// recipient already has `maximumQueued` messages waiting.
    func enqueueDirect(id: MessageID, recipient: IdentityKey, receivedAt: UInt64, expiresAt: UInt64,
                       blob: [UInt8], maximumQueued: Int) throws -> UInt64?
    /// Up to `limit` messages for the recipient with a sequence above `afterSequence`, oldest first.
    func pendingDirect(recipient: IdentityKey, afterSequence: UInt64, limit: Int) throws -> [QueuedDirectMessage]
    /// Deletes the recipient's messages with these ids; returns how many existed. Ids of other
    /// recipients are ignored, so one client cannot delete another's mail.
    func deleteDirect(recipient: IdentityKey, ids: [MessageID]) throws -> Int

    // MARK: Channels

    /// Creates the channel with `owner` as its only member. Returns nil if the id is taken.
    func createChannel(id: ChannelID, visibility: ChannelVisibility, metadata: [UInt8], owner: IdentityKey) throws -> Membership?
    func channel(_ id: ChannelID) throws -> ChannelRecord?
    func membership(channel: ChannelID, member: IdentityKey) throws -> Membership?
    /// Adds a member who sees messages after the channel's current last sequence.
    func addMember(channel: ChannelID, member: IdentityKey, role: ChannelRole, maximumMembers: Int) throws -> JoinOutcome
    /// Removes a member; deletes the channel when the last member leaves. Returns false if not a member.
    func removeMember(channel: ChannelID, member: IdentityKey) throws -> Bool
    func setRole(channel: ChannelID, member: IdentityKey, role: ChannelRole) throws -> Bool
    func members(channel: ChannelID) throws -> [ChannelMember]
    /// Every channel the identity is a member of, with its membership.
    func memberships(of member: IdentityKey) throws -> [Membership]

    func createInvite(token: InviteToken, channel: ChannelID, uses: Int, expiresAt: UInt64) throws
    /// Checks the invite (exists, not expired at `now`, a use left), adds the member and takes one
    /// use, all in one transaction. An existing member takes no use.
    func redeemInvite(token: InviteToken, member: IdentityKey, now: UInt64, maximumMembers: Int) throws -> JoinOutcome

    /// Appends a message and returns its sequence in the channel (1, 2, …).
    func appendChannelMessage(channel: ChannelID, receivedAt: UInt64, expiresAt: UInt64, blob: [UInt8]) throws -> UInt64
    /// Up to `limit` messages with a sequence above `afterSequence`, oldest first.
    func channelMessages(channel: ChannelID, afterSequence: UInt64, limit: Int) throws -> [StoredChannelMessage]
    /// Records that the member has stored messages through `sequence` (never moves backwards).
    func acknowledgeChannel(channel: ChannelID, member: IdentityKey, through sequence: UInt64) throws

    // MARK: Expiry

    /// Deletes direct messages, channel messages and invites whose expiry is at or before `now`.
    /// Returns how many records were deleted.
    func expire(now: UInt64) throws -> Int

    // MARK: Group commit

    /// Runs `body`, in which every store call joins one transaction that commits when `body`
    /// returns; returns only after that commit, and throws (having changed nothing) if it fails.
    /// Each call inside stays atomic on its own: one that throws changes nothing, the others keep
    /// their changes. Calls inside see each other's changes. The relay batches the frames that
    /// arrived together so that one commit covers many messages; its replies go out only after
    /// `batch` returned, so "acknowledged ⇒ committed" still holds. Not reentrant.
    func batch<T>(_ body: () throws -> T) throws -> T
}

extension RelayStore {
    /// A store whose calls are each committed on their own needs nothing more.
    public func batch<T>(_ body: () throws -> T) throws -> T { try body() }
}

public struct QueuedDirectMessage: Equatable, Sendable {
    public var sequence: UInt64
    public var id: MessageID
    public var receivedAt: UInt64
    public var blob: [UInt8]
    public init(sequence: UInt64, id: MessageID, receivedAt: UInt64, blob: [UInt8]) {
        self.sequence = sequence; self.id = id; self.receivedAt = receivedAt; self.blob = blob
    }
}

public struct StoredChannelMessage: Equatable, Sendable {
    public var sequence: UInt64
    public var receivedAt: UInt64
    public var blob: [UInt8]
    public init(sequence: UInt64, receivedAt: UInt64, blob: [UInt8]) {
        self.sequence = sequence; self.receivedAt = receivedAt; self.blob = blob
    }
}

public struct ChannelRecord: Equatable, Sendable {
    public var id: ChannelID
    public var visibility: ChannelVisibility
    /// Encrypted by the clients (name, topic, …); the relay stores it as bytes.
    public var metadata: [UInt8]
    /// The sequence of the newest message (0 when there is none).
    public var lastSequence: UInt64
    public init(id: ChannelID, visibility: ChannelVisibility, metadata: [UInt8], lastSequence: UInt64) {
        self.id = id; self.visibility = visibility; self.metadata = metadata; self.lastSequence = lastSequence
    }
}

public struct Membership: Equatable, Sendable {
    public var channel: ChannelID
    public var member: IdentityKey
    public var role: ChannelRole
    /// The channel's last sequence when the member joined; they see only later messages.
    public var joinedAfter: UInt64
    /// The newest sequence the member acknowledged (starts at `joinedAfter`).
    public var acknowledgedThrough: UInt64
    public init(channel: ChannelID, member: IdentityKey, role: ChannelRole, joinedAfter: UInt64, acknowledgedThrough: UInt64) {
        self.channel = channel; self.member = member; self.role = role
        self.joinedAfter = joinedAfter; self.acknowledgedThrough = acknowledgedThrough
    }
}

public enum JoinOutcome: Equatable, Sendable {
    case joined(Membership)
    case alreadyMember(Membership)
    case channelNotFound
    case inviteNotFound
    /// Expired or no uses left.
    case inviteExhausted
    case channelFull
}
