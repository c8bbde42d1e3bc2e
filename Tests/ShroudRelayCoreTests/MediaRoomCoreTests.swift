import ShroudTestSupport
import ShroudWire
import Testing
@testable import ShroudRelayCore

/// What the room core sent, recorded.
struct RecordingSink: MediaSink {
    var datagram: [UInt8] = []
    var toAddresses: [(MediaAddress, [UInt8])] = []
    var toSessions: [(ConnectionID, [UInt8])] = []

    mutating func forwardReceived(to address: MediaAddress) { toAddresses.append((address, datagram)) }
    mutating func forwardReceived(toSession connection: ConnectionID) { toSessions.append((connection, datagram)) }
    mutating func send(copying bytes: UnsafeRawBufferPointer, to address: MediaAddress) { toAddresses.append((address, Array(bytes))) }
    mutating func send(copying bytes: UnsafeRawBufferPointer, toSession connection: ConnectionID) { toSessions.append((connection, Array(bytes))) }
}

/// The voice-room core on a virtual clock: binding, fan-out, drops by reason, NACKs, limits.
@Suite struct MediaRoomCoreTests {
    let channel = ChannelID(validated: [UInt8](repeating: 0xC3, count: 16))
    let other = ChannelID(validated: [UInt8](repeating: 0xD4, count: 16))
    let start: UInt64 = 1_700_000_000_000

    func connection(_ n: UInt64) -> ConnectionID { ConnectionID(rawValue: n) }
    func token(_ n: UInt8) -> MediaToken { MediaToken(validated: [UInt8](repeating: n, count: 16)) }
    func address(_ n: UInt8) -> MediaAddress { .ipv4(127, 0, 0, n, port: 40_000 + UInt16(n)) }

    func media(stream: UInt32, sequence: UInt32, size: Int = 80) -> [UInt8] {
        try! MediaPacket(streamID: stream, sequence: sequence, frameNumber: sequence, payload: [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: size)).serialized()
    }

    @discardableResult
    func deliver(_ core: inout MediaRoomCore, _ bytes: [UInt8], from: MediaAddress, now: UInt64) -> RecordingSink {
        var sink = RecordingSink(datagram: bytes)
        bytes.withUnsafeBytes { core.receive(datagram: $0, from: from, now: now, into: &sink) }
        return sink
    }

    /// Joins `n` participants over UDP and binds each from address(i); returns their grants.
    func room(_ core: inout MediaRoomCore, _ n: Int) throws -> [MediaGrant] {
        var grants: [MediaGrant] = []
        for i in 1...n {
            let grant = try core.join(channel: channel, connection: connection(UInt64(i)), transport: .datagram, token: token(UInt8(i)), now: start)
            let answer = deliver(&core, MediaBind(token: grant.token).serialized(), from: address(UInt8(i)), now: start)
            #expect(answer.toAddresses.map(\.0) == [address(UInt8(i))])
            #expect(answer.toAddresses.first?.1 == MediaBind(token: grant.token, isAcknowledgement: true).serialized())
            grants.append(grant)
        }
        return grants
    }

    @Test func mediaFansOutToEveryOtherBoundParticipantUnchanged() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 4)
        let packet = media(stream: grants[0].streamID, sequence: 1)
        let sink = deliver(&core, packet, from: address(1), now: start + 20)
        #expect(sink.toAddresses.map(\.0) == [address(2), address(3), address(4)])
        #expect(sink.toAddresses.allSatisfy { $0.1 == packet })
        #expect(core.statistics.packetsForwarded == 3)
        #expect(core.statistics.rooms == 1 && core.statistics.participants == 4 && core.statistics.bindings == 4)
        // A participant in another room gets nothing.
        _ = try core.join(channel: other, connection: connection(9), transport: .datagram, token: token(9), now: start)
        deliver(&core, MediaBind(token: token(9)).serialized(), from: address(9), now: start)
        #expect(!deliver(&core, packet, from: address(1), now: start + 40).toAddresses.contains { $0.0 == address(9) })
    }

    @Test func unboundAddressesAndBadTokensAreDroppedAndCounted() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 2)
        #expect(deliver(&core, media(stream: grants[0].streamID, sequence: 1), from: address(50), now: start).toAddresses.isEmpty)
        #expect(deliver(&core, MediaBind(token: token(99)).serialized(), from: address(51), now: start).toAddresses.isEmpty)
        // A bound answer (relay → client) sent to the relay is not a bind.
        #expect(deliver(&core, MediaBind(token: grants[0].token, isAcknowledgement: true).serialized(), from: address(52), now: start).toAddresses.isEmpty)
        #expect(core.statistics.droppedUnbound == 3)
        #expect(core.statistics.packetsForwarded == 0)
    }

    @Test func malformedTruncatedOversizedAndForeignStreamsAreDroppedAndCounted() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 3)
        let good = media(stream: grants[0].streamID, sequence: 1)
        for length in 1..<MediaPacket.headerBytes + 1 { deliver(&core, Array(good.prefix(length)), from: address(1), now: start) }
        deliver(&core, [0x00] + good.dropFirst(), from: address(1), now: start)   // version 0
        deliver(&core, [], from: address(1), now: start)
        #expect(core.statistics.droppedMalformed == MediaPacket.headerBytes + 2)
        // At the size limit forwarded; one past it dropped.
        let largest = media(stream: grants[0].streamID, sequence: 2, size: MediaPacket.maxPayloadBytes)
        #expect(largest.count == MediaPlane.maxDatagramBytes)
        #expect(deliver(&core, largest, from: address(1), now: start).toAddresses.count == 2)
        #expect(deliver(&core, largest + [0], from: address(1), now: start).toAddresses.isEmpty)
        #expect(core.statistics.droppedOversized == 1)
        // Someone else's stream id (spoofing another speaker) is dropped.
        #expect(deliver(&core, media(stream: grants[1].streamID, sequence: 3), from: address(1), now: start).toAddresses.isEmpty)
        #expect(core.statistics.droppedForeignStream == 1)
        // The call goes on.
        #expect(deliver(&core, media(stream: grants[0].streamID, sequence: 4), from: address(1), now: start).toAddresses.count == 2)
    }

    @Test func nacksAreAnsweredFromTheCacheToTheAskerOnly() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 3)
        var sent: [UInt32: [UInt8]] = [:]
        for sequence in UInt32(1)...20 {
            sent[sequence] = media(stream: grants[0].streamID, sequence: sequence)
            deliver(&core, sent[sequence]!, from: address(1), now: start + UInt64(sequence) * 20)
        }
        let nack = try NackPacket(streamID: grants[0].streamID, missing: [3, 7, 8, 600])
        let answer = deliver(&core, nack.serialized(), from: address(2), now: start + 500)
        #expect(answer.toAddresses.map(\.0) == [address(2), address(2), address(2)])
        #expect(answer.toAddresses.map(\.1) == [sent[3]!, sent[7]!, sent[8]!])
        #expect(core.statistics.nacksAnswered == 1 && core.statistics.retransmissionsSent == 3 && core.statistics.retransmissionsGone == 1)
        // A NACK for a stream of another room, or unknown, is dropped.
        #expect(deliver(&core, try NackPacket(streamID: 999, missing: [1]).serialized(), from: address(2), now: start + 500).toAddresses.isEmpty)
        #expect(core.statistics.droppedUnknownStream == 1)
    }

    @Test func receiverReportsAndKeyframeRequestsReachTheStreamsSender() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 3)
        let report = ReceiverReport(streamID: grants[0].streamID, fractionLost: 3, highestSequence: 9, cumulativeLost: 1, jitterMicroseconds: 500).serialized()
        #expect(deliver(&core, report, from: address(3), now: start).toAddresses.map(\.0) == [address(1)])
        let keyframe = try KeyframeRequest(streamID: grants[1].streamID).serialized()
        #expect(deliver(&core, keyframe, from: address(3), now: start).toAddresses.map(\.0) == [address(2)])
        #expect(deliver(&core, Array(keyframe.prefix(7)), from: address(3), now: start).toAddresses.isEmpty)
        #expect(core.statistics.droppedMalformed == 1)
    }

    @Test func roomSizeAtTheLimitAndOnePast() throws {
        var core = MediaRoomCore()
        for i in 1...MediaLimits.maximumRoomSize {
            _ = try core.join(channel: channel, connection: connection(UInt64(i)), transport: .datagram, token: token(UInt8(truncatingIfNeeded: i)), now: start)
        }
        #expect(core.participants(in: channel).count == MediaLimits.maximumRoomSize)
        #expect(throws: MediaRoomCore.JoinRefusal.roomFull) {
            try core.join(channel: channel, connection: connection(100_000), transport: .datagram, token: token(0), now: start)
        }
        #expect(core.room(of: connection(100_000)) == nil)
    }

    @Test func perSenderPacketRateAtTheLimitAndOnePast() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 2)
        // The burst: exactly packetBurst datagrams in the same millisecond pass, one more is dropped.
        var forwarded = 0
        for sequence in 1...MediaLimits.packetBurst + 1 {
            forwarded += deliver(&core, media(stream: grants[0].streamID, sequence: UInt32(sequence)), from: address(1), now: start).toAddresses.count
        }
        #expect(forwarded == MediaLimits.packetBurst)
        #expect(core.statistics.droppedRateLimited == 1)
        // After one second the sustained rate is available again, and not more.
        forwarded = 0
        for sequence in 1...MediaLimits.maximumPacketsPerSecond + 1 {
            forwarded += deliver(&core, media(stream: grants[0].streamID, sequence: UInt32(2000 + sequence)), from: address(1), now: start + 1000).toAddresses.count
        }
        #expect(forwarded == MediaLimits.maximumPacketsPerSecond)
        #expect(core.statistics.droppedRateLimited == 2)
    }

    @Test func bindingsExpireWithoutRefreshAndMoveWithTheAddress() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 2)
        // Refreshed just inside the lifetime: kept.
        let refresh = start + MediaLimits.bindingLifetimeMilliseconds
        #expect(deliver(&core, MediaBind(token: grants[0].token).serialized(), from: address(1), now: refresh).toAddresses.count == 1)
        #expect(core.expire(now: refresh + 1).map(\.0) == [connection(2)])
        #expect(core.participants(in: channel) == [connection(1)])
        // A new address (NAT rebinding) takes over; the old one is unbound.
        #expect(deliver(&core, MediaBind(token: grants[0].token).serialized(), from: address(7), now: refresh + 10).toAddresses.count == 1)
        #expect(core.statistics.bindings == 1)
        _ = deliver(&core, media(stream: grants[0].streamID, sequence: 1), from: address(1), now: refresh + 20)
        #expect(core.statistics.droppedUnbound == 1)
        // Past the lifetime a token no longer binds.
        #expect(core.expire(now: refresh + 10 + MediaLimits.bindingLifetimeMilliseconds + 1).map(\.0) == [connection(1)])
        #expect(deliver(&core, MediaBind(token: grants[0].token).serialized(), from: address(1), now: refresh + 100_000).toAddresses.isEmpty)
        #expect(core.statistics.rooms == 0)
    }

    @Test func sessionParticipantsGetTheSamePacketsAndLeavingStopsThem() throws {
        var core = MediaRoomCore()
        let grants = try room(&core, 2)
        let web = try core.join(channel: channel, connection: connection(3), transport: .session, token: token(3), now: start)
        let packet = media(stream: grants[0].streamID, sequence: 1)
        let sink = deliver(&core, packet, from: address(1), now: start)
        #expect(sink.toSessions.map(\.0) == [connection(3)])
        #expect(sink.toSessions.first?.1 == packet)
        // From the session participant to both UDP participants.
        let own = media(stream: web.streamID, sequence: 1)
        var fromWeb = RecordingSink(datagram: own)
        own.withUnsafeBytes { core.receive(sessionDatagram: $0, from: connection(3), now: start, into: &fromWeb) }
        #expect(fromWeb.toAddresses.map(\.0) == [address(1), address(2)])
        // A session participant's token does not bind a UDP address.
        #expect(deliver(&core, MediaBind(token: web.token).serialized(), from: address(3), now: start).toAddresses.isEmpty)
        #expect(core.leave(connection: connection(3)) == channel)
        #expect(deliver(&core, media(stream: grants[0].streamID, sequence: 2), from: address(1), now: start).toSessions.isEmpty)
    }
}

/// Malformed-packet injection: random and mutated datagrams from bound and unbound addresses never
/// trap, every one is counted once, and the call goes on afterwards.
@Suite struct MediaRoomCoreFuzzTests {
    @Test func randomAndMutatedDatagramsAreCountedAndNeverStopTheCall() throws {
        let channel = ChannelID(validated: [UInt8](repeating: 1, count: 16))
        var core = MediaRoomCore()
        let now: UInt64 = 1_700_000_000_000
        var grants: [MediaGrant] = []
        for i in 1...3 {
            let grant = try core.join(channel: channel, connection: ConnectionID(rawValue: UInt64(i)), transport: .datagram,
                                      token: MediaToken(validated: [UInt8](repeating: UInt8(i), count: 16)), now: now)
            var sink = RecordingSink()
            MediaBind(token: grant.token).serialized().withUnsafeBytes {
                core.receive(datagram: $0, from: .ipv4(127, 0, 0, UInt8(i), port: 9), now: now, into: &sink)
            }
            grants.append(grant)
        }
        let seeds: [[UInt8]] = [
            try MediaPacket(streamID: grants[0].streamID, sequence: 1, frameNumber: 1, payload: [1, 2, 3]).serialized(),
            try NackPacket(streamID: grants[0].streamID, missing: [1, 2, 40]).serialized(),
            ReceiverReport(streamID: grants[0].streamID, fractionLost: 1, highestSequence: 2, cumulativeLost: 3, jitterMicroseconds: 4).serialized(),
            try KeyframeRequest(streamID: grants[0].streamID).serialized(),
            MediaBind(token: grants[0].token).serialized(),
        ]
        var random = SplitMix64(seed: 5)
        let before = core.statistics.packetsReceived
        let rounds = 20_000
        for round in 0..<rounds {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...1300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            } else {
                bytes = seeds[Int.random(in: 0..<seeds.count, using: &random)]
                for _ in 0..<Int.random(in: 1...4, using: &random) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
                if Bool.random(using: &random) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &random))) }
            }
            let from = MediaAddress.ipv4(127, 0, 0, UInt8.random(in: 1...5, using: &random), port: 9)
            var sink = RecordingSink(datagram: bytes)
            // One millisecond apart, so the rate limit does not hide the parsers.
            bytes.withUnsafeBytes { core.receive(datagram: $0, from: from, now: now + UInt64(round), into: &sink) }
            #expect(sink.toAddresses.allSatisfy { $0.1.count <= MediaPlane.maxDatagramBytes })
        }
        #expect(core.statistics.packetsReceived - before == rounds)
        // Re-bind (a mutated bind may have moved an address) and speak: the call goes on.
        var sink = RecordingSink()
        for (i, grant) in grants.enumerated() {
            MediaBind(token: grant.token).serialized().withUnsafeBytes {
                core.receive(datagram: $0, from: .ipv4(127, 0, 0, UInt8(i + 1), port: 9), now: now + UInt64(rounds), into: &sink)
            }
        }
        let packet = try MediaPacket(streamID: grants[0].streamID, sequence: 100_000, frameNumber: 5, payload: [9]).serialized()
        sink = RecordingSink(datagram: packet)
        packet.withUnsafeBytes { core.receive(datagram: $0, from: .ipv4(127, 0, 0, 1, port: 9), now: now + UInt64(rounds) + 1, into: &sink) }
        #expect(sink.toAddresses.count == 2)
    }

    /// The same for a screen room: a sharer with two layers and three watchers; mutated media,
    /// reports, keyframe requests and NACKs from all of them, with polls between. Afterwards a
    /// keyframe still reaches every watcher, on one layer each.
    @Test func screenRoomsSurviveRandomAndMutatedDatagrams() throws {
        let channel = ChannelID(validated: [UInt8](repeating: 2, count: 16))
        var core = MediaRoomCore()
        let now: UInt64 = 1_700_000_000_000
        func address(_ i: Int) -> MediaAddress { .ipv4(127, 0, 1, UInt8(i), port: 9) }
        var grants: [MediaGrant] = []
        for i in 1...4 {
            let grant = try core.join(channel: channel, purpose: i == 1 ? .screenShare : .screenWatch, maximumLayer: i == 2 ? 0 : 7,
                                      connection: ConnectionID(rawValue: UInt64(i)), transport: .datagram,
                                      token: MediaToken(validated: [UInt8](repeating: UInt8(i), count: 16)), now: now)
            var sink = RecordingSink()
            MediaBind(token: grant.token).serialized().withUnsafeBytes { core.receive(datagram: $0, from: address(i), now: now, into: &sink) }
            grants.append(grant)
        }
        let base = grants[0].streamID
        let seeds: [[UInt8]] = [
            try MediaPacket(streamID: base, sequence: 1, frameNumber: 1, isKeyframe: true, layer: 0, payload: [1, 2, 3]).serialized(),
            try MediaPacket(streamID: base + 2, sequence: 1, frameNumber: 1, fragmentCount: 3, isKeyframe: true, layer: 2, payload: [4, 5]).serialized(),
            try NackPacket(streamID: base + 2, missing: [1, 2, 40]).serialized(),
            ReceiverReport(streamID: base + 2, fractionLost: 60, highestSequence: 2, cumulativeLost: 3, jitterMicroseconds: 4).serialized(),
            try KeyframeRequest(streamID: base + 2, layer: 2).serialized(),
            MediaBind(token: grants[1].token).serialized(),
        ]
        var random = SplitMix64(seed: 6)
        let before = core.statistics.packetsReceived
        let rounds = 20_000
        for round in 0..<rounds {
            var bytes = seeds[Int.random(in: 0..<seeds.count, using: &random)]
            if round % 3 != 0 {
                for _ in 0..<Int.random(in: 1...3, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
                if Bool.random(using: &random) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &random))) }
            }
            var sink = RecordingSink(datagram: bytes)
            let time = now + UInt64(round)
            bytes.withUnsafeBytes { core.receive(datagram: $0, from: address(Int.random(in: 1...5, using: &random)), now: time, into: &sink) }
            if round % 50 == 0 { core.poll(now: time, into: &sink) }
            if round % 5_000 == 0 {
                // A watcher leaves and comes back, so removal is exercised mid-storm.
                core.leave(connection: ConnectionID(rawValue: 3))
                grants[2] = try core.join(channel: channel, purpose: .screenWatch, connection: ConnectionID(rawValue: 3), transport: .datagram,
                                          token: MediaToken(validated: [UInt8](repeating: 3, count: 16)), now: time)
            }
            #expect(sink.toAddresses.allSatisfy { $0.1.count <= MediaPlane.maxDatagramBytes })
        }
        #expect(core.statistics.packetsReceived - before == rounds)
        // The sharer's mutated packets may have moved its frame numbers anywhere (which holds its
        // own watchers back until it shares again): it joins again, with a fresh stream block.
        // Everyone re-binds; then keyframes on both layers: every watcher gets exactly one layer.
        // Within the binding lifetime of the watchers' joins (20 s of rounds + 1 s).
        let later = now + UInt64(rounds) + 1_000
        grants[0] = try core.join(channel: channel, purpose: .screenShare, connection: ConnectionID(rawValue: 1), transport: .datagram,
                                  token: MediaToken(validated: [UInt8](repeating: 0x51, count: 16)), now: later)
        let fresh = grants[0].streamID
        var sink = RecordingSink()
        for (i, grant) in grants.enumerated() {
            MediaBind(token: grant.token).serialized().withUnsafeBytes { core.receive(datagram: $0, from: address(i + 1), now: later, into: &sink) }
        }
        var received: [MediaAddress: Set<MediaLayer>] = [:]
        // Deltas first, so the selector knows both layers before anyone switches.
        for (offset, layer) in [MediaLayer(0), 2, 0, 2].enumerated() {
            let packet = try MediaPacket(streamID: fresh + UInt32(layer), sequence: 100_000 + UInt32(offset), frameNumber: 100_000 + UInt32(offset / 2),
                                         isKeyframe: offset >= 2, layer: layer, payload: [9]).serialized()
            sink = RecordingSink(datagram: packet)
            packet.withUnsafeBytes { core.receive(datagram: $0, from: address(1), now: later + 1 + UInt64(offset), into: &sink) }
            for (destination, bytes) in sink.toAddresses where destination != address(1) {
                received[destination, default: []].insert(try MediaRoutingHeader(parsing: bytes).layer)
            }
        }
        #expect(received[address(2)] == [0])
        #expect(received[address(3)] == [2] && received[address(4)] == [2])
    }
}
