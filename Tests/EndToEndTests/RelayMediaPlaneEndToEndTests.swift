import CShroudIO
import Crypto
import Foundation
import NIOPosix
import ShroudNet
import ShroudWire
import Testing

/// A UDP socket on its own loopback address (127.0.0.N), for one simulated participant.
final class MediaTestSocket {
    let fd: Int32
    let port: UInt16
    let host: String

    init(host: String) throws {
        var bound: UInt16 = 0
        let fd = shroud_udp_open(host, 0, &bound, 0)
        guard fd >= 0 else { throw TimedOut(command: "UDP bind on \(host)") }
        self.fd = fd
        self.host = host
        port = bound
    }

    deinit { shroud_udp_close(fd) }

    func send(_ bytes: [UInt8], toPort port: UInt16) {
        var to = shroud_addr(high: 0, low: 0x7F00_0001, port: port, family: 4)
        _ = bytes.withUnsafeBytes { shroud_udp_sendto(fd, $0.baseAddress, $0.count, &to) }
    }

    /// Every datagram that arrives until `quiet` milliseconds pass without one.
    func receiveAll(quiet: Int32 = 300) -> [[UInt8]] {
        var received: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            var from = shroud_addr()
            let n = buffer.withUnsafeMutableBytes { shroud_udp_recvfrom(fd, $0.baseAddress, $0.count, &from, quiet) }
            guard n > 0 else { return received }
            received.append(Array(buffer[0..<min(Int(n), buffer.count)]))
        }
    }
}

/// The relay binary's UDP media plane on loopback, with real WebSocket sessions and real UDP
/// sockets from several loopback addresses.
@Suite(.serialized) struct RelayMediaPlaneEndToEndTests {
    struct Member {
        let key = Curve25519.Signing.PrivateKey()
        var identity: IdentityKey { try! IdentityKey(Array(key.publicKey.rawRepresentation)) }

        func login(port: Int, group: MultiThreadedEventLoopGroup) throws -> SessionClientConnection {
            let connection = try SessionClientConnection.connectBlocking(host: "127.0.0.1", port: port, group: group)
            guard case let .challenge(nonce, deadline, binding) = try connection.nextBlocking().message else {
                throw WireError.invalid(field: "challenge", reason: "missing")
            }
            let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: identity)
            try connection.sendBlocking(SessionFrame(requestID: 1, .authenticate(identity: identity,
                                                                                 signature: try Ed25519Signature(Array(key.signature(for: transcript))))))
            #expect(try connection.nextBlocking() == SessionFrame(requestID: 1, .ok))
            return connection
        }
    }

    /// Sends a request and returns the first reply carrying its request id (skipping pushes).
    func request(_ connection: SessionClientConnection, _ id: UInt32, _ message: RelayMessage) throws -> RelayMessage {
        try connection.sendBlocking(SessionFrame(requestID: id, message))
        while true {
            let frame = try connection.nextBlocking(timeout: 10)
            if frame.requestID == id { return frame.message }
        }
    }

    func media(_ stream: UInt32, _ sequence: UInt32, size: Int = 100) throws -> [UInt8] {
        try MediaPacket(streamID: stream, sequence: sequence, frameNumber: sequence,
                        payload: (0..<size).map { UInt8(truncatingIfNeeded: Int(sequence) &* 31 &+ $0) }).serialized()
    }

    func statistics(_ port: Int) throws -> [String: Int] {
        let body = try httpGet(port: port, path: "/admin/stats", headers: ["Authorization: Bearer media-test"]).body
        let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] ?? [:]
        return object.compactMapValues { $0 as? Int }
    }

    @Test(.timeLimit(.minutes(2))) func bindFanOutDropsNacksKickAndWebSocketFallback() throws {
        let dir = TemporaryDirectory()
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0", "--admin-token", "media-test"],
                                          directory: dir.path)
        defer { _ = relay.stop() }
        let line = try relay.waitForLine(containing: "listening")
        let port = try #require(line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap { Int($0.dropFirst(5)) })
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }

        let members = (0..<4).map { _ in Member() }
        let outsider = Member()
        let sessions = try members.map { try $0.login(port: port, group: group) }
        let outsiderSession = try outsider.login(port: port, group: group)
        let channel = try ChannelID([UInt8](repeating: 0x5C, count: 16))
        guard case .channelJoined = try request(sessions[0], 2, .createChannel(channel: channel, visibility: .open, metadata: [UInt8](repeating: 1, count: 256))) else {
            Issue.record("channel not created"); return
        }
        for session in sessions.dropFirst() { _ = try request(session, 2, .joinChannel(channel: channel)) }

        // A non-member is refused a place in the room.
        guard case let .error(code, _) = try request(outsiderSession, 3, .joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7)) else {
            Issue.record("outsider joined"); return
        }
        #expect(code == .notMember)

        // Everyone joins and binds a UDP socket on its own loopback address.
        var grants: [(token: MediaToken, stream: UInt32)] = []
        var mediaPort: UInt16 = 0
        let sockets = try (0..<4).map { try MediaTestSocket(host: "127.0.0.\(2 + $0)") }
        for (index, session) in sessions.enumerated() {
            guard case let .roomJoined(_, token, stream, _, port) = try request(session, 4, .joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7)) else {
                Issue.record("join refused"); return
            }
            grants.append((token, stream))
            mediaPort = port
            sockets[index].send(MediaBind(token: token).serialized(), toPort: port)
            #expect(sockets[index].receiveAll(quiet: 500) == [MediaBind(token: token, isAcknowledgement: true).serialized()])
        }
        #expect(mediaPort != 0)

        // Fan-out to the N-1 others, unchanged; nothing back to the speaker.
        let spoken = try (1...20).map { try media(grants[0].stream, UInt32($0)) }
        for packet in spoken { sockets[0].send(packet, toPort: mediaPort) }
        for listener in sockets.dropFirst() { #expect(listener.receiveAll() == spoken) }
        #expect(sockets[0].receiveAll(quiet: 100).isEmpty)

        // Unbound, malformed, truncated, oversized, someone else's stream: dropped and counted.
        let stranger = try MediaTestSocket(host: "127.0.0.9")
        stranger.send(try media(grants[0].stream, 99), toPort: mediaPort)
        stranger.send(MediaBind(token: try MediaToken([UInt8](repeating: 7, count: 16))).serialized(), toPort: mediaPort)
        let good = try media(grants[0].stream, 21)
        sockets[0].send(Array(good.prefix(10)), toPort: mediaPort)                 // truncated
        sockets[0].send([UInt8(0)] + Array(good.dropFirst()), toPort: mediaPort)              // wrong version
        sockets[0].send(try media(grants[0].stream, 22, size: MediaPacket.maxPayloadBytes) + [UInt8](repeating: 0, count: 100), toPort: mediaPort) // oversized
        sockets[0].send(try media(grants[1].stream, 23), toPort: mediaPort)        // foreign stream
        sockets[0].send(good, toPort: mediaPort)
        for listener in sockets.dropFirst() { #expect(listener.receiveAll() == [good], "the call goes on") }
        #expect(stranger.receiveAll(quiet: 100).isEmpty)

        // A NACK is answered from the relay's cache to the asker only.
        sockets[1].send(try NackPacket(streamID: grants[0].stream, missing: [3, 5]).serialized(), toPort: mediaPort)
        #expect(sockets[1].receiveAll() == [spoken[2], spoken[4]])
        #expect(sockets[2].receiveAll(quiet: 100).isEmpty)

        var stats = try statistics(port)
        #expect(stats["media_rooms"] == 1)
        #expect(stats["media_participants"] == 4)
        #expect(stats["media_dropped_unbound_total"] == 2)
        #expect(stats["media_dropped_malformed_total"] == 2)
        #expect(stats["media_dropped_oversized_total"] == 1)
        #expect(stats["media_dropped_foreign_stream_total"] == 1)
        #expect(stats["media_nacks_answered_total"] == 1)
        #expect(stats["media_retransmissions_sent_total"] == 2)
        #expect(stats["media_packets_forwarded_total"] == 21 * 3)

        // A kicked member leaves the room at once.
        _ = try request(sessions[0], 5, .kickMember(channel: channel, member: members[3].identity))
        let after = try media(grants[0].stream, 24)
        sockets[0].send(after, toPort: mediaPort)
        #expect(sockets[1].receiveAll() == [after])
        #expect(sockets[3].receiveAll(quiet: 200).isEmpty)

        // WebSocket fallback: member 2 rejoins on the session transport; media flows both ways.
        guard case let .roomJoined(_, _, webStream, _, _) = try request(sessions[2], 6, .joinRoom(channel: channel, transport: .session, purpose: .voice, maxLayer: 7)) else {
            Issue.record("rejoin refused"); return
        }
        let overUDP = try media(grants[0].stream, 25)
        sockets[0].send(overUDP, toPort: mediaPort)
        var fallback: [UInt8] = []
        while fallback.isEmpty {
            if case let .mediaDatagram(bytes) = try sessions[2].nextBlocking(timeout: 5).message { fallback = bytes }
        }
        #expect(fallback == overUDP)
        let overSession = try media(webStream, 1)
        try sessions[2].sendBlocking(SessionFrame(.mediaDatagram(overSession)))
        #expect(sockets[0].receiveAll().contains(overSession))
        #expect(sockets[1].receiveAll().contains(overSession))
        stats = try statistics(port)
        #expect(stats["media_participants"] == 3)
        for session in sessions + [outsiderSession] { try? session.channel.close().wait() }
    }
}
