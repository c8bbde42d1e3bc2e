import Crypto
import Foundation
import ShroudTestSupport
import Testing

/// `shroud file send` / `file receive` with the real binaries and relay on loopback (issue 7):
/// direct path, resume after `kill -9` of either side, a chunk altered in flight, an unknown
/// sender, hostile names, a full disk.
@Suite(.serialized) struct FileTransferEndToEndTests {
    let shroud = Binaries.path("shroud")
    let passphrase = ["SHROUD_PASSPHRASE": "a passphrase for tests"]

    /// A relay and two (or three) profiles that know each other.
    final class World {
        let dir = TemporaryDirectory("shroud-files")
        let relay: BackgroundProcess
        let port: Int
        let alice: String, bob: String, carol: String
        let inbox: String

        init(shroud: String, passphrase: [String: String]) throws {
            let relayDir = dir.path + "/relay"
            try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
            relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"], directory: relayDir)
            let line = try relay.waitForLine(containing: "listening")
            guard let port = line.split(separator: " ").first(where: { $0.hasPrefix("port=") }).flatMap({ Int($0.dropFirst(5)) }) else {
                throw TimedOut(command: "no port in \(line)")
            }
            self.port = port
            alice = dir.path + "/alice"; bob = dir.path + "/bob"; carol = dir.path + "/carol"
            inbox = dir.path + "/inbox"
            try FileManager.default.createDirectory(atPath: inbox, withIntermediateDirectories: true)
            var ids: [String: String] = [:]
            for home in [alice, bob, carol] {
                let created = try run(shroud, ["--home", home, "id", "new", "--json"], environment: passphrase)
                guard created.status == 0, let id = created.jsonLines.first?["id"] as? String else { throw TimedOut(command: "id new: \(created.stderr)") }
                ids[home] = id
            }
            for (home, name, other) in [(alice, "bob", bob), (bob, "alice", alice), (carol, "bob", bob)] {
                guard try run(shroud, ["--home", home, "contact", "add", name, ids[other] ?? ""]).status == 0 else { throw TimedOut(command: "contact add") }
            }
            for home in [alice, bob, carol] {
                let connected = try run(shroud, ["--home", home, "--server", "ws://127.0.0.1:\(port)", "connect"], environment: passphrase)
                guard connected.status == 0 else { throw TimedOut(command: "connect: \(connected.stderr)") }
            }
        }

        /// A file of `size` seeded bytes.
        func makeFile(_ name: String, size: Int, seed: UInt64 = 7) throws -> String {
            let path = dir.path + "/" + name
            var rng = SplitMix64(seed: seed)
            var data = Data(count: size)
            data.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                for i in 0..<words.count { words[i] = rng.next() }
            }
            try data.write(to: URL(fileURLWithPath: path))
            return path
        }
    }

    /// A child process with both output streams collected, for running sender and receiver at once.
    final class Child {
        let process = Process()
        private let out = Pipe(), err = Pipe()
        private let stdoutBuffer = LineBuffer(), stderrBuffer = LineBuffer()

        init(_ executable: String, _ arguments: [String], environment: [String: String]) throws {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = out
            process.standardError = err
            for (pipe, buffer) in [(out, stdoutBuffer), (err, stderrBuffer)] {
                pipe.fileHandleForReading.readabilityHandler = { handle in
                    let data = handle.availableData
                    if !data.isEmpty { buffer.append(data) }
                }
            }
            try runWithSignalsUnblocked(process)
        }

        /// Waits for the exit (killing the child after `timeout`); returns status, stdout, stderr.
        func wait(timeout: Double = 120) -> RunResult {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            usleep(50_000)
            out.fileHandleForReading.readabilityHandler = nil
            err.fileHandleForReading.readabilityHandler = nil
            stdoutBuffer.append(out.fileHandleForReading.readDataToEndOfFile())
            stderrBuffer.append(err.fileHandleForReading.readDataToEndOfFile())
            return RunResult(status: process.terminationStatus, stdout: stdoutBuffer.lines().joined(separator: "\n"),
                             stderr: stderrBuffer.lines().joined(separator: "\n"))
        }

        func kill9() { kill(process.processIdentifier, SIGKILL) }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
    }

    func receive(_ world: World, _ extra: [String] = [], wrapper: String? = nil) throws -> Child {
        let arguments = ["--home", world.bob, "file", "receive", "--out", world.inbox, "--yes", "--json", "--wait", "60"] + extra
        if let wrapper {
            return try Child("/bin/sh", ["-c", wrapper + " exec \"$0\" \"$@\"", shroud] + arguments, environment: passphrase)
        }
        return try Child(shroud, arguments, environment: passphrase)
    }

    func send(_ world: World, _ path: String, from home: String? = nil, _ extra: [String] = []) throws -> Child {
        try Child(shroud, ["--home", home ?? world.alice, "file", "send", "bob", path, "--json"] + extra, environment: passphrase)
    }

    func summary(_ result: RunResult) -> [String: Any]? { result.jsonLines.last { $0["event"] as? String == "done" } }

    func partialSize(_ world: World) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: world.inbox)) ?? []
        return names.filter { $0.hasPrefix(".shroud-partial-") }
            .compactMap { (try? FileManager.default.attributesOfItem(atPath: world.inbox + "/" + $0))?[.size] as? Int }.max() ?? 0
    }

    func sameBytes(_ a: String, _ b: String) -> Bool {
        guard let x = FileManager.default.contents(atPath: a), let y = FileManager.default.contents(atPath: b) else { return false }
        return x == y
    }

    @Test(.timeLimit(.minutes(3))) func directTransferArrivesIntactAndMessagesStillRead() throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let file = try world.makeFile("video.bin", size: 5 * 1024 * 1024 + 123)
        // A text message queued before the offer, and the offer itself, do not disturb `msg read`.
        #expect(try run(shroud, ["--home", world.alice, "msg", "send", "bob", "before the file"], environment: passphrase).status == 0)
        let sender = try send(world, file, ["--via", "direct"])
        let receiver = try receive(world)
        let received = receiver.wait(), sent = sender.wait()
        #expect(received.status == 0, "\(received.stderr)")
        #expect(sent.status == 0, "\(sent.stderr)")
        let done = try #require(summary(received))
        #expect(done["path"] as? String == "direct")
        #expect(done["bytes"] as? Int == 5 * 1024 * 1024 + 123)
        #expect(done["resumed_from"] as? Int == 0)
        #expect((done["seconds"] as? Double ?? -1) >= 0)
        #expect(summary(sent)?["path"] as? String == "direct")
        #expect(sameBytes(file, world.inbox + "/video.bin"))
        #expect(partialSize(world) == 0)
        // The text sent before the offer is still there for `msg read`, exactly once.
        let read = try run(shroud, ["--home", world.bob, "msg", "read", "--json"], environment: passphrase)
        #expect(read.status == 0, "\(read.stderr)")
        #expect(read.jsonLines.compactMap { $0["text"] as? String } == ["before the file"])

        // The same name again: never overwritten without asking (no terminal here).
        let again = try send(world, file, ["--via", "direct"])
        let refused = try receive(world).wait()
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("already exists"), "\(refused.stderr)")
        let declined = again.wait()
        #expect(declined.status == 1)
        #expect(declined.stderr.contains("declined"), "\(declined.stderr)")

        // A pending offer does not choke `msg read`: it is left for `file receive`, with a note.
        let pending = try send(world, file, ["--name", "second.bin"])
        Thread.sleep(forTimeInterval: 2)
        let readWithOffer = try run(shroud, ["--home", world.bob, "msg", "read", "--json"], environment: passphrase)
        #expect(readWithOffer.status == 0, "\(readWithOffer.stderr)")
        #expect(readWithOffer.jsonLines.isEmpty)
        let taken = try receive(world).wait()
        #expect(taken.status == 0, "\(taken.stderr)")
        #expect(pending.wait().status == 0)
        #expect(sameBytes(file, world.inbox + "/second.bin"))
    }

    @Test(.timeLimit(.minutes(3))) func theRelayPipeCarriesTheFileWhenAskedOrWhenDirectFails() throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let size = 9 * 1024 * 1024 + 5
        let file = try world.makeFile("piped.bin", size: size)
        // --via relay: no candidates at all.
        let sender = try send(world, file, ["--via", "relay"])
        let received = try receive(world).wait()
        let sent = sender.wait()
        #expect(received.status == 0, "\(received.stderr)")
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(summary(received)?["path"] as? String == "relay")
        #expect(summary(sent)?["path"] as? String == "relay")
        #expect(summary(received)?["bytes"] as? Int == size)
        #expect(sameBytes(file, world.inbox + "/piped.bin"))
        // auto, with a candidate nobody listens on: the receiver falls back to the relay.
        let fallback = try send(world, file, ["--name", "fallback.bin", "--candidate", "127.0.0.1:\(try freePort())"])
        let viaFallback = try receive(world).wait()
        #expect(viaFallback.status == 0, "\(viaFallback.stderr)")
        #expect(summary(viaFallback)?["path"] as? String == "relay")
        #expect(fallback.wait().status == 0)
        #expect(sameBytes(file, world.inbox + "/fallback.bin"))
        // --via direct with the same dead candidate: refused, nothing through the relay.
        let directOnly = try send(world, file, ["--via", "direct", "--name", "never.bin", "--candidate", "127.0.0.1:\(try freePort())"])
        let failed = try receive(world).wait()
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("no direct connection"), "\(failed.stderr)")
        #expect(directOnly.wait().status == 1)
        #expect(!FileManager.default.fileExists(atPath: world.inbox + "/never.bin"))
        // The relay's files hold none of the file's bytes.
        let probe = try #require(FileManager.default.contents(atPath: file)).prefix(64)
        for name in (try FileManager.default.subpathsOfDirectory(atPath: world.dir.path + "/relay")) {
            guard let data = FileManager.default.contents(atPath: world.dir.path + "/relay/" + name) else { continue }
            #expect(data.range(of: probe) == nil, "\(name)")
        }
    }

    @Test(.timeLimit(.minutes(4)), arguments: ["receiver", "sender"])
    func aTransferKilledMidwayResumes(victim: String) throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let size = 64 * 1024 * 1024
        let file = try world.makeFile("big.bin", size: size)
        // A throttling proxy keeps the transfer slow enough to be interrupted midway.
        let listenPort = try freePort()
        let proxy = try TamperingProxy(upstreamPort: listenPort, bytesPerSecond: 16 << 20)
        let proxied = ["--via", "direct", "--listen-port", String(listenPort), "--candidate", "127.0.0.1:\(proxy.port)"]
        let sender = try send(world, file, proxied)
        let receiver = try receive(world)
        let deadline = Date().addingTimeInterval(60)
        while partialSize(world) < 8 * 1024 * 1024, Date() < deadline { usleep(20_000) }
        #expect(partialSize(world) >= 8 * 1024 * 1024)
        if victim == "receiver" { receiver.kill9() } else { sender.kill9() }
        let first = (receiver.wait(timeout: 60), sender.wait(timeout: 60))
        #expect(first.0.status != 0 && first.1.status != 0)
        #expect(!FileManager.default.fileExists(atPath: world.inbox + "/big.bin"))

        // Both rerun, directly this time: the transfer continues from the last verified chunk.
        let resentBy = try send(world, file, ["--via", "direct"])
        let resumed = try receive(world).wait()
        let resent = resentBy.wait()
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resent.status == 0, "\(resent.stderr)")
        let done = try #require(summary(resumed))
        let skipped = try #require(done["resumed_from"] as? Int)
        #expect(skipped >= 8 * 1024 * 1024 && skipped < size, "resumed_from \(skipped)")
        #expect(done["transferred"] as? Int == size - skipped)
        #expect(summary(resent)?["resumed_from"] as? Int == skipped)
        #expect(sameBytes(file, world.inbox + "/big.bin"))
        #expect(partialSize(world) == 0)
    }

    @Test(.timeLimit(.minutes(4)), arguments: ["receiver", "sender"])
    func aRelayTransferKilledMidwayResumes(victim: String) throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let size = 64 * 1024 * 1024
        let file = try world.makeFile("piped-big.bin", size: size)
        // The receiver reaches the relay through a throttling proxy, so the pipe runs slowly enough
        // to be interrupted midway. (Bob's profile remembers the proxy as its relay: the rerun names
        // the relay itself.)
        let proxy = try TamperingProxy(upstreamPort: world.port, bytesPerSecond: 16 << 20)
        let sender = try send(world, file, ["--via", "relay"])
        let receiver = try receive(world, ["--server", "ws://127.0.0.1:\(proxy.port)"])
        let deadline = Date().addingTimeInterval(60)
        while partialSize(world) < 8 * 1024 * 1024, Date() < deadline { usleep(20_000) }
        #expect(partialSize(world) >= 8 * 1024 * 1024)
        if victim == "receiver" { receiver.kill9() } else { sender.kill9() }
        let first = (receiver.wait(timeout: 60), sender.wait(timeout: 60))
        #expect(first.0.status != 0 && first.1.status != 0, "\(first.0.stderr) \(first.1.stderr)")
        #expect(!FileManager.default.fileExists(atPath: world.inbox + "/piped-big.bin"))

        // Both rerun through the relay: the transfer continues from the last verified chunk.
        let resentBy = try send(world, file, ["--via", "relay"])
        let resumed = try receive(world, ["--server", "ws://127.0.0.1:\(world.port)"]).wait()
        let resent = resentBy.wait()
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resent.status == 0, "\(resent.stderr)")
        let done = try #require(summary(resumed))
        #expect(done["path"] as? String == "relay")
        let skipped = try #require(done["resumed_from"] as? Int)
        #expect(skipped >= 8 * 1024 * 1024 && skipped < size, "resumed_from \(skipped)")
        #expect(done["transferred"] as? Int == size - skipped)
        #expect(summary(resent)?["resumed_from"] as? Int == skipped)
        #expect(sameBytes(file, world.inbox + "/piped-big.bin"))
        #expect(partialSize(world) == 0)
    }

    @Test(.timeLimit(.minutes(3))) func theDirectPathWorksOverIPv6Loopback() throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let file = try world.makeFile("six.bin", size: 3 * 1024 * 1024 + 17)
        let listenPort = try freePort()
        // Only the IPv6 candidate: the sender's dual-stack listener must take the connection on ::1.
        let sender = try send(world, file, ["--via", "direct", "--listen-port", String(listenPort), "--candidate", "[::1]:\(listenPort)"])
        let received = try receive(world).wait()
        let sent = sender.wait()
        #expect(received.status == 0, "\(received.stderr)")
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(summary(received)?["path"] as? String == "direct")
        #expect(sameBytes(file, world.inbox + "/six.bin"))
        // Without --candidate, the IPv4 candidates (tried first) reach the same dual-stack listener.
        let offered = try send(world, file, ["--via", "direct", "--name", "six-again.bin"])
        let again = try receive(world).wait()
        #expect(again.status == 0, "\(again.stderr)")
        #expect(offered.wait().status == 0)
        #expect(sameBytes(file, world.inbox + "/six-again.bin"))
    }

    @Test(.timeLimit(.minutes(3))) func aChunkAlteredInFlightIsDetectedAndNothingAppears() throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let file = try world.makeFile("doc.bin", size: 4 * 1024 * 1024)
        let listenPort = try freePort()
        // Flip one bit 2.5 MiB into the stream from the sender: inside chunk 2's ciphertext.
        let proxy = try TamperingProxy(upstreamPort: listenPort, bytesPerSecond: nil, flipAt: 5 * 512 * 1024)
        let sender = try send(world, file, ["--via", "direct", "--listen-port", String(listenPort), "--candidate", "127.0.0.1:\(proxy.port)"])
        let received = try receive(world).wait()
        let sent = sender.wait()
        #expect(proxy.flipped)
        #expect(received.status == 1)
        #expect(received.stderr.contains("does not authenticate"), "\(received.stderr)")
        #expect(received.stderr.split(separator: "\n").last?.hasPrefix("shroud: ") == true)
        #expect(sent.status == 1)
        #expect(!FileManager.default.fileExists(atPath: world.inbox + "/doc.bin"))
        // The chunks verified before the altered one are kept, and a clean rerun resumes from them.
        #expect(partialSize(world) == 2 * 1024 * 1024)
        let again = try send(world, file, ["--via", "direct"])
        let resumed = try receive(world).wait()
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(summary(resumed)?["resumed_from"] as? Int == 2 * 1024 * 1024)
        #expect(again.wait().status == 0)
        #expect(sameBytes(file, world.inbox + "/doc.bin"))
    }

    @Test(.timeLimit(.minutes(3))) func unknownSendersAndHostileNamesAreRefusedOrSanitised() throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let file = try world.makeFile("a.bin", size: 3000)
        // Carol knows Bob, but Bob never pinned Carol: her offer is refused.
        let fromCarol = try send(world, file, from: world.carol)
        let refused = try receive(world, ["--wait", "5"]).wait()
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("refused a file offer from unknown sender"), "\(refused.stderr)")
        #expect(refused.stderr.contains("no file offer arrived"), "\(refused.stderr)")
        fromCarol.kill9()
        _ = fromCarol.wait()

        for (offered, saved) in [("../x", "x"), ("/etc/passwd", "passwd"), ("../../tmp/evil\u{1}.sh", "evil.sh")] {
            let sender = try send(world, file, ["--name", offered])
            let received = try receive(world).wait()
            #expect(received.status == 0, "\(offered): \(received.stderr)")
            #expect(summary(received)?["file"] as? String == world.inbox + "/" + saved)
            #expect(sameBytes(file, world.inbox + "/" + saved), "\(offered)")
            #expect(sender.wait().status == 0)
        }
        #expect(!FileManager.default.fileExists(atPath: world.dir.path + "/x"))
        for hostile in ["..", ".bashrc"] {
            let sender = try send(world, file, ["--name", hostile])
            let received = try receive(world).wait()
            #expect(received.status == 1)
            #expect(received.stderr.contains("unsafe file name"), "\(hostile): \(received.stderr)")
            #expect(sender.wait().status == 1)
        }
        #expect(!FileManager.default.fileExists(atPath: world.inbox + "/.bashrc"))
    }

    @Test(.timeLimit(.minutes(3))) func aFullDiskGivesAClearError() throws {
        let world = try World(shroud: shroud, passphrase: passphrase)
        let file = try world.makeFile("large.bin", size: 12 * 1024 * 1024)
        let sender = try send(world, file, ["--via", "direct"])
        // The receiver may write at most 4 MiB per file (RLIMIT_FSIZE; dash counts 512-byte blocks: 4 MiB).
        let received = try receive(world, wrapper: "ulimit -f 8192;").wait()
        #expect(received.status == 1)
        #expect(received.stderr.contains("the disk is full"), "\(received.stderr)")
        #expect(received.stderr.split(separator: "\n").count == 1, "\(received.stderr)")
        #expect(!FileManager.default.fileExists(atPath: world.inbox + "/large.bin"))
        #expect(sender.wait().status == 1)
    }
}

/// A free loopback TCP port (bound, read, released).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw TimedOut(command: "no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A one-connection TCP proxy on loopback between the receiver (client) and the sender: it can
/// throttle the sender's bytes and flip one bit at a chosen offset of the sender → receiver stream.
final class TamperingProxy: @unchecked Sendable {
    let port: Int
    private let listenFD: Int32
    private let lock = NSLock()
    private var didFlip = false
    var flipped: Bool { lock.lock(); defer { lock.unlock() }; return didFlip }

    init(upstreamPort: Int, bytesPerSecond: Int?, flipAt: Int? = nil) throws {
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = listenFD
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw TimedOut(command: "proxy listen") }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_addr.s_addr = inet_addr("127.0.0.1")
            target.sin_port = UInt16(upstreamPort).bigEndian
            let connected = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else { close(client); return }
            // Receiver → sender: plain copy.
            Thread.detachNewThread {
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = read(client, &buffer, buffer.count)
                    if n <= 0 || send(upstream, buffer, n, Int32(MSG_NOSIGNAL)) != n { break }
                }
                shutdown(upstream, Int32(SHUT_WR))
            }
            // Sender → receiver: throttled, with the one flipped bit.
            var buffer = [UInt8](repeating: 0, count: 65536)
            var offset = 0
            let start = Date()
            while true {
                let n = read(upstream, &buffer, buffer.count)
                if n <= 0 { break }
                if let flipAt, flipAt >= offset, flipAt < offset + n {
                    buffer[flipAt - offset] ^= 0x01
                    self.lock.lock(); self.didFlip = true; self.lock.unlock()
                }
                if send(client, buffer, n, Int32(MSG_NOSIGNAL)) != n { break }
                offset += n
                if let bytesPerSecond {
                    let due = Double(offset) / Double(bytesPerSecond) - Date().timeIntervalSince(start)
                    if due > 0 { usleep(UInt32(due * 1_000_000)) }
                }
            }
            shutdown(client, Int32(SHUT_WR))
            close(client); close(upstream)
        }
    }

    deinit { close(listenFD) }
}
