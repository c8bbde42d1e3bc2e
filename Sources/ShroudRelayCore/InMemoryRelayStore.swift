import ShroudWire

/// A `RelayStore` in memory, for tests and for a relay that needs no persistence. Every method is
/// atomic because the relay core calls it from one thread and it never suspends.
public final class InMemoryRelayStore: RelayStore {
    private struct Prekeys {
        var agreement: IdentityAgreementKey
        var signed: SignedPrekey
        /// Oldest first, so bundles hand out prekeys in publishing order.
        var oneTime: [OneTimePrekey]
    }
    private struct QueuedDirect {
        var message: QueuedDirectMessage
        var expiresAt: UInt64
    }
    private struct Channel {
        var record: ChannelRecord
        var members: [IdentityKey: Membership] = [:]
        /// Join order, so member lists are stable.
        var order: [IdentityKey] = []
        var messages: [(message: StoredChannelMessage, expiresAt: UInt64)] = []
    }
    private struct Invite {
        var channel: ChannelID
        var usesLeft: Int
        var expiresAt: UInt64
    }

    private var prekeys: [IdentityKey: Prekeys] = [:]
    private var direct: [IdentityKey: [QueuedDirect]] = [:]
    private var nextDirectSequence: UInt64 = 1
    private var channels: [ChannelID: Channel] = [:]
    private var invites: [InviteToken: Invite] = [:]

    public init() {}

    public func publishPrekeys(owner: IdentityKey, agreement: IdentityAgreementKey, signed: SignedPrekey, oneTime: [OneTimePrekey],
                               maximumOneTime: Int) throws -> Bool {
        var entry = prekeys[owner] ?? Prekeys(agreement: agreement, signed: signed, oneTime: [])
        let newIDs = Set(oneTime.map(\.id))
        entry.oneTime.removeAll { newIDs.contains($0.id) }
        guard entry.oneTime.count + oneTime.count <= maximumOneTime else { return false }
        entry.agreement = agreement
        entry.signed = signed
        entry.oneTime += oneTime
        prekeys[owner] = entry
        return true
    }

    public func takeBundle(owner: IdentityKey) throws -> PrekeyBundle? {
        guard var entry = prekeys[owner] else { return nil }
        let oneTime = entry.oneTime.isEmpty ? nil : entry.oneTime.removeFirst()
        prekeys[owner] = entry
        return PrekeyBundle(identity: owner, agreement: entry.agreement, signedPrekey: entry.signed, oneTimePrekey: oneTime)
    }

    public func oneTimePrekeyCount(owner: IdentityKey) throws -> Int { prekeys[owner]?.oneTime.count ?? 0 }

    public func enqueueDirect(id: MessageID, recipient: IdentityKey, receivedAt: UInt64, expiresAt: UInt64,
                              blob: [UInt8], maximumQueued: Int) throws -> UInt64? {
        guard direct[recipient, default: []].count < maximumQueued else { return nil }
        let sequence = nextDirectSequence
        nextDirectSequence += 1
        direct[recipient, default: []].append(QueuedDirect(
            message: QueuedDirectMessage(sequence: sequence, id: id, receivedAt: receivedAt, blob: blob), expiresAt: expiresAt))
        return sequence
    }

    public func pendingDirect(recipient: IdentityKey, afterSequence: UInt64, limit: Int) throws -> [QueuedDirectMessage] {
        Array((direct[recipient] ?? []).lazy.filter { $0.message.sequence > afterSequence }.prefix(limit).map(\.message))
    }

    public func deleteDirect(recipient: IdentityKey, ids: [MessageID]) throws -> Int {
        guard var queue = direct[recipient] else { return 0 }
        let wanted = Set(ids)
        let before = queue.count
        queue.removeAll { wanted.contains($0.message.id) }
        direct[recipient] = queue.isEmpty ? nil : queue
        return before - queue.count
    }

    public func createChannel(id: ChannelID, visibility: ChannelVisibility, metadata: [UInt8], owner: IdentityKey) throws -> Membership? {
        guard channels[id] == nil else { return nil }
        let membership = Membership(channel: id, member: owner, role: .owner, joinedAfter: 0, acknowledgedThrough: 0)
        var channel = Channel(record: ChannelRecord(id: id, visibility: visibility, metadata: metadata, lastSequence: 0))
        channel.members[owner] = membership
        channel.order = [owner]
        channels[id] = channel
        return membership
    }

    public func channel(_ id: ChannelID) throws -> ChannelRecord? { channels[id]?.record }

    public func membership(channel: ChannelID, member: IdentityKey) throws -> Membership? { channels[channel]?.members[member] }

    public func addMember(channel id: ChannelID, member: IdentityKey, role: ChannelRole, maximumMembers: Int) throws -> JoinOutcome {
        guard var channel = channels[id] else { return .channelNotFound }
        if let existing = channel.members[member] { return .alreadyMember(existing) }
        guard channel.members.count < maximumMembers else { return .channelFull }
        let last = channel.record.lastSequence
        let membership = Membership(channel: id, member: member, role: role, joinedAfter: last, acknowledgedThrough: last)
        channel.members[member] = membership
        channel.order.append(member)
        channels[id] = channel
        return .joined(membership)
    }

    public func removeMember(channel id: ChannelID, member: IdentityKey) throws -> Bool {
        guard var channel = channels[id], channel.members.removeValue(forKey: member) != nil else { return false }
        channel.order.removeAll { $0 == member }
        if channel.members.isEmpty {
            channels[id] = nil
            invites = invites.filter { $0.value.channel != id }
        } else {
            channels[id] = channel
        }
        return true
    }

    public func setRole(channel id: ChannelID, member: IdentityKey, role: ChannelRole) throws -> Bool {
        guard channels[id]?.members[member] != nil else { return false }
        channels[id]?.members[member]?.role = role
        return true
    }

    public func members(channel id: ChannelID) throws -> [ChannelMember] {
        guard let channel = channels[id] else { return [] }
        return channel.order.compactMap { key in channel.members[key].map { ChannelMember(identity: key, role: $0.role) } }
    }

    public func memberships(of member: IdentityKey) throws -> [Membership] {
        channels.values.compactMap { $0.members[member] }.sorted { $0.channel.bytes.lexicographicallyPrecedes($1.channel.bytes) }
    }

    public func createInvite(token: InviteToken, channel: ChannelID, uses: Int, expiresAt: UInt64) throws {
        invites[token] = Invite(channel: channel, usesLeft: uses, expiresAt: expiresAt)
    }

    public func redeemInvite(token: InviteToken, member: IdentityKey, now: UInt64, maximumMembers: Int) throws -> JoinOutcome {
        guard let invite = invites[token] else { return .inviteNotFound }
        guard invite.expiresAt > now, invite.usesLeft > 0 else { return .inviteExhausted }
        let outcome = try addMember(channel: invite.channel, member: member, role: .member, maximumMembers: maximumMembers)
        if case .joined = outcome { invites[token]?.usesLeft -= 1 }
        return outcome
    }

    public func appendChannelMessage(channel id: ChannelID, receivedAt: UInt64, expiresAt: UInt64, blob: [UInt8]) throws -> UInt64 {
        guard var channel = channels[id] else { throw RelayStoreError.channelNotFound }
        channel.record.lastSequence += 1
        let sequence = channel.record.lastSequence
        channel.messages.append((StoredChannelMessage(sequence: sequence, receivedAt: receivedAt, blob: blob), expiresAt))
        channels[id] = channel
        return sequence
    }

    public func channelMessages(channel id: ChannelID, afterSequence: UInt64, limit: Int) throws -> [StoredChannelMessage] {
        Array((channels[id]?.messages ?? []).lazy.filter { $0.message.sequence > afterSequence }.prefix(limit).map(\.message))
    }

    public func acknowledgeChannel(channel id: ChannelID, member: IdentityKey, through sequence: UInt64) throws {
        guard let current = channels[id]?.members[member] else { return }
        channels[id]?.members[member]?.acknowledgedThrough = max(current.acknowledgedThrough, sequence)
    }

    public func expire(now: UInt64) throws -> Int {
        var deleted = 0
        for (recipient, queue) in direct {
            let kept = queue.filter { $0.expiresAt > now }
            deleted += queue.count - kept.count
            direct[recipient] = kept.isEmpty ? nil : kept
        }
        for (id, channel) in channels {
            let kept = channel.messages.filter { $0.expiresAt > now }
            deleted += channel.messages.count - kept.count
            channels[id]?.messages = kept
        }
        let liveInvites = invites.filter { $0.value.expiresAt > now }
        deleted += invites.count - liveInvites.count
        invites = liveInvites
        return deleted
    }
}

public enum RelayStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case channelNotFound
    case storage(String)

    public var description: String {
        switch self {
        case .channelNotFound: "channel not found"
        case let .storage(reason): "relay storage failed: \(reason)"
        }
    }
}
