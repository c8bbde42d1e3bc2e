import CShroudIO
import Crypto
import Foundation
import NIOPosix
import ShroudNet
import ShroudWire
import Testing

/// The relay binary's screen rooms over real UDP sockets on loopback: a fake sharer sends
/// VP8-shaped packets on layers 0 and 2 and answers keyframe requests; two watchers (uncapped and
/// capped at 360p) each receive one layer from a keyframe on. The payloads are opaque to the relay
/// (a real sharer seals them with SFrame); only the routing header matters here.
@Suite(.serialized) struct ScreenRelayEndToEndTests {
    typealias Member = RelayMediaPlaneEndToEndTests.Member

    func request(_ connection: SessionClientConnection, _ id: UInt32, _ message: RelayMessage) throws -> RelayMessage {
        try RelayMediaPlaneEndToEndTests().request(connection, id, message)
    }

    /// A fake screen sharer: per-layer sequence numbers, one frame number for both layers, and a
    /// keyframe on a layer after the relay asked for one.
    struct FakeSharer {
        let socket: MediaTestSocket
        let base: UInt32
        let port: UInt16
        var sequences: [MediaLayer: UInt32] = [:]
        var frame: UInt32 = 0
        var wanted: Set<MediaLayer> = []
        var requests: [KeyframeRequest] = []

        /// A VP8-shaped payload: the 3-byte frame tag (keyframe bit clear = key), and for a
        /// keyframe the start code and size, then filler.
        static func payload(keyframe: Bool, layer: MediaLayer, size: Int) -> [UInt8] {
            let width: UInt16 = layer == 2 ? 1920 : 640, height: UInt16 = layer == 2 ? 1080 : 360
            var bytes: [UInt8] = keyframe ? [0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A, UInt8(width & 255), UInt8(width >> 8), UInt8(height & 255), UInt8(height >> 8)]
                                          : [0x31, 0x04, 0x00]
            while bytes.count < size { bytes.append(UInt8(truncatingIfNeeded: bytes.count &* 7)) }
            return bytes
        }

        /// Takes the relay's keyframe requests that arrived.
        mutating func collectRequests() {
            for bytes in socket.receiveAll(quiet: 0) {
                guard let request = try? KeyframeRequest(parsing: bytes) else { continue }
                requests.append(request)
                wanted.insert(request.layer)
            }
        }

        /// One frame: layer 2 in three fragments, layer 0 in one; keyframes where asked or forced.
        mutating func sendFrame(forceKeyframe: Bool = false) throws {
            collectRequests()
            frame += 1
            for (layer, fragments) in [(MediaLayer(2), 3), (MediaLayer(0), 1)] {
                let keyframe = forceKeyframe || wanted.remove(layer) != nil
                for index in 0 ..< fragments {
                    let sequence = sequences[layer, default: 0]
                    sequences[layer] = sequence + 1
                    let packet = try MediaPacket(streamID: base + UInt32(layer), sequence: sequence, frameNumber: frame, fragmentIndex: index,
                                                 fragmentCount: fragments, isKeyframe: keyframe, layer: layer,
                                                 payload: Self.payload(keyframe: keyframe && index == 0, layer: layer, size: 1000))
                    socket.send(packet.serialized(), toPort: port)
                }
            }
        }
    }

    @Test(.timeLimit(.minutes(2))) func oneSharerTwoWatchersEachGetsOneLayer() throws {
        let dir = TemporaryDirectory()
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0", "--admin-token", "media-test"],
                                          directory: dir.path)
        defer { _ = relay.stop() }
        let line = try relay.waitForLine(containing: "listening")
        let port = try #require(line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap { Int($0.dropFirst(5)) })
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }

        let members = (0..<3).map { _ in Member() }
        let outsider = Member()
        let sessions = try members.map { try $0.login(port: port, group: group) }
        let outsiderSession = try outsider.login(port: port, group: group)
        defer { for session in sessions + [outsiderSession] { try? session.channel.close().wait() } }
        let channel = try ChannelID([UInt8](repeating: 0x5D, count: 16))
        guard case .channelJoined = try request(sessions[0], 2, .createChannel(channel: channel, visibility: .open, metadata: [UInt8](repeating: 1, count: 256))) else {
            Issue.record("channel not created"); return
        }
        for session in sessions.dropFirst() { _ = try request(session, 2, .joinChannel(channel: channel)) }

        // A non-member may not watch.
        guard case let .error(code, _) = try request(outsiderSession, 3, .joinRoom(channel: channel, transport: .datagram, purpose: .screenWatch, maxLayer: 7)) else {
            Issue.record("outsider joined"); return
        }
        #expect(code == .notMember)

        // The sharer joins, binds and shares for a while before anyone watches.
        guard case let .roomJoined(_, shareToken, base, _, mediaPort) = try request(sessions[0], 4, .joinRoom(channel: channel, transport: .datagram, purpose: .screenShare, maxLayer: 7)) else {
            Issue.record("share refused"); return
        }
        #expect(base % MediaLayers.streamBlockSize == 0)
        var sharer = FakeSharer(socket: try MediaTestSocket(host: "127.0.0.2"), base: base, port: mediaPort)
        sharer.socket.send(MediaBind(token: shareToken).serialized(), toPort: mediaPort)
        #expect(sharer.socket.receiveAll(quiet: 500) == [MediaBind(token: shareToken, isAcknowledgement: true).serialized()])
        for index in 0 ..< 5 { try sharer.sendFrame(forceKeyframe: index == 0); usleep(33_000) }

        // Two watchers: member 1 uncapped, member 2 at 360p (layer 0).
        let watchers = try [(1, MediaLayer(7)), (2, MediaLayer(0))].map { index, cap -> MediaTestSocket in
            guard case let .roomJoined(_, token, _, _, _) = try request(sessions[index], 5, .joinRoom(channel: channel, transport: .datagram, purpose: .screenWatch, maxLayer: cap)) else {
                throw WireError.invalid(field: "watch", reason: "refused")
            }
            let socket = try MediaTestSocket(host: "127.0.0.\(3 + index)")
            socket.send(MediaBind(token: token).serialized(), toPort: mediaPort)
            return socket
        }
        // A second sharer is refused while the first shares.
        guard case let .error(busy, _) = try request(sessions[1], 6, .joinRoom(channel: channel, transport: .datagram, purpose: .screenShare, maxLayer: 7)) else {
            Issue.record("second sharer admitted"); return
        }
        #expect(busy == .screenAlreadyShared)

        // 30 frames (a second at 30 fps), answering keyframe requests. The watchers' sockets are
        // drained every frame (a default socket buffer holds only about 90 of these datagrams).
        var inbox: [[[UInt8]]] = [[], []]
        func frames(_ count: Int, lossReportEvery: Int? = nil) throws {
            for step in 0 ..< count {
                if let every = lossReportEvery, step % every == 0 { watchers[0].send(lossy, toPort: mediaPort) }
                try sharer.sendFrame()
                usleep(33_000)
                for index in watchers.indices { inbox[index] += watchers[index].receiveAll(quiet: 0) }
            }
            for index in watchers.indices { inbox[index] += watchers[index].receiveAll(quiet: 200) }
        }
        let lossy = ReceiverReport(streamID: base + 2, fractionLost: 60, highestSequence: 1, cumulativeLost: 0, jitterMicroseconds: 0).serialized()
        try frames(30)
        sharer.collectRequests()
        #expect(sharer.requests.contains(try KeyframeRequest(streamID: base + 2, layer: 2)))
        #expect(sharer.requests.contains(try KeyframeRequest(streamID: base, layer: 0)))
        for (index, layer) in [MediaLayer(2), 0].enumerated() {
            let received = try inbox[index].filter { !MediaBind.isBind(firstByte: $0[0]) }.map { try MediaRoutingHeader(parsing: $0) }
            #expect(!received.isEmpty)
            #expect(received.allSatisfy { $0.layer == layer && $0.streamID == base + UInt32(layer) }, "one layer only")
            #expect(received.first?.isKeyframe == true && received.first?.isFirstFragment == true, "from a keyframe on")
        }
        // The sharer's media never comes back to it, and watchers' media goes nowhere.
        #expect(sharer.socket.receiveAll(quiet: 100).allSatisfy { (try? KeyframeRequest(parsing: $0)) != nil })
        watchers[0].send(try MediaPacket(streamID: base, sequence: 1, frameNumber: 1, payload: [1]).serialized(), toPort: mediaPort)
        #expect(watchers[1].receiveAll(quiet: 200).isEmpty)

        // The uncapped watcher reports sustained loss (≈ 23 %, three reports over just over 1 s): the
        // relay moves it down to layer 0 at that layer's next keyframe, which it asks the sharer for.
        inbox = [[], []]
        try frames(63, lossReportEvery: 16)
        sharer.collectRequests()
        let afterLoss = try inbox[0].map { try MediaRoutingHeader(parsing: $0) }
        let switchAt = try #require(afterLoss.firstIndex { $0.layer == 0 }, "moved down to layer 0")
        #expect(afterLoss[switchAt].isKeyframe && afterLoss[switchAt].isFirstFragment)
        #expect(afterLoss[..<switchAt].allSatisfy { $0.layer == 2 } && afterLoss[switchAt...].allSatisfy { $0.layer == 0 })
        #expect(inbox[1].allSatisfy { (try? MediaRoutingHeader(parsing: $0))?.layer == 0 })

        let body = try httpGet(port: port, path: "/admin/stats", headers: ["Authorization: Bearer media-test"]).body
        let stats = (try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] ?? [:]).compactMapValues { $0 as? Int }
        #expect(stats["media_screen_rooms"] == 1 && stats["media_screen_watchers"] == 2)
        #expect(stats["media_layer_switches_total"] == 3)
        #expect(stats["media_layer_downshifts_total"] == 1)
        #expect(stats["media_keyframe_requests_total"] == sharer.requests.count)
        #expect(stats["media_dropped_foreign_stream_total"] == 1)
        let metrics = try httpGet(port: port, path: "/metrics", headers: ["Authorization: Bearer media-test"]).body
        #expect(metrics.contains("shroud_relay_media_layer_switches_total 3"))
    }
}
