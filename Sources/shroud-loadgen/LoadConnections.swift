import Foundation
import NIOCore
import NIOPosix
import ShroudWire

/// `connections`: the relay's resident memory idle (started, nothing connected) and with idle
/// authenticated connections, ten per loopback source address, added in stages. Per connection =
/// (RSS at the stage − idle RSS) / connections. Each stage settles for `--settle` seconds before
/// it is read; a client answers the relay's pings, so no connection is dropped as silent.
///
/// Options: --stages N,N,… cumulative connection counts (1000,5000,10000), --settle S (3),
/// --concurrency N handshakes in flight (200).
func loadConnections(_ arguments: [String]) throws {
    let options = try Options(arguments, known: ["--stages", "--settle", "--concurrency"])
    let stages = try options.ints("--stages", [1000, 5000, 10_000]).sorted()
    let settle = try options.double("--settle", 3)
    let concurrency = max(1, try options.int("--concurrency", 200))
    let total = stages.last ?? 0
    let files = raiseFileLimit()
    // The relay needs one descriptor per connection plus its own; this process one per client.
    guard files >= total + 200 else { throw LoadgenError("RLIMIT_NOFILE is \(files); \(total) connections need \(total + 200)") }

    let relay = try RelayProcess(options: options, maximumConnections: total + 100)
    defer { relay.stop() }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
    defer { try? group.syncShutdownGracefully() }
    Thread.sleep(forTimeInterval: settle)
    let idle = try relay.memory()
    var table = Table("authenticated connections", "relay RSS MiB", "relay threads", "KiB per connection (over idle)", "handshake s")
    table.add("0 (idle)", String(format: "%.1f", Double(idle.rssKiB) / 1024), "\(idle.threads)", "–", "–")
    var channels: [Channel] = []
    let watcher = IdleClient()
    for stage in stages where stage > channels.count {
        let started = Date()
        let (opened, failures, firstFailure) = try connectMany(stage - channels.count, firstIndex: channels.count, concurrency: concurrency,
                                                               group: group, port: relay.port) { _ in (try LoadIdentity(), watcher) }
        let handshake = Date().timeIntervalSince(started)
        channels += opened
        guard failures == 0 else { throw LoadgenError("\(failures) connections failed at stage \(stage): \(firstFailure ?? "")") }
        Thread.sleep(forTimeInterval: settle)
        let open = channels.filter(\.isActive).count
        guard open == stage else { throw LoadgenError("only \(open) of \(stage) connections stayed open") }
        let memory = try relay.memory()
        table.add("\(stage)", String(format: "%.1f", Double(memory.rssKiB) / 1024), "\(memory.threads)",
                  String(format: "%.1f", Double(memory.rssKiB - idle.rssKiB) / Double(stage)), String(format: "%.1f", handshake))
    }
    closeAll(channels, group: group)
    print("#### Relay memory, idle and with idle authenticated WebSocket connections (\(clientsPerAddress) per source address)\n")
    print(table.markdown)
}

/// Does nothing once authenticated (the handler answers pings). Shared by all connections; it holds
/// no state, so any loop may call it.
private final class IdleClient: ClientBehavior, @unchecked Sendable {
    func authenticated(channel: Channel) {}
    func received(_ frame: SessionFrame, channel: Channel) {}
}
