import ShroudWire
import Testing
@testable import ShroudRelayCore

/// Voice rooms through the session protocol: membership, leave and kick, WebSocket media.
@Suite struct RelayMediaRoomTests {
    let alice = TestIdentity(seed: 1), bob = TestIdentity(seed: 2), carol = TestIdentity(seed: 3)

    func grant(_ replies: [RelayMessage]) throws -> (token: MediaToken, stream: UInt32) {
        guard case let .roomJoined(_, token, stream, _, _) = try #require(replies.first) else {
            Issue.record("expected roomJoined, got \(replies)")
            throw WireError.invalid(field: "reply", reason: "\(replies)")
        }
        return (token, stream)
    }

    /// Alice owns an open channel; Bob joined it; Carol is not a member.
    func setUp() throws -> (RelayHarness, ChannelID, ConnectionID, ConnectionID, ConnectionID) {
        let h = RelayHarness(store: InMemoryRelayStore())
        h.relay.mediaPort = 8443
        let a = try h.login(alice), b = try h.login(bob), c = try h.login(carol)
        let channel = channelID(7)
        h.request(a, .createChannel(channel: channel, visibility: .open, metadata: blob(1)))
        h.request(b, .joinChannel(channel: channel))
        _ = h.take(a); _ = h.take(b)
        return (h, channel, a, b, c)
    }

    @Test func onlyMembersJoinTheRoom() throws {
        let (h, channel, a, _, c) = try setUp()
        #expect(errorCode(h.request(c, .joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7))) == .notMember)
        #expect(errorCode(h.request(c, .joinRoom(channel: channelID(9), transport: .datagram, purpose: .voice, maxLayer: 7))) == .notFound)
        let replies = h.request(a, .joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7))
        guard case let .roomJoined(joined, _, stream, expires, port) = try #require(replies.first) else { Issue.record("\(replies)"); return }
        #expect(joined == channel && stream != 0 && port == 8443)
        #expect(expires == h.now + MediaLimits.bindingLifetimeMilliseconds)
        #expect(h.relay.statistics.mediaParticipants == 1 && h.relay.statistics.mediaRooms == 1)
        #expect(h.request(a, .leaveRoom(channel: channel)) == [.ok])
        #expect(errorCode(h.request(a, .leaveRoom(channel: channel))) == .notMember)
        #expect(h.relay.statistics.mediaRooms == 0)
    }

    @Test func mediaRidesTheWebSocketBetweenSessionParticipants() throws {
        let (h, channel, a, b, _) = try setUp()
        let alicesStream = try grant(h.request(a, .joinRoom(channel: channel, transport: .session, purpose: .voice, maxLayer: 7))).stream
        _ = try grant(h.request(b, .joinRoom(channel: channel, transport: .session, purpose: .voice, maxLayer: 7)))
        let packet = try MediaPacket(streamID: alicesStream, sequence: 1, frameNumber: 1, payload: [UInt8](repeating: 5, count: 100)).serialized()
        // Media frames bypass the request rate limit: 300 in one millisecond all arrive.
        for _ in 0..<300 { h.sendRaw(a, SessionFrame(.mediaDatagram(packet)).serialize()) }
        let received = h.take(b)
        #expect(received.count == 300)
        #expect(received.allSatisfy { $0 == .mediaDatagram(packet) })
        #expect(h.take(a).isEmpty)
        #expect(h.relay.statistics.mediaPacketsForwarded == 300)
    }

    @Test func leavingOrBeingKickedFromTheChannelLeavesTheRoom() throws {
        let (h, channel, a, b, _) = try setUp()
        let alicesStream = try grant(h.request(a, .joinRoom(channel: channel, transport: .session, purpose: .voice, maxLayer: 7))).stream
        _ = try grant(h.request(b, .joinRoom(channel: channel, transport: .session, purpose: .voice, maxLayer: 7)))
        #expect(h.request(a, .kickMember(channel: channel, member: bob.key)) == [.ok])
        #expect(h.take(b).contains(.roomLeft(channel: channel)))
        #expect(h.relay.media.withCore { $0.participants(in: channel) } == [a])
        let packet = try MediaPacket(streamID: alicesStream, sequence: 1, frameNumber: 1, payload: [1]).serialized()
        h.sendRaw(a, SessionFrame(.mediaDatagram(packet)).serialize())
        #expect(!h.take(b).contains(.mediaDatagram(packet)))
        // A disconnect leaves the room too.
        h.relay.disconnected(a)
        #expect(h.relay.statistics.mediaParticipants == 0)
    }

    @Test func unusedDatagramParticipantsExpireWithRoomLeft() throws {
        let (h, channel, a, _, _) = try setUp()
        _ = try grant(h.request(a, .joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7)))
        h.advance(milliseconds: MediaLimits.bindingLifetimeMilliseconds)
        #expect(h.relay.statistics.mediaParticipants == 1)
        h.advance(milliseconds: 1)
        #expect(h.take(a).contains(.roomLeft(channel: channel)))
        #expect(h.relay.statistics.mediaParticipants == 0)
    }

    @Test func webSocketMediaReachesUDPParticipantsThroughTheAdapter() throws {
        let (h, channel, a, b, _) = try setUp()
        let alicesStream = try grant(h.request(a, .joinRoom(channel: channel, transport: .session, purpose: .voice, maxLayer: 7))).stream
        let bobs = try grant(h.request(b, .joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7)))
        let bobsAddress = MediaAddress.ipv4(127, 0, 0, 2, port: 5000)
        var sink = RecordingSink()
        let now = h.now
        MediaBind(token: bobs.token).serialized().withUnsafeBytes { bytes in
            h.relay.media.withCore { core in core.receive(datagram: bytes, from: bobsAddress, now: now, into: &sink) }
        }
        let packet = try MediaPacket(streamID: alicesStream, sequence: 1, frameNumber: 1, payload: [1, 2, 3]).serialized()
        h.sendRaw(a, SessionFrame(.mediaDatagram(packet)).serialize())
        #expect(h.datagramsSent.count == 1)
        #expect(h.datagramsSent.first?.0 == bobsAddress && h.datagramsSent.first?.1 == packet)
    }
}
