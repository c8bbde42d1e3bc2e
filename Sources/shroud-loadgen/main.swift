import Foundation

// shroud-loadgen: drives a real shroud-relay process with many authenticated WebSocket clients
// from many loopback source addresses, and prints Markdown tables for docs/PERFORMANCE.md. Each
// mode lives in its own file; run it through tools/loadgen (release build). It measures; it never
// asserts on time.

let modes: [(name: String, summary: String, run: ([String]) throws -> Void)] = [
    ("messages", "sealed direct messages/s persisted, delivered and acknowledged, with latency", loadMessages),
    ("connections", "relay RSS idle and per idle authenticated connection", loadConnections),
    ("media", "relay media plane: forwarded packets/s vs a C sendmmsg loop, largest voice room", loadMedia),
    ("screen", "relay media plane: CPU per watcher of one 1080p+360p screen share", loadScreen),
]

let commandLine = Array(CommandLine.arguments.dropFirst())
guard let name = commandLine.first, let mode = modes.first(where: { $0.name == name }) else {
    print("usage: shroud-loadgen MODE [options]\n")
    for m in modes { print("  \(m.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(m.summary)") }
    print("\nCommon options: --relay PATH (default: shroud-relay next to this program), --relay-env NAME=VALUE, --relay-arg ARG (both repeatable)")
    exit(2)
}
do {
    try mode.run(Array(commandLine.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("shroud-loadgen: \(error)\n".utf8))
    exit(1)
}
