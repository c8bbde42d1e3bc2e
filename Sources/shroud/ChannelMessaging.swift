import Foundation
import ShroudCrypto
import ShroudStore
import ShroudWire

/// A channel message as handed to consumers: text for `channel read` and `listen`, control payloads
/// for the features that ride on channels (voice: SFrame keys).
struct ReceivedChannelPayload {
    let channel: LocalChannel
    let sequence: UInt64
    let sender: [UInt8]
    let receivedAt: UInt64
    let payload: ChannelPayload
}

/// Channels over one relay session (docs/PROTOCOL.md §6): creating, inviting, joining, leaving,
/// kicking, and sending and receiving `ChannelPayload`s under sender keys, with the sender keys
/// distributed through the pairwise sessions.
///
/// Reuse: `send(_:to:random:)` sends any payload kind (control kinds 0x10–0x7F for other features);
/// `sync(random:)` then `consume(_:now:_:)` hands every decrypted payload of a channel, in order,
/// exactly once; `client.onMembershipChange` reports joins, leaves and kicks as they are pushed.
final class ChannelMessaging {
    let client: MessagingClient
    var book: ChannelBook { client.channels }
    private var me: [UInt8] { client.identity.publicIdentity.signingKey }

    init(client: MessagingClient) { self.client = client }

    // MARK: Membership

    func create(name: String, visibility: ChannelVisibility, random: inout some RandomSource) throws -> LocalChannel {
        let id = try ChannelID(random.bytes(ChannelID.size))
        let secret = ChannelSecret(random: &random)
        let metadata: [UInt8]
        do {
            metadata = try secret.sealMetadata(name: name, channel: id, random: &random)
        } catch {
            throw Failure(oneLine(error))
        }
        // Saved before the relay hears of it, so a crash leaves a local entry, never a channel
        // nobody has the secret of.
        let local = LocalChannel(id: id, secret: secret, name: name, visibility: visibility)
        try book.save(local)
        guard case .channelJoined = try client.session.request(.createChannel(channel: id, visibility: visibility, metadata: metadata)) else {
            throw Failure("the relay answered createChannel with something else")
        }
        return local
    }

    func invite(_ channel: LocalChannel, uses: UInt16, ttlSeconds: UInt32) throws -> (invite: ChannelInvite, expiresAt: UInt64) {
        let reply = try refusing(channel) { try client.session.request(.createInvite(channel: channel.id, uses: uses, ttlSeconds: ttlSeconds)) }
        guard case let .invite(token, expiresAt) = reply else { throw Failure("the relay answered createInvite with something else") }
        return (ChannelInvite(token: token, channel: channel.id, secret: channel.secret), expiresAt)
    }

    /// Redeems an invite: joins on the relay, reads the channel's name from its metadata, and keeps
    /// the channel in the profile.
    func join(_ invite: ChannelInvite) throws -> LocalChannel {
        let reply: RelayMessage
        do {
            reply = try client.session.request(.redeemInvite(token: invite.token))
        } catch let refusal as RelayRefusal where refusal.code == .inviteExhausted || refusal.code == .notFound {
            throw Failure("the invite is not valid: \(refusal.text)")
        }
        return try joined(reply, secret: invite.secret, expected: invite.channel)
    }

    /// Joins an open channel the profile already knows (e.g. after leaving it).
    func rejoin(_ channel: LocalChannel) throws -> LocalChannel {
        let reply = try refusing(channel) { try client.session.request(.joinChannel(channel: channel.id)) }
        return try joined(reply, secret: channel.secret, expected: channel.id)
    }

    private func joined(_ reply: RelayMessage, secret: ChannelSecret, expected: ChannelID) throws -> LocalChannel {
        guard case let .channelJoined(id, visibility, _, _, metadata) = reply, id == expected else {
            throw Failure("the relay answered the join with something else")
        }
        let name: String
        do {
            name = try secret.openMetadata(metadata, channel: id)
        } catch {
            throw Failure("the channel's name does not decrypt with the invite's secret: \(oneLine(error))")
        }
        var local = try book.channel(id) ?? LocalChannel(id: id, secret: secret, name: name, visibility: visibility)
        local.isMember = true
        local.secret = secret
        local.visibility = visibility
        try book.save(local)
        return local
    }

    func leave(_ channel: LocalChannel) throws {
        _ = try refusing(channel) { try client.session.request(.leaveChannel(channel: channel.id)) }
        try forgetKeys(channel)
    }

    func kick(_ channel: LocalChannel, member: IdentityKey) throws {
        _ = try refusing(channel) { try client.session.request(.kickMember(channel: channel.id, member: member)) }
    }

    func members(_ channel: LocalChannel) throws -> [ChannelMember] {
        let reply = try refusing(channel) { try client.session.request(.listMembers(channel: channel.id)) }
        guard case let .members(_, list) = reply else { throw Failure("the relay answered listMembers with something else") }
        return list
    }

    private func forgetKeys(_ channel: LocalChannel) throws {
        var local = channel
        local.isMember = false
        local.keyHolders = []
        local.keyHoldersKeyID = 0
        try book.save(local)
        for sender in try client.senderKeys.senders(channel: channel.id.bytes) {
            try client.senderKeys.removeSender(channel: channel.id.bytes, sender: sender)
        }
    }

    /// Runs a request about `channel`, turning "not a member" into a one-line reason (and
    /// recording in the profile that we are out).
    private func refusing(_ channel: LocalChannel, _ body: () throws -> RelayMessage) throws -> RelayMessage {
        do {
            return try body()
        } catch let refusal as RelayRefusal where refusal.code == .notMember || refusal.code == .notFound {
            if channel.isMember { try forgetKeys(channel) }
            throw Failure("you are not a member of channel \"\(channel.name)\" (you left or were removed)")
        } catch let refusal as RelayRefusal where refusal.code == .forbidden {
            throw Failure("not allowed in channel \"\(channel.name)\": \(refusal.text)")
        }
    }

    // MARK: Sending

    struct SendOutcome {
        var rotated: Bool
        var distributed: Int
    }

    /// Sends one payload: first the sender-key rule (a new key whenever the member list differs from
    /// the members holding our current key, given to every other member through the pairwise
    /// sessions), then the message.
    func send(_ payload: ChannelPayload, to channel: LocalChannel, random: inout some RandomSource) throws -> SendOutcome {
        let list = try members(channel).map(\.identity.bytes)
        var local = try book.channel(channel.id) ?? channel
        let own = try client.senderKeys.ownSenderKey(channel: channel.id.bytes)
        let holders = own.map { $0.keyId == local.keyHoldersKeyID } == true ? local.keyHolders : []
        let plan = SenderKeyAudience.plan(members: list, holders: holders, me: me, hasKey: own != nil)
        let distribution: SenderKeyDistributionMessage
        if plan.rotate {
            distribution = try SenderKeyCipher.memberAdded(channel: channel.id.bytes, store: client.senderKeys, random: &random)
            local.keyHolders = []
            local.keyHoldersKeyID = distribution.keyId
            try book.save(local)
        } else {
            distribution = try SenderKeyCipher.ownDistribution(channel: channel.id.bytes, store: client.senderKeys, random: &random)
        }
        let direct = DirectPayload.senderKey(channel: channel.id, distribution: distribution).serialize()
        for member in plan.distributeTo {
            try client.sendPayload(direct, to: member, random: &random)
            // Recorded per member; an interrupted send leaves holders ≠ members, so the next send
            // starts over with a new key (never reusing one a removed member might hold).
            local.keyHolders.insert(member)
            try book.save(local)
        }
        let message = try SenderKeyCipher.encrypt(payload.serialize(), channel: channel.id.bytes, store: client.senderKeys, random: &random)
        let blob = try channel.secret.sealEnvelope(sender: me, message: message, channel: channel.id, random: &random)
        guard case .ok = try refusing(channel, { try client.session.request(.sendChannel(channel: channel.id, blob: blob)) }) else {
            throw Failure("the relay answered sendChannel with something else")
        }
        return SendOutcome(rotated: plan.rotate, distributed: plan.distributeTo.count)
    }

    // MARK: Receiving

    /// Receives everything queued (direct messages first, which carry the sender keys; channel
    /// messages are stored as they come), then decrypts the stored channel messages it can.
    func sync(random: inout some RandomSource, showDirect: (ReceivedMessage) -> Void) throws {
        try client.drainQueued(random: &random, show: showDirect)
        try decryptWaiting()
    }

    /// Tries every stored, still-wrapped message of every channel against the sender keys held now.
    /// Our own messages (echoed by the relay) and messages that will never open are deleted.
    func decryptWaiting() throws {
        for channel in try book.all() {
            for entry in try book.entries(channel: channel.id) where entry.state == .waiting {
                let opened: (sender: [UInt8], message: SenderKeyMessage)
                do {
                    opened = try channel.secret.openEnvelope(entry.content, channel: channel.id)
                } catch {
                    try drop(channel, entry, "\(oneLine(error))")
                    continue
                }
                if opened.sender == me {
                    try book.remove(channel: channel.id, sequence: entry.sequence)
                    continue
                }
                let record = try client.senderKeys.senderKeyRecord(channel: channel.id.bytes, sender: opened.sender)
                // No key with this id from this sender yet: its distribution has not been
                // processed; the message waits (ChannelMessageOrder decides for how long).
                guard record?.states.contains(where: { $0.keyId == opened.message.keyId }) == true else { continue }
                do {
                    let plaintext = try SenderKeyCipher.decrypt(opened.message, channel: channel.id.bytes, sender: opened.sender,
                                                                store: client.senderKeys)
                    try book.markDecrypted(channel: channel.id, sequence: entry.sequence, sender: opened.sender,
                                           payload: try ChannelPayload(parsing: plaintext))
                } catch {
                    try drop(channel, entry, oneLine(error))
                }
            }
        }
    }

    private func drop(_ channel: LocalChannel, _ entry: StoredChannelEntry, _ reason: String) throws {
        FileHandle.standardError.write(Data("shroud: dropped undecryptable message \(entry.sequence) in channel \"\(channel.name)\": \(reason)\n".utf8))
        try book.remove(channel: channel.id, sequence: entry.sequence)
    }

    /// Hands the channel's decrypted payloads to `handle` in sequence order, each exactly once (it
    /// is deleted right after), stopping at a message still waiting for its sender key.
    func consume(_ channel: LocalChannel, now: UInt64, _ handle: (ReceivedChannelPayload) -> Void) throws {
        let entries = try book.entries(channel: channel.id)
        let decision = ChannelMessageOrder.decide(entries.map { .init(sequence: $0.sequence, receivedAt: $0.receivedAt, state: $0.state) },
                                                  now: now)
        let bySequence = Dictionary(entries.map { ($0.sequence, $0) }, uniquingKeysWith: { a, _ in a })
        let giveUp = Set(decision.giveUp)
        for sequence in (decision.show + decision.giveUp).sorted() {
            guard let entry = bySequence[sequence] else { continue }
            if giveUp.contains(sequence) {
                try drop(channel, entry, "its sender key never arrived")
                continue
            }
            let payload: ChannelPayload
            do {
                guard entry.content.count > 32 else { throw ProfileError.corrupt("a stored channel message is too short") }
                payload = try ChannelPayload(parsing: Array(entry.content.dropFirst(32)))
            } catch {
                // A damaged row must not block the channel forever.
                try drop(channel, entry, oneLine(error))
                continue
            }
            handle(ReceivedChannelPayload(channel: channel, sequence: sequence, sender: Array(entry.content.prefix(32)),
                                          receivedAt: entry.receivedAt, payload: payload))
            try book.remove(channel: channel.id, sequence: sequence)
        }
    }
}
