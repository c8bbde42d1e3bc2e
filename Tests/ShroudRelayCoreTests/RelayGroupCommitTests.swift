import Testing
import ShroudWire
@testable import ShroudRelayCore

/// Group commit (`Relay.receive(batch:)`): frames handled together under one store transaction,
/// replies only after it committed, and nothing acknowledged when the commit fails.
@Suite struct RelayGroupCommitTests {
    let alice = TestIdentity(seed: 1)
    let bob = TestIdentity(seed: 2)
    let carol = TestIdentity(seed: 3)

    private func frame(_ id: UInt32, _ message: RelayMessage) -> [UInt8] { SessionFrame(requestID: id, message).serialize() }

    @Test(arguments: relayStoreKinds)
    func aBatchAnswersEveryFrameInOrderAndDelivers(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let a = try h.login(alice)
        let b = try h.login(bob)
        let c = try h.login(carol)
        let batch: [(ConnectionID, [UInt8])] = [
            (a, frame(10, .sendDirect(recipient: bob.key, blob: blob(1)))),
            (c, frame(11, .sendDirect(recipient: bob.key, blob: blob(2)))),
            (a, frame(12, .sendDirect(recipient: bob.key, blob: blob(3)))),
            (c, frame(13, .countPrekeys)),
        ]
        h.apply(h.relay.receive(batch: batch, now: h.now))
        #expect(h.inbox[a]?.map(\.requestID) == [10, 12])
        #expect(h.inbox[a]?.allSatisfy { $0.message == .ok } == true)
        #expect(h.inbox[c]?.map(\.message) == [.ok, .prekeyCount(0)])
        let delivered = directDeliveries(h.take(b))
        #expect(delivered.map(\.blob) == [blob(1), blob(2), blob(3)])
        // Acknowledging in a later batch deletes them: nothing is delivered again on reconnect.
        h.apply(h.relay.receive(batch: [(b, frame(14, .acknowledgeDirect(delivered.map(\.id))))], now: h.now))
        #expect(h.take(b) == [.ok])
        let again = try h.login(bob)
        #expect(directDeliveries(h.take(again)).isEmpty)
    }

    @Test func aFailedCommitAcknowledgesNothingAndClosesWhoWasInvolved() throws {
        let store = CommitFailingStore()
        let h = RelayHarness(store: store)
        let a = try h.login(alice)
        let b = try h.login(bob)
        let c = try h.login(carol)
        store.failCommits = true
        h.apply(h.relay.receive(batch: [(a, frame(20, .sendDirect(recipient: bob.key, blob: blob(1))))], now: h.now))
        // Neither the sender's `ok` nor the recipient's delivery went out; both are closed and
        // forgotten; the bystander is untouched.
        #expect(h.take(a).isEmpty && h.take(b).isEmpty)
        #expect(h.closed == [a, b])
        #expect(h.relay.connectionCount == 1 && h.relay.identity(of: c) == carol.key)
    }
}

/// The in-memory store whose batches all fail to commit once `failCommits` is set (a full disk,
/// say). The calls inside still run, as they would before a failing COMMIT.
final class CommitFailingStore: RelayStore {
    let inner = InMemoryRelayStore()
    var failCommits = false

    func batch<T>(_ body: () throws -> T) throws -> T {
        let result = try body()
        if failCommits { throw RelayStoreError.storage("disk full") }
        return result
    }

    func publishPrekeys(owner: IdentityKey, agreement: IdentityAgreementKey, signed: SignedPrekey, oneTime: [OneTimePrekey],
                        maximumOneTime: Int) throws -> Bool {
        try inner.publishPrekeys(owner: owner, agreement: agreement, signed: signed, oneTime: oneTime, maximumOneTime: maximumOneTime)
    }
    func takeBundle(owner: IdentityKey) throws -> PrekeyBundle? { try inner.takeBundle(owner: owner) }
    func oneTimePrekeyCount(owner: IdentityKey) throws -> Int { try inner.oneTimePrekeyCount(owner: owner) }
    func enqueueDirect(id: MessageID, recipient: IdentityKey, receivedAt: UInt64, expiresAt: UInt64, blob: [UInt8], maximumQueued: Int) throws -> UInt64? {
        try inner.enqueueDirect(id: id, recipient: recipient, receivedAt: receivedAt, expiresAt: expiresAt, blob: blob, maximumQueued: maximumQueued)
    }
    func pendingDirect(recipient: IdentityKey, afterSequence: UInt64, limit: Int) throws -> [QueuedDirectMessage] {
        try inner.pendingDirect(recipient: recipient, afterSequence: afterSequence, limit: limit)
    }
    func deleteDirect(recipient: IdentityKey, ids: [MessageID]) throws -> Int { try inner.deleteDirect(recipient: recipient, ids: ids) }
    func createChannel(id: ChannelID, visibility: ChannelVisibility, metadata: [UInt8], owner: IdentityKey) throws -> Membership? {
        try inner.createChannel(id: id, visibility: visibility, metadata: metadata, owner: owner)
    }
    func channel(_ id: ChannelID) throws -> ChannelRecord? { try inner.channel(id) }
    func membership(channel: ChannelID, member: IdentityKey) throws -> Membership? { try inner.membership(channel: channel, member: member) }
    func addMember(channel: ChannelID, member: IdentityKey, role: ChannelRole, maximumMembers: Int) throws -> JoinOutcome {
        try inner.addMember(channel: channel, member: member, role: role, maximumMembers: maximumMembers)
    }
    func removeMember(channel: ChannelID, member: IdentityKey) throws -> Bool { try inner.removeMember(channel: channel, member: member) }
    func setRole(channel: ChannelID, member: IdentityKey, role: ChannelRole) throws -> Bool { try inner.setRole(channel: channel, member: member, role: role) }
    func members(channel: ChannelID) throws -> [ChannelMember] { try inner.members(channel: channel) }
    func memberships(of member: IdentityKey) throws -> [Membership] { try inner.memberships(of: member) }
    func createInvite(token: InviteToken, channel: ChannelID, uses: Int, expiresAt: UInt64) throws {
        try inner.createInvite(token: token, channel: channel, uses: uses, expiresAt: expiresAt)
    }
    func redeemInvite(token: InviteToken, member: IdentityKey, now: UInt64, maximumMembers: Int) throws -> JoinOutcome {
        try inner.redeemInvite(token: token, member: member, now: now, maximumMembers: maximumMembers)
    }
    func appendChannelMessage(channel: ChannelID, receivedAt: UInt64, expiresAt: UInt64, blob: [UInt8]) throws -> UInt64 {
        try inner.appendChannelMessage(channel: channel, receivedAt: receivedAt, expiresAt: expiresAt, blob: blob)
    }
    func channelMessages(channel: ChannelID, afterSequence: UInt64, limit: Int) throws -> [StoredChannelMessage] {
        try inner.channelMessages(channel: channel, afterSequence: afterSequence, limit: limit)
    }
    func acknowledgeChannel(channel: ChannelID, member: IdentityKey, through sequence: UInt64) throws {
        try inner.acknowledgeChannel(channel: channel, member: member, through: sequence)
    }
    func expire(now: UInt64) throws -> Int { try inner.expire(now: now) }
}
