import CShroudIO
import Foundation
import ShroudNet
import ShroudRelayCore
import ShroudWire
import Testing

/// The UDP adapter drives the screen rooms' periodic work: with no traffic at all, a keyframe
/// request the selector held back reaches the sharer again after the interval.
@Suite struct MediaPlaneServerScreenTests {
    struct SocketFailure: Error {}

    final class Socket {
        let fd: Int32
        init() throws {
            var port: UInt16 = 0
            fd = shroud_udp_open("127.0.0.1", 0, &port, 0)
            guard fd >= 0 else { throw SocketFailure() }
        }
        deinit { shroud_udp_close(fd) }
        func send(_ bytes: [UInt8], to port: UInt16) {
            var to = shroud_addr(high: 0, low: 0x7F00_0001, port: port, family: 4)
            _ = bytes.withUnsafeBytes { shroud_udp_sendto(fd, $0.baseAddress, $0.count, &to) }
        }
        func receive(timeout milliseconds: Int32) -> [UInt8]? {
            var buffer = [UInt8](repeating: 0, count: 2048)
            var from = shroud_addr()
            let n = buffer.withUnsafeMutableBytes { shroud_udp_recvfrom(fd, $0.baseAddress, $0.count, &from, milliseconds) }
            return n > 0 ? Array(buffer.prefix(Int(n))) : nil
        }
    }

    @Test(.timeLimit(.minutes(1))) func heldBackKeyframeRequestsAreSentWithoutTraffic() throws {
        let router = MediaRouter()
        let server = try MediaPlaneServer(host: "127.0.0.1", port: 0, router: router, deliverToSessions: { _ in })
        server.start()
        defer { server.stop() }
        let channel = ChannelID(validated: [UInt8](repeating: 0x6A, count: 16))
        let sharer = try Socket(), watcher = try Socket()
        var base: UInt32 = 0
        for (index, (socket, purpose)) in [(sharer, RoomPurpose.screenShare), (watcher, .screenWatch)].enumerated() {
            let token = MediaToken(validated: [UInt8](repeating: UInt8(index + 1), count: 16))
            let grant = try router.withCore { core throws(MediaRoomCore.JoinRefusal) in
                try core.join(channel: channel, purpose: purpose, connection: ConnectionID(rawValue: UInt64(index + 1)),
                              transport: .datagram, token: token, now: systemMilliseconds())
            }
            if purpose == .screenShare { base = grant.streamID }
            socket.send(MediaBind(token: token).serialized(), to: server.port)
            #expect(socket.receive(timeout: 2_000) == MediaBind(token: token, isAcknowledgement: true).serialized())
        }
        // One delta of the 1080p layer: the watcher waits for a keyframe, so the relay asks at once.
        sharer.send(try MediaPacket(streamID: base + 2, sequence: 0, frameNumber: 0, layer: 2, payload: [1]).serialized(), to: server.port)
        let expected = try KeyframeRequest(streamID: base + 2, layer: 2).serialized()
        #expect(sharer.receive(timeout: 2_000) == expected)
        let first = shroud_monotonic_ns()
        // The sharer does not answer and nothing else is sent: the request comes again from the
        // media thread's periodic work, after the interval.
        #expect(sharer.receive(timeout: 3_000) == expected)
        let gap = Double(shroud_monotonic_ns() - first) / 1e6
        // Not an immediate repeat. (The exact interval is tested on a virtual clock in
        // ScreenRoomCoreTests; here this thread may wake late for the first request, under load.)
        #expect(gap >= 400)
        #expect(watcher.receive(timeout: 50) == nil)
        #expect(router.statistics.keyframeRequestsSent == 2)
    }
}
