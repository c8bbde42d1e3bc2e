import Testing
import ShroudWire
@testable import ShroudRelayCore

@Suite struct RelayChannelTests {
    let owner = TestIdentity(seed: 1)
    let bob = TestIdentity(seed: 2)
    let carol = TestIdentity(seed: 3)
    let dave = TestIdentity(seed: 4)
    let room = channelID(0xC1)

    private func create(_ h: RelayHarness, _ id: ConnectionID, _ visibility: ChannelVisibility = .invitation) {
        #expect(h.request(id, .createChannel(channel: room, visibility: visibility, metadata: blob(0xEE))) ==
                [.channelJoined(channel: room, visibility: visibility, role: .owner, joinedAfter: 0, metadata: blob(0xEE))])
    }

    private func invite(_ h: RelayHarness, _ id: ConnectionID, uses: UInt16 = 1, ttl: UInt32 = 3600) throws -> InviteToken {
        guard case let .invite(token, expiresAt) = try #require(h.request(id, .createInvite(channel: room, uses: uses, ttlSeconds: ttl)).first) else {
            throw WireError.invalid(field: "invite", reason: "no invite")
        }
        #expect(expiresAt == h.now + UInt64(ttl) * 1000)
        return token
    }

    @Test(arguments: relayStoreKinds)
    func createJoinAndChannelIdsAreUnique(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        let b = try h.login(bob)
        create(h, o, .open)
        #expect(errorCode(h.request(b, .createChannel(channel: room, visibility: .open, metadata: blob(1)))) == .alreadyExists)
        let joined = h.request(b, .joinChannel(channel: room))
        #expect(joined == [.channelJoined(channel: room, visibility: .open, role: .member, joinedAfter: 0, metadata: blob(0xEE))])
        #expect(h.take(o).contains(.membershipChanged(channel: room, member: bob.key, change: .joined, role: .member)))
        #expect(h.request(b, .listMembers(channel: room)) ==
                [.members(channel: room, [ChannelMember(identity: owner.key, role: .owner), ChannelMember(identity: bob.key, role: .member)])])
        #expect(errorCode(h.request(b, .joinChannel(channel: channelID(0x99)))) == .notFound)
    }

    @Test(arguments: relayStoreKinds)
    func privateChannelsNeedAnInviteFromAnOwnerOrAdmin(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        let b = try h.login(bob)
        let c = try h.login(carol)
        create(h, o)
        #expect(errorCode(h.request(b, .joinChannel(channel: room))) == .forbidden)
        #expect(errorCode(h.request(b, .createInvite(channel: room, uses: 1, ttlSeconds: 60))) == .notMember)
        let token = try invite(h, o)
        #expect(h.request(b, .redeemInvite(token: token)).first ==
                .channelJoined(channel: room, visibility: .invitation, role: .member, joinedAfter: 0, metadata: blob(0xEE)))
        // A plain member cannot invite; an admin can.
        #expect(errorCode(h.request(b, .createInvite(channel: room, uses: 1, ttlSeconds: 60))) == .forbidden)
        #expect(h.request(o, .setRole(channel: room, member: bob.key, role: .admin)) == [.ok])
        let second = try invite(h, b)
        #expect(h.request(c, .redeemInvite(token: second)).count == 1)
        #expect(errorCode(h.request(c, .redeemInvite(token: try InviteToken(blob(1, size: 16))))) == .notFound)
    }

    @Test(arguments: relayStoreKinds)
    func inviteUsesAreConsumedAtTheLimitAndRefusedPastIt(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        create(h, o)
        let token = try invite(h, o, uses: 2)
        let b = try h.login(bob)
        let c = try h.login(carol)
        let d = try h.login(dave)
        #expect(h.request(b, .redeemInvite(token: token)).count == 1)
        // An existing member redeeming again takes no use.
        #expect(h.request(b, .redeemInvite(token: token)).count == 1)
        #expect(h.request(c, .redeemInvite(token: token)).count == 1)
        #expect(errorCode(h.request(d, .redeemInvite(token: token))) == .inviteExhausted)
        #expect(errorCode(h.request(d, .listMembers(channel: room))) == .notMember)
    }

    @Test(arguments: relayStoreKinds)
    func invitesExpire(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        create(h, o)
        let token = try invite(h, o, uses: 5, ttl: 60)
        let b = try h.login(bob)
        let c = try h.login(carol)
        h.now += 59_999
        #expect(h.request(b, .redeemInvite(token: token)).count == 1)
        h.now += 1
        #expect(errorCode(h.request(c, .redeemInvite(token: token))) == .inviteExhausted)
    }

    @Test(arguments: relayStoreKinds)
    func memberLimit(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 100_000)
        limits.maximumMembersPerChannel = 3
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let o = try h.login(owner)
        create(h, o, .open)
        #expect(h.request(try h.login(bob), .joinChannel(channel: room)).count == 1)
        #expect(h.request(try h.login(carol), .joinChannel(channel: room)).count == 1)
        #expect(errorCode(h.request(try h.login(dave), .joinChannel(channel: room))) == .limitExceeded)
    }

    @Test(arguments: relayStoreKinds)
    func messagesFanOutLiveAndWaitForOfflineMembersFromTheirJoin(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        create(h, o, .open)
        #expect(h.request(o, .sendChannel(channel: room, blob: blob(1))) == [.ok])
        var b = try h.login(bob)
        _ = h.request(b, .joinChannel(channel: room))
        let c = try h.login(carol)
        _ = h.request(c, .joinChannel(channel: room))
        _ = h.take(o); _ = h.take(b); _ = h.take(c)
        // Carol goes offline; owner sends two messages.
        h.relay.disconnected(c)
        #expect(h.request(o, .sendChannel(channel: room, blob: blob(2))) == [.ok])
        #expect(h.request(b, .sendChannel(channel: room, blob: blob(3))) == [.ok])
        #expect(channelDeliveries(h.take(b)).map(\.blob) == [blob(2), blob(3)])
        #expect(channelDeliveries(h.take(o)).map(\.blob) == [blob(2), blob(3)])
        // On reconnect Carol receives what she missed, and nothing from before her join.
        let c2 = try h.login(carol)
        let missed = channelDeliveries(h.take(c2))
        #expect(missed.map(\.blob) == [blob(2), blob(3)])
        #expect(missed.map(\.sequence) == [2, 3])
        #expect(h.request(c2, .acknowledgeChannel(channel: room, throughSequence: 3)) == [.ok])
        // Bob never acknowledged: he gets them again after reconnecting; Carol does not.
        h.relay.disconnected(b)
        h.relay.disconnected(c2)
        b = try h.login(bob)
        #expect(channelDeliveries(h.take(b)).map(\.sequence) == [2, 3])
        #expect(h.take(try h.login(carol)).isEmpty)
        // History never reaches before the join.
        let history = h.request(b, .fetchHistory(channel: room, afterSequence: 0, limit: 100))
        #expect(channelDeliveries(history).map(\.sequence) == [2, 3])
        #expect(history.last == .ok)
    }

    @Test(arguments: relayStoreKinds)
    func membershipIsCheckedOnEveryChannelOperation(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        let x = try h.login(dave)
        create(h, o, .open)
        let requests: [RelayMessage] = [
            .sendChannel(channel: room, blob: blob(1)), .listMembers(channel: room),
            .fetchHistory(channel: room, afterSequence: 0, limit: 1), .acknowledgeChannel(channel: room, throughSequence: 1),
            .createInvite(channel: room, uses: 1, ttlSeconds: 1), .leaveChannel(channel: room),
            .kickMember(channel: room, member: owner.key), .setRole(channel: room, member: owner.key, role: .member),
        ]
        for message in requests { #expect(errorCode(h.request(x, message)) == .notMember, "\(message.type)") }
        #expect(channelDeliveries(h.take(o)).isEmpty)
    }

    @Test(arguments: relayStoreKinds)
    func kickRequiresAHigherRoleAndStopsDelivery(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        let b = try h.login(bob)
        let c = try h.login(carol)
        create(h, o, .open)
        _ = h.request(b, .joinChannel(channel: room))
        _ = h.request(c, .joinChannel(channel: room))
        #expect(errorCode(h.request(b, .kickMember(channel: room, member: carol.key))) == .forbidden)
        #expect(h.request(o, .setRole(channel: room, member: bob.key, role: .admin)) == [.ok])
        #expect(errorCode(h.request(b, .kickMember(channel: room, member: owner.key))) == .forbidden)
        #expect(errorCode(h.request(b, .setRole(channel: room, member: carol.key, role: .admin))) == .forbidden)
        #expect(errorCode(h.request(o, .setRole(channel: room, member: carol.key, role: .owner))) == .forbidden)
        _ = h.take(o); _ = h.take(b); _ = h.take(c)
        #expect(h.request(b, .kickMember(channel: room, member: carol.key)) == [.ok])
        let notice = RelayMessage.membershipChanged(channel: room, member: carol.key, change: .kicked, role: .member)
        #expect(h.take(c) == [notice])
        #expect(h.take(o) == [notice])
        #expect(h.take(b) == [notice])
        #expect(h.request(o, .sendChannel(channel: room, blob: blob(5))) == [.ok])
        #expect(channelDeliveries(h.take(c)).isEmpty)
        #expect(channelDeliveries(h.take(b)).map(\.blob) == [blob(5)])
        #expect(errorCode(h.request(c, .fetchHistory(channel: room, afterSequence: 0, limit: 10))) == .notMember)
        #expect(errorCode(h.request(b, .kickMember(channel: room, member: carol.key))) == .notFound)
    }

    @Test(arguments: relayStoreKinds)
    func leavingAndTheOwnerRule(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let o = try h.login(owner)
        let b = try h.login(bob)
        create(h, o, .open)
        _ = h.request(b, .joinChannel(channel: room))
        #expect(errorCode(h.request(o, .leaveChannel(channel: room))) == .forbidden)
        _ = h.take(o)
        #expect(h.request(b, .leaveChannel(channel: room)) == [.ok])
        #expect(h.take(o) == [.membershipChanged(channel: room, member: bob.key, change: .left, role: .member)])
        #expect(h.request(o, .sendChannel(channel: room, blob: blob(1))) == [.ok])
        #expect(channelDeliveries(h.take(b)).isEmpty)
        // The last member leaving deletes the channel; its id becomes free.
        #expect(h.request(o, .leaveChannel(channel: room)) == [.ok])
        #expect(errorCode(h.request(b, .joinChannel(channel: room))) == .notFound)
        create(h, b)
    }

    @Test(arguments: relayStoreKinds)
    func aSlowMemberNeverDelaysTheOthersAndIsDisconnectedPastTheQueueLimit(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 100_000)
        limits.maximumOutboundFrames = 8
        limits.deliveryWindow = 1000
        limits.requestBurst = 1000
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let o = try h.login(owner)
        let b = try h.login(bob)
        let slow = try h.login(carol)
        let d = try h.login(dave)
        create(h, o, .open)
        _ = h.request(b, .joinChannel(channel: room))
        _ = h.request(slow, .joinChannel(channel: room))
        _ = h.take(o); _ = h.take(b); _ = h.take(slow)
        h.stalled.insert(slow)
        for i in 0..<9 { #expect(h.request(o, .sendChannel(channel: room, blob: blob(UInt8(i)))) == [.ok]) }
        #expect(channelDeliveries(h.take(b)).count == 9)
        #expect(channelDeliveries(h.take(o)).count == 9)
        // Deliveries to the slow reader stop at half its outbound queue; the rest wait in the store.
        #expect(channelDeliveries(h.take(slow)).count == 4)
        #expect(!h.closed.contains(slow))
        // Notices still go out; the queue fills to its limit (8 frames) and one past it closes it.
        _ = h.request(d, .joinChannel(channel: room))
        _ = h.request(d, .leaveChannel(channel: room))
        _ = h.request(d, .joinChannel(channel: room))
        _ = h.request(d, .leaveChannel(channel: room))
        #expect(h.take(slow).count == 4)
        #expect(!h.closed.contains(slow))
        _ = h.request(d, .joinChannel(channel: room))
        #expect(h.closed.contains(slow))
        #expect(h.take(o).count == 5)
        // Nothing was acknowledged, so reconnecting delivers all nine, paced by the writes.
        let back = try h.login(carol)
        #expect(channelDeliveries(h.take(back)).map(\.blob) == (0..<9).map { blob(UInt8($0)) })
    }

    @Test(arguments: relayStoreKinds)
    func heldBackDeliveriesResumeWhenWritesComplete(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 100_000)
        limits.maximumOutboundFrames = 8
        limits.requestBurst = 1000
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let a = try h.login(owner)
        let b = try h.login(bob)
        h.stalled.insert(b)
        for i in 0..<6 { _ = h.request(a, .sendDirect(recipient: bob.key, blob: blob(UInt8(i)))) }
        #expect(directDeliveries(h.take(b)).count == 4)
        h.unstall(b)
        #expect(directDeliveries(h.take(b)).map(\.blob) == [blob(4), blob(5)])
    }

    @Test(arguments: relayStoreKinds)
    func outboundByteLimitAtAndPast(_ kind: StoreKind) throws {
        let noticeSize = SessionFrame(.membershipChanged(channel: room, member: dave.key, change: .joined, role: .member)).serialize().count
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 100_000)
        limits.maximumOutboundBytes = noticeSize * 10
        limits.requestBurst = 1000
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let o = try h.login(owner)
        let d = try h.login(dave)
        create(h, o, .open)
        h.stalled.insert(o)
        for i in 0..<10 { _ = h.request(d, i % 2 == 0 ? .joinChannel(channel: room) : .leaveChannel(channel: room)) }
        // Ten unwritten notices: exactly at the byte limit, still connected.
        #expect(h.take(o).count == 10)
        #expect(!h.closed.contains(o))
        _ = h.request(d, .joinChannel(channel: room))
        #expect(h.closed.contains(o))
    }
}
