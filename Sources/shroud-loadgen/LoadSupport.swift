import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import ShroudNet
import ShroudWire

// What every mode shares: options, the relay child process, simulated clients, tables.

struct LoadgenError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `--name value` options; `--relay-env NAME=VALUE` and `--relay-arg ARG` (e.g.
/// `--relay-arg --frames-per-commit=1`) may repeat.
struct Options {
    private var values: [String: [String]] = [:]

    init(_ arguments: [String], known: Set<String>) throws {
        var i = 0
        while i < arguments.count {
            let name = arguments[i]
            guard name.hasPrefix("--"), known.contains(name) || ["--relay", "--relay-env", "--relay-arg"].contains(name) else {
                throw LoadgenError("unknown option \(name)")
            }
            guard i + 1 < arguments.count else { throw LoadgenError("\(name) needs a value") }
            values[name, default: []].append(arguments[i + 1])
            i += 2
        }
    }

    func int(_ name: String, _ fallback: Int) throws -> Int {
        guard let text = values[name]?.last else { return fallback }
        guard let value = Int(text), value >= 0 else { throw LoadgenError("\(name) needs a non-negative integer, not \(text)") }
        return value
    }

    func double(_ name: String, _ fallback: Double) throws -> Double {
        guard let text = values[name]?.last else { return fallback }
        guard let value = Double(text), value >= 0 else { throw LoadgenError("\(name) needs a non-negative number, not \(text)") }
        return value
    }

    func ints(_ name: String, _ fallback: [Int]) throws -> [Int] {
        guard let text = values[name]?.last else { return fallback }
        let parsed = text.split(separator: ",").compactMap { Int($0) }
        guard !parsed.isEmpty, parsed.count == text.split(separator: ",").count else { throw LoadgenError("\(name) needs N,N,…") }
        return parsed
    }

    func strings(_ name: String) -> [String] { values[name] ?? [] }
    func string(_ name: String) -> String? { values[name]?.last }
}

/// The relay under test: a `shroud-relay` child on a fresh SQLite database in a temporary
/// directory, listening on 127.0.0.1 on a free port. Stopped (SIGTERM) and cleaned up by `stop`.
final class RelayProcess {
    let process = Process()
    let port: Int
    let directory: String
    var pid: Int32 { process.processIdentifier }

    init(options: Options, maximumConnections: Int) throws {
        let binary = options.string("--relay")
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("shroud-relay").path
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw LoadgenError("no relay at \(binary) (use --relay PATH)") }
        directory = NSTemporaryDirectory() + "shroud-loadgen-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try freePort()
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SC_") }
        environment["SC_HOST"] = "127.0.0.1"
        environment["SC_PORT"] = "\(port)"
        environment["SC_DATABASE_URL"] = "sqlite://\(directory)/relay.db"
        environment["SC_MAX_CONNECTIONS"] = "\(maximumConnections)"
        environment["SC_MAX_CONNECTIONS_PER_IP"] = "\(clientsPerAddress)"
        for assignment in options.strings("--relay-env") {
            guard let eq = assignment.firstIndex(of: "=") else { throw LoadgenError("--relay-env needs NAME=VALUE") }
            environment[String(assignment[..<eq])] = String(assignment[assignment.index(after: eq)...])
        }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--log-level", "warning"] + options.strings("--relay-arg")
        process.environment = environment
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/stderr")
        try process.run()
        // Ready when it accepts a TCP connection.
        let deadline = Date().addingTimeInterval(20)
        while !canConnect(port: port) {
            guard process.isRunning else { throw LoadgenError("the relay exited with status \(process.terminationStatus)") }
            guard Date() < deadline else { throw LoadgenError("the relay did not listen within 20 s") }
            usleep(50_000)
        }
    }

    /// `VmRSS` and `Threads` from /proc/PID/status.
    func memory() throws -> (rssKiB: Int, threads: Int) {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0
        }
        return (field("VmRSS"), field("Threads"))
    }

    /// User + system CPU seconds the relay used so far (/proc/PID/stat fields 14 and 15).
    func cpuSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command name: field 3 (state) is index 0, so 14 and 15 are 11 and 12.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func stop() {
        if process.isRunning {
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// CPU seconds this process used so far.
func ownCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

private func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw LoadgenError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw LoadgenError("bind: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: address.sin_port))
}

private func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// The relay allows SC_MAX_CONNECTIONS_PER_IP (default 10) connections per address; the load
/// generator puts this many clients on each loopback source address.
let clientsPerAddress = 10

/// The loopback source address of client `index`: 127.1.0.1, 127.1.0.2, … (ten clients each).
/// 127.0.0.1 itself is left to other users of the machine.
func sourceAddress(ofClient index: Int) -> String {
    let n = index / clientsPerAddress
    return "127.1.\(n / 254).\(n % 254 + 1)"
}

/// Raises the soft open-file limit to the hard limit (the relay child inherits it) and returns it.
func raiseFileLimit() -> Int {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return Int(limit.rlim_cur)
}

func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// What a simulated client does once authenticated. Called only on its channel's event loop.
protocol ClientBehavior: AnyObject {
    func authenticated(channel: Channel)
    func received(_ frame: SessionFrame, channel: Channel)
    func readComplete(channel: Channel)
}

extension ClientBehavior {
    func readComplete(channel: Channel) {}
}

/// One simulated client with its own Ed25519 identity.
struct LoadIdentity: Sendable {
    let signingKey: Curve25519.Signing.PrivateKey
    let key: IdentityKey

    init() throws {
        signingKey = Curve25519.Signing.PrivateKey()
        key = try IdentityKey(Array(signingKey.publicKey.rawRepresentation))
    }
}

/// Opens a WebSocket from `source` to the relay, answers the challenge and hands the session to
/// `behavior`; the future succeeds once the relay accepted the answer.
func connectClient(group: EventLoopGroup, port: Int, source: String, identity: LoadIdentity,
                   behavior: ClientBehavior & Sendable) -> EventLoopFuture<Channel> {
    let loop = group.next()
    let authenticated = loop.makePromise(of: Void.self)
    let bootstrap: ClientBootstrap
    do {
        bootstrap = ClientBootstrap(group: loop).bind(to: try SocketAddress(ipAddress: source, port: 0))
    } catch {
        authenticated.fail(error)
        return loop.makeFailedFuture(error)
    }
    let connected = bootstrap.channelInitializer { channel in
        let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: SessionLimits.maximumFrameSize, upgradePipelineHandler: { channel, _ in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    LoadSessionHandler(identity: identity, behavior: behavior, authenticated: authenticated))
            }
        })
        let upgrade: NIOHTTPClientUpgradeSendableConfiguration = (upgraders: [upgrader], completionHandler: { _ in })
        return channel.pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, withClientUpgrade: upgrade)
            .flatMap { channel.pipeline.addHandler(UpgradeRequester(host: "127.0.0.1:\(port)")) }
    }.connect(host: "127.0.0.1", port: port)
    connected.whenFailure { authenticated.fail($0) }
    return connected.flatMap { channel in
        channel.closeFuture.whenComplete { _ in authenticated.fail(LoadgenError("closed before authentication")) }
        return authenticated.futureResult.map { channel }
    }
}

/// Sends one session frame as a masked binary WebSocket message; `flush` false leaves it buffered.
func write(_ frame: SessionFrame, on channel: Channel, flush: Bool = true) {
    let message = WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: channel.allocator.buffer(bytes: frame.serialize()))
    if flush { channel.writeAndFlush(message, promise: nil) } else { channel.write(message, promise: nil) }
}

private final class LoadSessionHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    private let identity: LoadIdentity
    private let behavior: ClientBehavior
    private let authenticated: EventLoopPromise<Void>
    private var isAuthenticated = false

    init(identity: LoadIdentity, behavior: ClientBehavior, authenticated: EventLoopPromise<Void>) {
        self.identity = identity
        self.behavior = behavior
        self.authenticated = authenticated
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            guard let session = try? SessionFrame(parsing: Array(frame.unmaskedData.readableBytesView)) else {
                context.close(promise: nil)
                return
            }
            if isAuthenticated {
                behavior.received(session, channel: context.channel)
                return
            }
            switch session.message {
            case let .challenge(nonce, deadline, binding):
                let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: identity.key)
                do {
                    let signature = try Ed25519Signature(Array(identity.signingKey.signature(for: transcript)))
                    write(SessionFrame(requestID: 1, .authenticate(identity: identity.key, signature: signature)), on: context.channel)
                } catch {
                    authenticated.fail(error)
                    context.close(promise: nil)
                }
            case .ok where session.requestID == 1:
                isAuthenticated = true
                authenticated.succeed()
                behavior.authenticated(channel: context.channel)
            case let .error(code, text):
                authenticated.fail(LoadgenError("refused: \(code) \(text)"))
                context.close(promise: nil)
            default:
                break
            }
        case .ping:
            // The relay pings a client silent for 30 s and drops it if the ping goes unanswered.
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)),
                                  promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if isAuthenticated { behavior.readComplete(channel: context.channel) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// Sends the upgrade request once connected (the upgrader adds the WebSocket headers).
/// Connects clients `range` with at most `concurrency` handshakes in flight; returns the channels
/// and how many failed (with the first failure's reason).
func connectMany(_ count: Int, firstIndex: Int, concurrency: Int, group: EventLoopGroup, port: Int,
                 makeBehavior: (Int) throws -> (LoadIdentity, ClientBehavior & Sendable)) throws -> (channels: [Channel], failures: Int, firstFailure: String?) {
    var channels: [Channel] = []
    var failures = 0
    var firstFailure: String?
    var index = firstIndex
    while index < firstIndex + count {
        let end = min(index + concurrency, firstIndex + count)
        let futures = try (index..<end).map { i -> EventLoopFuture<Channel> in
            let (identity, behavior) = try makeBehavior(i)
            return connectClient(group: group, port: port, source: sourceAddress(ofClient: i), identity: identity, behavior: behavior)
        }
        for future in futures {
            do { channels.append(try future.wait()) } catch {
                failures += 1
                if firstFailure == nil { firstFailure = "\(error)" }
            }
        }
        index = end
    }
    return (channels, failures, firstFailure)
}

/// The value below which `p` of the sorted values fall (nearest rank).
func percentile(_ sorted: [UInt64], _ p: Double) -> UInt64 {
    guard !sorted.isEmpty else { return 0 }
    let rank = Int((p * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

/// A Markdown table.
struct Table {
    let header: [String]
    var rows: [[String]] = []
    init(_ header: String...) { self.header = header }
    mutating func add(_ cells: String...) { rows.append(cells) }
    var markdown: String {
        ([header, header.map { _ in "---" }] + rows).map { "| " + $0.joined(separator: " | ") + " |" }.joined(separator: "\n")
    }
}

func milliseconds(_ nanoseconds: UInt64) -> String { String(format: "%.2f", Double(nanoseconds) / 1e6) }

/// Closes the clients and waits until they are closed, before their event loops shut down.
func closeAll(_ channels: [Channel], group: EventLoopGroup) {
    let closed = channels.map { channel in channel.close().flatMapErrorThrowing { _ in } }
    _ = try? EventLoopFuture.andAllComplete(closed, on: group.next()).wait()
}

/// The machine's one-minute load average (/proc/loadavg): the machine is shared, so every row
/// says how busy it was.
func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first.map(String.init) ?? "?"
}
