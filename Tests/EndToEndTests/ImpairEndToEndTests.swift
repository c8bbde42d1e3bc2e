import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A non-blocking UDP socket on 127.0.0.1 for the tests (closed in deinit).
final class LoopbackUDP {
    let fd: Int32
    let port: UInt16

    init() throws {
        let socketFD = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socketFD, $0, &length) }
        }
        _ = fcntl(socketFD, F_SETFL, fcntl(socketFD, F_GETFL) | O_NONBLOCK)
        fd = socketFD
        port = UInt16(bigEndian: address.sin_port)
        guard socketFD >= 0, bound == 0 else { throw TimedOut(command: "UDP bind on 127.0.0.1") }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8], to port: UInt16) {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    /// Every datagram waiting now, with the port it came from.
    func drain() -> [(bytes: [UInt8], from: UInt16)] {
        var out: [(bytes: [UInt8], from: UInt16)] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            var from = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &length) }
                }
            }
            guard count >= 0 else { return out }
            out.append((Array(buffer[0 ..< count]), UInt16(bigEndian: from.sin_port)))
        }
    }
}

/// The impairment proxy between a client socket and a target socket on loopback.
@Suite("shroud-impair", .timeLimit(.minutes(1)))
struct ImpairEndToEndTests {
    struct Run {
        var atTarget: [UInt16]
        var backAtClient: [UInt16]
        var summary: String
    }

    /// Sends `count` numbered datagrams 1 ms apart through the proxy; the target echoes each one
    /// back through the proxy. Returns the numbers in arrival order at the target and the client.
    static func run(_ flags: [String], count: Int = 400) throws -> Run {
        let target = try LoopbackUDP(), client = try LoopbackUDP()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.path("shroud-impair"))
        process.arguments = ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:\(target.port)", "--duration", "3"] + flags
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        // First line: {"listening":PORT}
        var firstLine = Data()
        while !firstLine.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { break }
            firstLine += chunk
        }
        let text = String(decoding: firstLine, as: UTF8.self)
        guard let object = try JSONSerialization.jsonObject(with: Data(text.split(separator: "\n")[0].utf8)) as? [String: Any],
              let port = object["listening"] as? Int else { throw TimedOut(command: "no listening line: \(text)") }
        var atTarget: [UInt16] = [], back: [UInt16] = []
        for i in 0 ..< count {
            client.send([UInt8(i >> 8), UInt8(i & 0xFF)], to: UInt16(port))
            usleep(1_000)
            for (bytes, from) in target.drain() {
                atTarget.append(UInt16(bytes[0]) << 8 | UInt16(bytes[1]))
                target.send(bytes, to: from)
            }
            back += client.drain().map { UInt16($0.bytes[0]) << 8 | UInt16($0.bytes[1]) }
        }
        let settle = Date().addingTimeInterval(0.5)
        while Date() < settle {
            usleep(2_000)
            for (bytes, from) in target.drain() {
                atTarget.append(UInt16(bytes[0]) << 8 | UInt16(bytes[1]))
                target.send(bytes, to: from)
            }
            back += client.drain().map { UInt16($0.bytes[0]) << 8 | UInt16($0.bytes[1]) }
        }
        process.waitUntilExit()
        let rest = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return Run(atTarget: atTarget, backAtClient: back, summary: (text + rest).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test func cleanProxyForwardsEverythingBothWaysInOrder() throws {
        let run = try Self.run([])
        #expect(run.atTarget == Array(0 ..< 400))
        #expect(run.backAtClient == Array(0 ..< 400))
        #expect(run.summary.contains("\"dropped\":0") && run.summary.contains("\"clients\":1"), "\(run.summary)")
    }

    @Test func seededLossJitterAndReorderRepeat() throws {
        let flags = ["--loss", "0.1", "--jitter-ms", "30", "--reorder", "0.05", "--seed", "42"]
        let first = try Self.run(flags)
        let second = try Self.run(flags)
        // 10 % loss of 400: 40 expected, binomial σ ≈ 6.
        let lostUp = 400 - first.atTarget.count
        #expect((15 ... 70).contains(lostUp), "lost \(lostUp)")
        // Jitter of 30 ms on datagrams 1 ms apart reorders them.
        #expect(first.atTarget != first.atTarget.sorted())
        // Echoes cross the proxy again: about 10 % of the survivors are lost on the way back.
        #expect(first.backAtClient.count < first.atTarget.count)
        // Same seed, same arrival order at the proxy: the same datagrams are lost.
        #expect(Set(first.atTarget) == Set(second.atTarget))
        let other = try Self.run(["--loss", "0.1", "--seed", "43"])
        #expect(Set(other.atTarget) != Set(first.atTarget))
    }

    @Test func lossOnlyWithinItsWindow() throws {
        // All lost for the first 0.3 s, none after: the target gets a tail of the sequence.
        let early = try Self.run(["--loss", "1", "--loss-until", "0.3"])
        let first = try #require(early.atTarget.first)
        #expect(first > 0 && early.atTarget == Array(first ..< 400), "\(early.atTarget.prefix(5))…")
        // None lost for the first 0.3 s, all after: a head of the sequence.
        let late = try Self.run(["--loss", "1", "--loss-from", "0.3"])
        let last = try #require(late.atTarget.last)
        #expect(last < 399 && late.atTarget == Array(0 ... last), "…\(late.atTarget.suffix(5))")
    }

    @Test func badArgumentsExitWithAReason() throws {
        let result = try EndToEndTests.run(Binaries.path("shroud-impair"), ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--loss", "2"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("--loss must be a number"))
    }
}
