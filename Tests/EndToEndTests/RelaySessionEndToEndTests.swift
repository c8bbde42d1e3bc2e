import Crypto
import Foundation
import NIOPosix
import ShroudNet
import ShroudWire
import Testing

/// The relay binary with real WebSocket clients: what it acknowledged survives a SIGKILL, and its
/// database never names the sender of a direct message. Synchronous on purpose: the blocking client
/// calls never wait on the Swift concurrency pool, which other end-to-end tests keep busy.
@Suite(.serialized) struct RelaySessionEndToEndTests {
    struct Client {
        let key: Curve25519.Signing.PrivateKey
        var identity: IdentityKey { try! IdentityKey(Array(key.publicKey.rawRepresentation)) }

        /// Connects, checks the relay binding is `expectedBinding` when given, and authenticates.
        func login(port: Int, group: MultiThreadedEventLoopGroup, expectedBinding: String? = nil) throws -> (SessionClientConnection, String) {
            let connection = try SessionClientConnection.connectBlocking(host: "127.0.0.1", port: port, group: group)
            guard case let .challenge(nonce, deadline, binding) = try connection.nextBlocking().message else {
                throw WireError.invalid(field: "challenge", reason: "missing")
            }
            if let expectedBinding { #expect(binding == expectedBinding, "the relay id survives a restart") }
            let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: identity)
            try connection.sendBlocking(SessionFrame(requestID: 1, .authenticate(identity: identity,
                                                                                 signature: try Ed25519Signature(Array(key.signature(for: transcript))))))
            #expect(try connection.nextBlocking() == SessionFrame(requestID: 1, .ok))
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

    @Test(.timeLimit(.minutes(2))) func acknowledgedMessagesSurviveSIGKILLAndAreDeliveredOnce() throws {
        let dir = TemporaryDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let alice = Client(key: Curve25519.Signing.PrivateKey())
        let bob = Client(key: Curve25519.Signing.PrivateKey())
        let blobs = (0..<20).map { i in [UInt8](repeating: UInt8(i), count: 256) }

        var (relay, port) = try startRelay(in: dir.path)
        let (sender, binding) = try alice.login(port: port, group: group)
        for (index, blob) in blobs.enumerated() {
            try sender.sendBlocking(SessionFrame(requestID: UInt32(10 + index), .sendDirect(recipient: bob.identity, blob: blob)))
            #expect(try sender.nextBlocking() == SessionFrame(requestID: UInt32(10 + index), .ok))
        }
        // Killed right after the last acknowledgement: no chance to flush or shut down.
        _ = relay.stop(SIGKILL)
        try? sender.channel.close().wait()

        (relay, port) = try startRelay(in: dir.path)
        var (receiver, _) = try bob.login(port: port, group: group, expectedBinding: binding)
        var received: [(MessageID, [UInt8])] = []
        while received.count < blobs.count {
            guard case let .directDelivery(id, _, blob) = try receiver.nextBlocking().message else { continue }
            received.append((id, blob))
        }
        #expect(received.map(\.1) == blobs, "every acknowledged message, in order")
        try receiver.sendBlocking(SessionFrame(requestID: 2, .acknowledgeDirect(received.map(\.0))))
        #expect(try receiver.nextBlocking() == SessionFrame(requestID: 2, .ok))
        try? receiver.channel.close().wait()

        // Acknowledged means deleted: a new connection gets nothing more (checked with a request
        // whose reply would come after any delivery).
        (receiver, _) = try bob.login(port: port, group: group)
        try receiver.sendBlocking(SessionFrame(requestID: 3, .countPrekeys))
        #expect(try receiver.nextBlocking() == SessionFrame(requestID: 3, .prekeyCount(0)))
        try? receiver.channel.close().wait()
        #expect(relay.stop(SIGTERM) == 0)

        // The database names the recipient but never the sender.
        var files = Data()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/data")) ?? [] {
            files += (try? Data(contentsOf: URL(fileURLWithPath: dir.path + "/data/" + name))) ?? Data()
        }
        #expect(!files.isEmpty)
        #expect(files.range(of: Data(alice.identity.bytes)) == nil)
        try group.syncShutdownGracefully()
    }
}
