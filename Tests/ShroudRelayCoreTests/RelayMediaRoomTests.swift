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

    // MARK: Screen rooms through the session core

    @Test func screenRoomsThroughTheSessionProtocol() throws {
        let (h, channel, a, b, c) = try setUp()
        let d = try h.login(TestIdentity(seed: 4))
        h.request(d, .joinChannel(channel: channel))
        _ = h.take(a); _ = h.take(b); _ = h.take(d)
        // A non-member may neither share nor watch.
        #expect(errorCode(h.request(c, .joinRoom(channel: channel, transport: .session, purpose: .screenShare, maxLayer: 7))) == .notMember)
        #expect(errorCode(h.request(c, .joinRoom(channel: channel, transport: .session, purpose: .screenWatch, maxLayer: 0))) == .notMember)
        // Alice shares; Bob watches with a cap of 360p (layer 0); Dave may not share as well.
        let sharer = try grant(h.request(a, .joinRoom(channel: channel, transport: .session, purpose: .screenShare, maxLayer: 7)))
        #expect(sharer.stream % MediaLayers.streamBlockSize == 0)
        _ = try grant(h.request(b, .joinRoom(channel: channel, transport: .session, purpose: .screenWatch, maxLayer: 0)))
        #expect(errorCode(h.request(d, .joinRoom(channel: channel, transport: .session, purpose: .screenShare, maxLayer: 7))) == .screenAlreadyShared)
        _ = try grant(h.request(d, .joinRoom(channel: channel, transport: .session, purpose: .screenWatch, maxLayer: 7)))
        #expect(h.relay.statistics.mediaScreenRooms == 1 && h.relay.statistics.mediaScreenWatchers == 2)
        // A 1080p delta first: nobody gets it, and the sharer is asked for keyframes (layer 2 for
        // Dave; layer 0 once it appears, for Bob).
        func packet(_ layer: MediaLayer, _ sequence: UInt32, keyframe: Bool) throws -> [UInt8] {
            try MediaPacket(streamID: sharer.stream + UInt32(layer), sequence: sequence, frameNumber: sequence,
                            isKeyframe: keyframe, layer: layer, payload: [UInt8](repeating: layer, count: 200)).serialized()
        }
        h.sendRaw(a, SessionFrame(.mediaDatagram(try packet(2, 1, keyframe: false))).serialize())
        h.sendRaw(a, SessionFrame(.mediaDatagram(try packet(0, 1, keyframe: false))).serialize())
        #expect(h.take(b).isEmpty && h.take(d).isEmpty)
        let asked = h.take(a).compactMap { message -> KeyframeRequest? in
            guard case let .mediaDatagram(bytes) = message else { return nil }
            return try? KeyframeRequest(parsing: bytes)
        }
        #expect(Set(asked.map(\.layer)) == [0, 2] && asked.allSatisfy { $0.streamID == sharer.stream + UInt32($0.layer) })
        // Keyframes: each watcher gets its own layer only.
        let top = try packet(2, 2, keyframe: true), low = try packet(0, 2, keyframe: true)
        h.sendRaw(a, SessionFrame(.mediaDatagram(top)).serialize())
        h.sendRaw(a, SessionFrame(.mediaDatagram(low)).serialize())
        #expect(h.take(d) == [.mediaDatagram(top)])
        #expect(h.take(b) == [.mediaDatagram(low)])
        #expect(h.relay.statistics.mediaLayerSwitches == 2 && h.relay.statistics.mediaKeyframeRequests == 2)
        // Bob's receiver report reaches Alice; his media goes nowhere.
        let report = ReceiverReport(streamID: sharer.stream, fractionLost: 0, highestSequence: 2, cumulativeLost: 0, jitterMicroseconds: 10).serialized()
        h.sendRaw(b, SessionFrame(.mediaDatagram(report)).serialize())
        #expect(h.take(a) == [.mediaDatagram(report)])
        // Alice stops sharing: the watchers stay, and Dave may share now.
        #expect(h.request(a, .leaveRoom(channel: channel)) == [.ok])
        #expect(h.relay.media.withCore { $0.participants(in: channel, kind: .screen) } == [b, d])
        _ = try grant(h.request(d, .joinRoom(channel: channel, transport: .session, purpose: .screenShare, maxLayer: 7)))
        #expect(h.relay.media.withCore { $0.purpose(of: d) } == .screenShare)
    }

    @Test func aHeldBackKeyframeRequestIsSentByTheTick() throws {
        let (h, channel, a, b, _) = try setUp()
        let sharer = try grant(h.request(a, .joinRoom(channel: channel, transport: .session, purpose: .screenShare, maxLayer: 7)))
        _ = try grant(h.request(b, .joinRoom(channel: channel, transport: .session, purpose: .screenWatch, maxLayer: 7)))
        let delta = try MediaPacket(streamID: sharer.stream, sequence: 1, frameNumber: 1, payload: [1]).serialized()
        h.sendRaw(a, SessionFrame(.mediaDatagram(delta)).serialize())
        #expect(h.take(a).count == 1)
        // The sharer does not answer; the relay asks again after the interval, from its tick.
        h.advance(milliseconds: 499)
        #expect(h.take(a).isEmpty)
        h.advance(milliseconds: 1)
        let again = h.take(a)
        #expect(again.count == 1)
        if case let .mediaDatagram(bytes) = again.first { #expect((try? KeyframeRequest(parsing: bytes)) != nil) }
        else { Issue.record("expected a keyframe request, got \(again)") }
    }

    @Test func watchersAtTheLimitAndOnePastThroughTheSessionCore() throws {
        let h = RelayHarness(store: InMemoryRelayStore(), limits: RelayLimits(maximumConnections: 400, maximumConnectionsPerIP: 10,
                                                                                messageTTLMilliseconds: 3_600_000))
        let owner = try h.login(alice)
        let channel = channelID(7)
        h.request(owner, .createChannel(channel: channel, visibility: .open, metadata: blob(1)))
        // One member may watch from several devices (connections); each is a watcher.
        let watcher = TestIdentity(seed: 50)
        var last: [RelayMessage] = []
        for index in 0 ... MediaLimits.maximumWatchers {
            let connection = try h.login(watcher, address: "10.1.\(index / 200).\(index % 200)")
            if index == 0 { h.request(connection, .joinChannel(channel: channel)) }
            last = h.request(connection, .joinRoom(channel: channel, transport: .session, purpose: .screenWatch, maxLayer: 7))
            if index < MediaLimits.maximumWatchers { _ = try grant(last) }
        }
        #expect(errorCode(last) == .limitExceeded)
        #expect(h.relay.statistics.mediaScreenWatchers == MediaLimits.maximumWatchers)
        // The sharer is not a watcher: it still gets in.
        _ = try grant(h.request(owner, .joinRoom(channel: channel, transport: .session, purpose: .screenShare, maxLayer: 7)))
    }
}
