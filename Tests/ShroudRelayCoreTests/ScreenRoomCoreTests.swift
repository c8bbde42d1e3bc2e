import ShroudTestSupport
import ShroudWire
import Testing
@testable import ShroudRelayCore

/// Screen rooms in the media core on a virtual clock: one sharer, watchers with layer caps, the
/// layer selector in the forwarding path, feedback, keyframe requests, removal and limits.
@Suite struct ScreenRoomCoreTests {
    let channel = ChannelID(validated: [UInt8](repeating: 0xC3, count: 16))
    let start: UInt64 = 1_700_000_000_000

    func connection(_ n: Int) -> ConnectionID { ConnectionID(rawValue: UInt64(n)) }
    func token(_ n: Int) -> MediaToken { MediaToken(validated: [UInt8(n >> 8), UInt8(n & 255)] + [UInt8](repeating: 0xAB, count: 14)) }
    func address(_ n: Int) -> MediaAddress { .ipv4(127, 0, UInt8(n >> 8), UInt8(n & 255), port: 40_000) }

    /// The keyframe requests among what the core sent, with their destination.
    func keyframeRequests(_ sink: RecordingSink) -> [(MediaAddress, KeyframeRequest)] {
        sink.toAddresses.compactMap { destination, bytes in
            (try? KeyframeRequest(parsing: bytes)).map { (destination, $0) }
        }
    }

    /// A fake sharer: sends frames on its layers with per-layer sequence numbers, keyframes when
    /// asked, and records what the relay forwarded to whom.
    struct Sharer {
        let grant: MediaGrant
        let address: MediaAddress
        var sequences = [UInt32](repeating: 0, count: 8)
        var frame: UInt32 = 0
        var keyframeWanted = Set<MediaLayer>()

        func stream(_ layer: MediaLayer) -> UInt32 { grant.streamID + UInt32(layer) }

        /// One frame on each layer (one packet each); returns, per destination, the (layer,
        /// keyframe) of what it received.
        mutating func sendFrame(_ core: inout MediaRoomCore, layers: [MediaLayer], forceKeyframe: Bool = false,
                                now: UInt64) throws -> [MediaAddress: [(MediaLayer, Bool)]] {
            frame += 1
            var received: [MediaAddress: [(MediaLayer, Bool)]] = [:]
            for layer in layers {
                let keyframe = forceKeyframe || keyframeWanted.contains(layer)
                keyframeWanted.remove(layer)
                sequences[Int(layer)] += 1
                let bytes = try MediaPacket(streamID: stream(layer), sequence: sequences[Int(layer)], frameNumber: frame,
                                            isKeyframe: keyframe, layer: layer, payload: [UInt8](repeating: layer, count: 100)).serialized()
                var sink = RecordingSink(datagram: bytes)
                bytes.withUnsafeBytes { core.receive(datagram: $0, from: address, now: now, into: &sink) }
                absorb(sink)
                for (destination, datagram) in sink.toAddresses where destination != address {
                    let header = try MediaRoutingHeader(parsing: datagram)
                    received[destination, default: []].append((header.layer, header.isKeyframe))
                }
            }
            return received
        }

        /// Notes the keyframe requests the relay sent to this sharer.
        mutating func absorb(_ sink: RecordingSink) {
            for (destination, bytes) in sink.toAddresses where destination == address {
                if let request = try? KeyframeRequest(parsing: bytes) { keyframeWanted.insert(request.layer) }
            }
        }
    }

    @discardableResult
    func deliver(_ core: inout MediaRoomCore, _ bytes: [UInt8], from: MediaAddress, now: UInt64) -> RecordingSink {
        var sink = RecordingSink(datagram: bytes)
        bytes.withUnsafeBytes { core.receive(datagram: $0, from: from, now: now, into: &sink) }
        return sink
    }

    /// Joins connection `n` for `purpose` over UDP and binds it from address(n).
    @discardableResult
    func join(_ core: inout MediaRoomCore, _ n: Int, _ purpose: RoomPurpose, cap: MediaLayer = 7, now: UInt64) throws -> (MediaGrant, RecordingSink) {
        let grant = try core.join(channel: channel, purpose: purpose, maximumLayer: cap, connection: connection(n),
                                  transport: .datagram, token: token(n), now: now)
        let sink = deliver(&core, MediaBind(token: grant.token).serialized(), from: address(n), now: now)
        return (grant, sink)
    }

    /// A sharer (connection 1) and watchers 2… with the given caps, all bound.
    func screenRoom(_ core: inout MediaRoomCore, caps: [MediaLayer]) throws -> Sharer {
        let (grant, _) = try join(&core, 1, .screenShare, now: start)
        for (i, cap) in caps.enumerated() { try join(&core, i + 2, .screenWatch, cap: cap, now: start) }
        return Sharer(grant: grant, address: address(1))
    }

    @Test func streamBlocksAreEightAlignedAndDistinct() throws {
        var core = MediaRoomCore()
        let a = try join(&core, 1, .screenShare, now: start).0
        let b = try join(&core, 2, .screenWatch, now: start).0
        let c = try core.join(channel: channel, connection: connection(3), transport: .datagram, token: token(3), now: start)
        for grant in [a, b, c] { #expect(grant.streamID % MediaLayers.streamBlockSize == 0 && grant.streamID != 0) }
        #expect(Set([a.streamID, b.streamID, c.streamID]).count == 3)
        // The voice join is in another room of the same channel.
        #expect(core.participants(in: channel, kind: .screen) == [connection(1), connection(2)])
        #expect(core.participants(in: channel) == [connection(3)])
        #expect(core.statistics.rooms == 2 && core.statistics.screenRooms == 1 && core.statistics.screenWatchers == 1)
    }

    @Test func eachWatcherGetsOneLayerCappedFromItsKeyframeOn() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7, 0])
        // Deltas first (a share seen mid-stream): nobody receives anything, and the relay asks
        // the sharer for keyframes of both targets (layer 2 for the uncapped, 0 for the capped).
        let first = try sharer.sendFrame(&core, layers: [0, 2], now: start + 10)
        #expect(first.isEmpty)
        #expect(sharer.keyframeWanted == [0, 2])
        var got: [MediaAddress: [(MediaLayer, Bool)]] = [:]
        for step in 1...30 {
            for (destination, packets) in try sharer.sendFrame(&core, layers: [0, 2], now: start + 10 + UInt64(step) * 33) {
                got[destination, default: []] += packets
            }
        }
        let full = try #require(got[address(2)]), capped = try #require(got[address(3)])
        #expect(full.count == 30 && full.allSatisfy { $0.0 == 2 } && full.first?.1 == true)
        #expect(capped.count == 30 && capped.allSatisfy { $0.0 == 0 } && capped.first?.1 == true)
        #expect(core.currentLayer(of: connection(2)) == 2 && core.currentLayer(of: connection(3)) == 0)
        #expect(core.statistics.layerSwitches == 2 && core.statistics.keyframeRequestsSent == 2)
        // The sharer never gets its own media back.
        #expect(got[address(1)] == nil)
    }

    @Test func aJoiningWatcherCostsExactlyOneKeyframeRequest() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7])
        var now = start
        for _ in 0..<20 { now += 33; _ = try sharer.sendFrame(&core, layers: [0, 2], now: now) }
        #expect(sharer.keyframeWanted.isEmpty && core.currentLayer(of: connection(2)) == 2)
        let before = core.statistics.keyframeRequestsSent
        // Joining alone asks nothing (over UDP the watcher is not a viewer until it binds).
        let grant = try core.join(channel: channel, purpose: .screenWatch, maximumLayer: 7, connection: connection(3),
                                  transport: .datagram, token: token(3), now: now)
        var polled = RecordingSink()
        core.poll(now: now, into: &polled)
        #expect(polled.toAddresses.isEmpty)
        // The bind does: one request, for layer 2 on the sharer's stream base + 2, to the sharer.
        let bound = deliver(&core, MediaBind(token: grant.token).serialized(), from: address(3), now: now + 1)
        let requests = keyframeRequests(bound)
        #expect(requests.count == 1)
        #expect(requests.first?.0 == address(1))
        #expect(requests.first?.1 == (try KeyframeRequest(streamID: sharer.stream(2), layer: 2)))
        sharer.absorb(bound)
        // Deltas keep flowing; no more requests while the keyframe comes; the joiner gets the
        // keyframe and everything after it, on one layer.
        var joinerGot: [(MediaLayer, Bool)] = []
        for _ in 0..<30 {
            now += 33
            joinerGot += try sharer.sendFrame(&core, layers: [0, 2], now: now)[address(3)] ?? []
            var sink = RecordingSink()
            core.poll(now: now, into: &sink)
            #expect(sink.toAddresses.isEmpty)
        }
        #expect(core.statistics.keyframeRequestsSent - before == 1)
        #expect(joinerGot.count == 30 && joinerGot.first?.1 == true && joinerGot.allSatisfy { $0.0 == 2 })
    }

    @Test func twoJoinersWithinTheIntervalShareOneRequest() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [])
        var now = start
        // The sharer streams with no watcher; its first frames were keyframes.
        _ = try sharer.sendFrame(&core, layers: [0, 2], forceKeyframe: true, now: now)
        let before = core.statistics.keyframeRequestsSent
        let first = try join(&core, 2, .screenWatch, now: now + 100).1
        sharer.absorb(first)
        #expect(keyframeRequests(first).count == 1)
        // The second joiner, 400 ms later, gets no request of its own: the first one is pending.
        let second = try join(&core, 3, .screenWatch, now: now + 500).1
        #expect(keyframeRequests(second).isEmpty)
        #expect(core.nextDeadline == now + 100 + 500)
        now += 550
        let got = try sharer.sendFrame(&core, layers: [0, 2], now: now)
        #expect(got[address(2)]?.first?.1 == true && got[address(3)]?.first?.1 == true)
        var sink = RecordingSink()
        core.poll(now: now + 600, into: &sink)
        #expect(sink.toAddresses.isEmpty && core.nextDeadline == nil)
        #expect(core.statistics.keyframeRequestsSent - before == 1)
    }

    @Test func aHeldBackRequestIsSentByPollAtTheDeadline() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7])
        _ = try sharer.sendFrame(&core, layers: [2], now: start)
        #expect(sharer.keyframeWanted == [2])
        // The sharer ignores the request (lost): it is repeated at the interval, by `poll`.
        let due = try #require(core.nextDeadline)
        #expect(due == start + 500)
        var early = RecordingSink()
        core.poll(now: due - 1, into: &early)
        #expect(early.toAddresses.isEmpty)
        var onTime = RecordingSink()
        core.poll(now: due, into: &onTime)
        #expect(keyframeRequests(onTime).map(\.0) == [address(1)])
    }

    @Test func lossyReportsMoveAWatcherDownAndCleanReportsBackUp() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7])
        var now = start
        func step(_ fractionLost: UInt8?) throws -> [(MediaLayer, Bool)] {
            now += 100
            let got = try sharer.sendFrame(&core, layers: [0, 2], now: now)[address(2)] ?? []
            if let fractionLost, now % 500 == 0 {
                let report = ReceiverReport(streamID: sharer.stream(core.currentLayer(of: connection(2)) ?? 0), fractionLost: fractionLost,
                                            highestSequence: 1, cumulativeLost: 0, jitterMicroseconds: 0).serialized()
                sharer.absorb(deliver(&core, report, from: address(2), now: now))
            }
            var sink = RecordingSink()
            core.poll(now: now, into: &sink)
            sharer.absorb(sink)
            return got
        }
        for _ in 0..<10 { _ = try step(nil) }
        #expect(core.currentLayer(of: connection(2)) == 2)
        // Sustained loss (40/256 ≈ 16 %, every 500 ms): moved down to layer 0 at its keyframe.
        for _ in 0..<20 { _ = try step(40) }
        #expect(core.currentLayer(of: connection(2)) == 0)
        #expect(core.statistics.layerDownshifts == 1)
        let low = try step(40)
        #expect(low.count == 1 && low[0].0 == 0)
        // Clean reports for longer than the upshift window: back to layer 2.
        for _ in 0..<100 { _ = try step(0) }
        #expect(core.currentLayer(of: connection(2)) == 2)
        #expect(core.statistics.layerUpshifts == 1 && core.statistics.layerSwitches == 3)
    }

    @Test func reportsReachTheSharerAndWatcherKeyframeRequestsFeedTheSelector() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7, 7])
        var now = start
        for _ in 0..<5 { now += 33; _ = try sharer.sendFrame(&core, layers: [0, 2], now: now) }
        let report = ReceiverReport(streamID: sharer.stream(2), fractionLost: 3, highestSequence: 5, cumulativeLost: 0, jitterMicroseconds: 900).serialized()
        let forwarded = deliver(&core, report, from: address(2), now: now)
        #expect(forwarded.toAddresses.map(\.0) == [address(1)] && forwarded.toAddresses.first?.1 == report)
        // Both watchers ask for a keyframe: the sharer gets one request from the relay, not theirs.
        now += 600
        let ask = try KeyframeRequest(streamID: sharer.stream(2), layer: 2).serialized()
        let a = deliver(&core, ask, from: address(2), now: now)
        let b = deliver(&core, ask, from: address(3), now: now + 1)
        #expect(keyframeRequests(a).map(\.0) == [address(1)] && keyframeRequests(b).isEmpty)
        #expect(core.statistics.keyframeRequestsFromWatchers == 2)
        // The sharer gives no feedback in its own room; watchers give none about each other.
        let sharersReport = ReceiverReport(streamID: sharer.stream(2), fractionLost: 0, highestSequence: 1, cumulativeLost: 0, jitterMicroseconds: 0).serialized()
        #expect(deliver(&core, sharersReport, from: address(1), now: now).toAddresses.isEmpty)
        let watcherGrant = try join(&core, 4, .screenWatch, now: now).0
        let aboutWatcher = ReceiverReport(streamID: watcherGrant.streamID, fractionLost: 0, highestSequence: 1, cumulativeLost: 0, jitterMicroseconds: 0).serialized()
        #expect(deliver(&core, aboutWatcher, from: address(2), now: now).toAddresses.isEmpty)
        #expect(core.statistics.droppedUnknownStream == 2)
    }

    @Test func nacksAreAnsweredFromTheLayersCache() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7])
        var now = start
        for _ in 0..<10 { now += 33; _ = try sharer.sendFrame(&core, layers: [0, 2], forceKeyframe: true, now: now) }
        let answer = deliver(&core, try NackPacket(streamID: sharer.stream(2), missing: [4, 5]).serialized(), from: address(2), now: now)
        let resent = try answer.toAddresses.map { ($0.0, try MediaRoutingHeader(parsing: $0.1)) }
        #expect(resent.map(\.0) == [address(2), address(2)])
        #expect(resent.map(\.1.sequence) == [4, 5] && resent.allSatisfy { $0.1.layer == 2 })
    }

    @Test func watcherMediaAndStreamsThatAreNotBasePlusLayerAreDropped() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7, 7])
        _ = try sharer.sendFrame(&core, layers: [0, 2], forceKeyframe: true, now: start)
        let watcher = try join(&core, 4, .screenWatch, now: start).0
        // A watcher's media, on its own stream, is dropped.
        let fromWatcher = try MediaPacket(streamID: watcher.streamID, sequence: 1, frameNumber: 1, isKeyframe: true, payload: [1]).serialized()
        #expect(deliver(&core, fromWatcher, from: address(4), now: start + 1).toAddresses.isEmpty)
        // The sharer's layer 2 on stream base + 1, and layer 0 on base + 2: dropped.
        for (stream, layer) in [(sharer.stream(1), MediaLayer(2)), (sharer.stream(2), MediaLayer(0)), (sharer.grant.streamID + 8, MediaLayer(0))] {
            let bytes = try MediaPacket(streamID: stream, sequence: 50, frameNumber: 50, isKeyframe: true, layer: layer, payload: [2]).serialized()
            #expect(deliver(&core, bytes, from: address(1), now: start + 2).toAddresses.isEmpty)
        }
        #expect(core.statistics.droppedForeignStream == 4)
        // The share goes on.
        let got = try sharer.sendFrame(&core, layers: [0, 2], now: start + 40)
        #expect(got[address(2)]?.map(\.0) == [2] && got[address(3)]?.map(\.0) == [2])
    }

    @Test func aSecondSharerIsRefusedAndStaysWhereItWas() throws {
        var core = MediaRoomCore()
        _ = try screenRoom(&core, caps: [7])
        _ = try core.join(channel: channel, connection: connection(9), transport: .datagram, token: token(9), now: start)
        #expect(throws: MediaRoomCore.JoinRefusal.sharerPresent) {
            try core.join(channel: channel, purpose: .screenShare, connection: connection(9), transport: .datagram, token: token(10), now: start)
        }
        #expect(core.purpose(of: connection(9)) == .voice)
        // A watcher cannot become a second sharer either; the sharer itself may join again.
        #expect(throws: MediaRoomCore.JoinRefusal.sharerPresent) {
            try core.join(channel: channel, purpose: .screenShare, connection: connection(2), transport: .datagram, token: token(11), now: start)
        }
        #expect(core.purpose(of: connection(2)) == .screenWatch)
        let again = try core.join(channel: channel, purpose: .screenShare, connection: connection(1), transport: .datagram, token: token(12), now: start)
        #expect(again.streamID % MediaLayers.streamBlockSize == 0)
        #expect(core.purpose(of: connection(1)) == .screenShare)
    }

    @Test func whenTheSharerLeavesWatchersStayAndANewSharerIsWatched() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [7, 0])
        for i in 1...5 { _ = try sharer.sendFrame(&core, layers: [0, 2], forceKeyframe: i == 1, now: start + UInt64(i) * 33) }
        #expect(core.leave(connection: connection(1)) == channel)
        #expect(core.participants(in: channel, kind: .screen) == [connection(2), connection(3)])
        #expect(core.statistics.screenRooms == 1)
        // Another member shares (only 720p and 360p): the watchers move to its layers.
        let (grant, _) = try join(&core, 7, .screenShare, now: start + 1_000)
        var next = Sharer(grant: grant, address: address(7))
        var got: [MediaAddress: [(MediaLayer, Bool)]] = [:]
        for i in 1...10 {
            for (destination, packets) in try next.sendFrame(&core, layers: [0, 1], now: start + 1_000 + UInt64(i) * 33) {
                got[destination, default: []] += packets
            }
        }
        #expect(got[address(2)]?.first?.1 == true && got[address(2)]?.allSatisfy { $0.0 == 1 } == true)
        #expect(got[address(3)]?.first?.1 == true && got[address(3)]?.allSatisfy { $0.0 == 0 } == true)
        // The last one out removes the room.
        for n in [2, 3, 7] { core.leave(connection: connection(n)) }
        #expect(core.statistics.rooms == 0 && core.statistics.screenRooms == 0 && core.nextDeadline == nil)
    }

    @Test func watchersAtTheLimitAndOnePast() throws {
        var core = MediaRoomCore()
        var sharer = try screenRoom(&core, caps: [])
        _ = try sharer.sendFrame(&core, layers: [0], forceKeyframe: true, now: start)
        for n in 2 ..< 2 + MediaLimits.maximumWatchers { try join(&core, n, .screenWatch, now: start) }
        #expect(core.statistics.screenWatchers == MediaLimits.maximumWatchers)
        #expect(MediaLimits.maximumWatchers == 256)
        #expect(throws: MediaRoomCore.JoinRefusal.roomFull) {
            try core.join(channel: channel, purpose: .screenWatch, connection: connection(1_000), transport: .datagram, token: token(1_000), now: start)
        }
        // Every watcher gets the next keyframe; after one leaves, another may join.
        let got = try sharer.sendFrame(&core, layers: [0], forceKeyframe: true, now: start + 40)
        #expect(got.count == MediaLimits.maximumWatchers)
        core.leave(connection: connection(2))
        _ = try join(&core, 1_000, .screenWatch, now: start + 50)
    }

    @Test func sessionWatchersReceiveTheirLayerOnTheSession() throws {
        var core = MediaRoomCore()
        let sharer = try screenRoom(&core, caps: [])
        _ = try core.join(channel: channel, purpose: .screenWatch, maximumLayer: 0, connection: connection(5),
                          transport: .session, token: token(5), now: start)
        let bytes = try MediaPacket(streamID: sharer.stream(0), sequence: 1, frameNumber: 1, isKeyframe: true, layer: 0, payload: [1]).serialized()
        var sink = RecordingSink(datagram: bytes)
        bytes.withUnsafeBytes { core.receive(datagram: $0, from: sharer.address, now: start + 1, into: &sink) }
        #expect(sink.toSessions.map(\.0) == [connection(5)])
    }
}
