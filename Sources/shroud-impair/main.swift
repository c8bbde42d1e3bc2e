// shroud-impair: a UDP proxy on loopback that loses, delays, jitters, reorders and duplicates
// datagrams with a seeded generator, so loss tests repeat (the kernel here has no netem).
//
//   shroud-impair --listen 127.0.0.1:0 --target 127.0.0.1:8443 [--loss 0.1] [--delay-ms 0]
//                 [--jitter-ms 30] [--reorder 0.05] [--reorder-ms 30] [--duplicate 0]
//                 [--seed 1] [--duration SECONDS] [--loss-from SECONDS] [--loss-until SECONDS]
//
// --loss-from/--loss-until limit the loss to that window of the run (seconds after start), so a
// test sees a link go bad and recover within one process.
//
// Datagrams from each client address go to the target from a socket of their own, and the
// target's answers go back to that client; both directions are impaired with the same settings
// (each direction has its own generator derived from the seed). Prints {"listening":PORT} first,
// and a JSON statistics line when --duration ends or on SIGINT/SIGTERM.
#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64, seeded: the same seed and the same arrival order give the same decisions.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

struct Impairment {
    var loss = 0.0
    var delayMs = 0.0
    var jitterMs = 0.0
    var reorder = 0.0
    var reorderMs = 30.0
    var duplicate = 0.0
    /// When the loss applies, in ms after the start.
    var lossFromMs = 0.0
    var lossUntilMs = Double.infinity

    /// Release delays (ms) for one datagram `elapsedMs` after the start: empty when lost, two
    /// entries when duplicated. The loss draw happens outside the window too, so the sequence of
    /// decisions does not depend on the window.
    func decide(using random: inout SeededGenerator, elapsedMs: Double = 0) -> [Double] {
        let lossApplies = elapsedMs >= lossFromMs && elapsedMs < lossUntilMs
        if Double.random(in: 0 ..< 1, using: &random) < loss, lossApplies { return [] }
        let copies = Double.random(in: 0 ..< 1, using: &random) < duplicate ? 2 : 1
        return (0 ..< copies).map { _ in
            var delay = delayMs + (jitterMs > 0 ? Double.random(in: 0 ... jitterMs, using: &random) : 0)
            if Double.random(in: 0 ..< 1, using: &random) < reorder { delay += reorderMs }
            return delay
        }
    }
}

enum Limits {
    /// Largest datagram relayed (the media plane's limit is 1,200; leave room for anything else).
    static let maxDatagramBytes = 65_507
    /// Clients (distinct source addresses) served at once.
    static let maxClients = 256
    /// Datagrams held for delayed release at once; beyond it new ones are dropped and counted.
    static let maxHeldDatagrams = 100_000
}

enum StopFlag {
    nonisolated(unsafe) static var requested: sig_atomic_t = 0
}

func fail(_ message: String) -> Never {
    var line = "shroud-impair: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(2)
}

func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

func parseAddress(_ text: String) -> sockaddr_in? {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 2, let port = UInt16(parts[1]) else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    guard inet_pton(AF_INET, String(parts[0]), &address.sin_addr) == 1 else { return nil }
    return address
}

func monotonicMs() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) * 1000 + Double(now.tv_nsec) / 1_000_000
}

func udpSocket(binding address: sockaddr_in) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { fail("socket: \(String(cString: strerror(errno)))") }
    var bound = address
    let result = withUnsafePointer(to: &bound) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard result == 0 else { fail("bind: \(String(cString: strerror(errno)))") }
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return fd
}

func localPort(_ fd: Int32) -> UInt16 {
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return UInt16(bigEndian: address.sin_port)
}

// MARK: Arguments

struct Settings {
    var listen: sockaddr_in
    var target: sockaddr_in
    var impairment: Impairment
    var seed: UInt64
    var duration: Double

    static func parse(_ commandLine: [String]) -> Settings {
        var options: [String: String] = [:]
        var arguments = commandLine.dropFirst()
        while let flag = arguments.popFirst() {
            guard flag.hasPrefix("--"), let value = arguments.popFirst() else { fail("expected --flag value, got \(flag)") }
            options[String(flag.dropFirst(2))] = value
        }
        let known: Set = ["listen", "target", "loss", "delay-ms", "jitter-ms", "reorder", "reorder-ms", "duplicate", "seed", "duration",
                           "loss-from", "loss-until"]
        if let unknown = options.keys.first(where: { !known.contains($0) }) { fail("unknown option --\(unknown)") }
        guard let listenText = options["listen"], let listen = parseAddress(listenText) else { fail("--listen HOST:PORT is required (IPv4)") }
        guard let targetText = options["target"], let target = parseAddress(targetText) else { fail("--target HOST:PORT is required (IPv4)") }

        func number(_ name: String, _ range: ClosedRange<Double>, default value: Double) -> Double {
            guard let text = options[name] else { return value }
            guard let parsed = Double(text), range.contains(parsed) else { fail("--\(name) must be a number in \(range)") }
            return parsed
        }

        var impairment = Impairment()
        impairment.loss = number("loss", 0 ... 1, default: 0)
        impairment.delayMs = number("delay-ms", 0 ... 10_000, default: 0)
        impairment.jitterMs = number("jitter-ms", 0 ... 10_000, default: 0)
        impairment.reorder = number("reorder", 0 ... 1, default: 0)
        impairment.reorderMs = number("reorder-ms", 0 ... 10_000, default: 30)
        impairment.duplicate = number("duplicate", 0 ... 1, default: 0)
        impairment.lossFromMs = number("loss-from", 0 ... 86_400, default: 0) * 1000
        impairment.lossUntilMs = options["loss-until"] == nil ? .infinity : number("loss-until", 0 ... 86_400, default: 0) * 1000
        guard let seed = UInt64(options["seed"] ?? "1") else { fail("--seed must be an unsigned integer") }
        return Settings(listen: listen, target: target, impairment: impairment, seed: seed,
                        duration: number("duration", 0 ... 86_400, default: 0))
    }
}

// MARK: Proxy

struct Held {
    var releaseMs: Double
    var order: Int
    var fd: Int32
    var destination: sockaddr_in
    var bytes: [UInt8]
}

struct Client {
    var address: sockaddr_in
    var upstream: Int32
}

func same(_ a: sockaddr_in, _ b: sockaddr_in) -> Bool {
    a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr
}

/// The event loop: one listening socket, one upstream socket per client, a list of datagrams
/// waiting for their release time.
final class ImpairProxy {
    let settings: Settings
    var upstreamRandom: SeededGenerator
    var downstreamRandom: SeededGenerator
    let listener: Int32
    var clients: [Client] = []
    var held: [Held] = []
    var order = 0
    var stats: [String: Int] = ["received": 0, "dropped": 0, "duplicated": 0, "sent": 0, "overflow": 0]
    var buffer = [UInt8](repeating: 0, count: Limits.maxDatagramBytes)
    let startMs = monotonicMs()

    init(_ settings: Settings) {
        self.settings = settings
        upstreamRandom = SeededGenerator(state: settings.seed)
        downstreamRandom = SeededGenerator(state: settings.seed ^ 0xD0D0_D0D0_D0D0_D0D0)
        listener = udpSocket(binding: settings.listen)
    }

    deinit {
        close(listener)
        for client in clients { close(client.upstream) }
    }

    func receive(_ fd: Int32) -> (bytes: [UInt8], from: sockaddr_in)? {
        var from = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let count = buffer.withUnsafeMutableBytes { raw in
            withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &length) }
            }
        }
        guard count >= 0 else { return nil }
        return (Array(buffer[0 ..< count]), from)
    }

    func schedule(_ bytes: [UInt8], fd: Int32, to destination: sockaddr_in, upstream: Bool) {
        stats["received", default: 0] += 1
        let elapsed = monotonicMs() - startMs
        let delays = upstream ? settings.impairment.decide(using: &upstreamRandom, elapsedMs: elapsed)
            : settings.impairment.decide(using: &downstreamRandom, elapsedMs: elapsed)
        if delays.isEmpty { stats["dropped", default: 0] += 1 }
        if delays.count > 1 { stats["duplicated", default: 0] += 1 }
        let now = monotonicMs()
        for delay in delays {
            guard held.count < Limits.maxHeldDatagrams else { stats["overflow", default: 0] += 1; continue }
            held.append(Held(releaseMs: now + delay, order: order, fd: fd, destination: destination, bytes: bytes))
            order += 1
        }
    }

    func release(now: Double) {
        let due = held.filter { $0.releaseMs <= now }.sorted { ($0.releaseMs, $0.order) < ($1.releaseMs, $1.order) }
        guard !due.isEmpty else { return }
        held.removeAll { $0.releaseMs <= now }
        for datagram in due {
            var destination = datagram.destination
            let sent = datagram.bytes.withUnsafeBytes { raw in
                withUnsafePointer(to: &destination) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(datagram.fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            if sent >= 0 { stats["sent", default: 0] += 1 }
        }
    }

    func run() {
        say("{\"listening\":\(localPort(listener))}")
        let start = monotonicMs()
        while StopFlag.requested == 0 {
            let now = monotonicMs()
            if settings.duration > 0, now - start >= settings.duration * 1000 { break }
            release(now: now)
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
                + clients.map { pollfd(fd: $0.upstream, events: Int16(POLLIN), revents: 0) }
            let nextRelease = held.map(\.releaseMs).min().map { max(0, $0 - now) } ?? 50
            let timeout = Int32(min(nextRelease, 50).rounded(.up))
            guard poll(&fds, nfds_t(fds.count), timeout) >= 0 || errno == EINTR else { fail("poll: \(String(cString: strerror(errno)))") }
            if fds[0].revents & Int16(POLLIN) != 0 {
                while let (bytes, from) = receive(listener) {
                    var index = clients.firstIndex { same($0.address, from) }
                    if index == nil, clients.count < Limits.maxClients {
                        var local = sockaddr_in()
                        local.sin_family = sa_family_t(AF_INET)
                        local.sin_addr = settings.listen.sin_addr
                        clients.append(Client(address: from, upstream: udpSocket(binding: local)))
                        index = clients.count - 1
                    }
                    guard let index else { stats["overflow", default: 0] += 1; continue }
                    schedule(bytes, fd: clients[index].upstream, to: settings.target, upstream: true)
                }
            }
            for (slot, client) in clients.enumerated() where slot + 1 < fds.count && fds[slot + 1].revents & Int16(POLLIN) != 0 {
                while let (bytes, _) = receive(client.upstream) {
                    schedule(bytes, fd: listener, to: client.address, upstream: false)
                }
            }
        }
        say("{" + stats.keys.sorted().map { "\"\($0)\":\(stats[$0] ?? 0)" }.joined(separator: ",") + ",\"clients\":\(clients.count)}")
    }
}

signal(SIGINT) { _ in StopFlag.requested = 1 }
signal(SIGTERM) { _ in StopFlag.requested = 1 }
ImpairProxy(Settings.parse(CommandLine.arguments)).run()
