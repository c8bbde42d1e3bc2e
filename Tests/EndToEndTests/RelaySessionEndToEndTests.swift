import Crypto
import Foundation
import NIOPosix
import ShroudNet
import ShroudWire
import Testing

/// The relay binary with real WebSocket clients: what it acknowledged survives a SIGKILL, and its
/// database never names the sender of a direct message.
@Suite(.serialized) struct RelaySessionEndToEndTests {
    struct Client {
        let key: Curve25519.Signing.PrivateKey
        var identity: IdentityKey { try! IdentityKey(Array(key.publicKey.rawRepresentation)) }

        /// Connects, checks the relay binding is `expectedBinding` when given, and authenticates.
        func login(port: Int, group: MultiThreadedEventLoopGroup, expectedBinding: String? = nil) async throws -> (SessionClientConnection, String) {
            let connection = try await SessionClientConnection.connect(host: "127.0.0.1", port: port, group: group)
            guard case let .challenge(nonce, deadline, binding) = try await connection.next().message else {
                throw WireError.invalid(field: "challenge", reason: "missing")
            }
            if let expectedBinding { #expect(binding == expectedBinding, "the relay id survives a restart") }
            let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: identity)
            try await connection.send(SessionFrame(requestID: 1, .authenticate(identity: identity,
                                                                                 signature: try Ed25519Signature(Array(key.signature(for: transcript))))))
            #expect(try await connection.next() == SessionFrame(requestID: 1, .ok))
            return (connection, binding)
        }
    }

    private func startRelay(in directory: String) throws -> (BackgroundProcess, Int) {
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"], directory: directory)
        let line = try relay.waitForLine(containing: "listening")
        guard let port = line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap({ Int($0.dropFirst(5)) }) else {
            throw TimedOut(command: "no port in \(line)")
        }
        return (relay, port)
    }

    @Test(.timeLimit(.minutes(2))) func acknowledgedMessagesSurviveSIGKILLAndAreDeliveredOnce() async throws {
        let dir = TemporaryDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let alice = Client(key: Curve25519.Signing.PrivateKey())
        let bob = Client(key: Curve25519.Signing.PrivateKey())
        let blobs = (0..<20).map { i in [UInt8](repeating: UInt8(i), count: 256) }

        var (relay, port) = try startRelay(in: dir.path)
        let (sender, binding) = try await alice.login(port: port, group: group)
        for (index, blob) in blobs.enumerated() {
            try await sender.send(SessionFrame(requestID: UInt32(10 + index), .sendDirect(recipient: bob.identity, blob: blob)))
            #expect(try await sender.next() == SessionFrame(requestID: UInt32(10 + index), .ok))
        }
        // Killed right after the last acknowledgement: no chance to flush or shut down.
        _ = relay.stop(SIGKILL)
        await sender.close()

        (relay, port) = try startRelay(in: dir.path)
        var (receiver, _) = try await bob.login(port: port, group: group, expectedBinding: binding)
        var received: [(MessageID, [UInt8])] = []
        while received.count < blobs.count {
            guard case let .directDelivery(id, _, blob) = try await receiver.next().message else { continue }
            received.append((id, blob))
        }
        #expect(received.map(\.1) == blobs, "every acknowledged message, in order")
        try await receiver.send(SessionFrame(requestID: 2, .acknowledgeDirect(received.map(\.0))))
        #expect(try await receiver.next() == SessionFrame(requestID: 2, .ok))
        await receiver.close()

        // Acknowledged means deleted: a new connection gets nothing more (checked with a request
        // whose reply would come after any delivery).
        (receiver, _) = try await bob.login(port: port, group: group)
        try await receiver.send(SessionFrame(requestID: 3, .countPrekeys))
        #expect(try await receiver.next() == SessionFrame(requestID: 3, .prekeyCount(0)))
        await receiver.close()
        #expect(relay.stop(SIGTERM) == 0)

        // The database names the recipient but never the sender.
        var files = Data()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/data")) ?? [] {
            files += (try? Data(contentsOf: URL(fileURLWithPath: dir.path + "/data/" + name))) ?? Data()
        }
        #expect(!files.isEmpty)
        #expect(files.range(of: Data(alice.identity.bytes)) == nil)
        try await group.shutdownGracefully()
    }
}

@Suite struct SystemdNotifyEndToEndTests {
    /// Started as systemd would with Type=notify, the relay sends READY=1 once it listens.
    @Test(.timeLimit(.minutes(1))) func relaySendsReadyToTheNotifySocket() throws {
        let dir = TemporaryDirectory()
        let socketPath = dir.path + "/notify"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        try #require(pathBytes.count < 108)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in pathBytes.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"],
                                          environment: ["NOTIFY_SOCKET": socketPath], directory: dir.path)
        var buffer = [UInt8](repeating: 0, count: 512)
        let received = recv(fd, &buffer, buffer.count, 0)
        try #require(received > 0)
        let message = String(decoding: buffer[0..<received], as: UTF8.self)
        #expect(message.hasPrefix("READY=1\n"))
        #expect(message.contains("STATUS=listening on port"))
        #expect(relay.stop(SIGTERM) == 0)
    }
}
