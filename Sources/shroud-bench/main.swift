// shroud-bench: the project's benchmarks. Each prints a Markdown table that goes into
// docs/PERFORMANCE.md together with the command that produced it. Run through ./tools/bench.
// Benchmarks measure; they never assert on wall time.

let groups: [(name: String, summary: String, run: ([String]) throws -> Void)] = [
    ("codecs", "Opus encode/decode × real time; VP8 encode/decode, libyuv conversion per resolution", benchCodecs),
    ("capture", "X11 capture → I420 → VP8 per resolution, one thread, on its own Xvfb", benchCapture),
    ("sframe", "SFrame seal/open of 1200-byte frames vs openssl speed -evp aes-256-gcm", benchSFrame),
    ("keystore", "Argon2id unlock time with the keystore parameters", benchKeystore),
    ("ratchet", "Double Ratchet encrypt+decrypt of 1 KiB messages per second", benchRatchet),
    ("relay", "Relay core sealed direct messages sent+delivered+acknowledged per second, in-memory and SQLite", benchRelay),
    ("mediaplane", "routing header, retransmission cache, packetize/assemble, voice receiver per packet", benchMediaPlane),
    ("screen", "simulcast sender CPU and bitrate per screen, relay layer selector per packet", benchScreen),
    ("screenshare", "real screen share/watch on loopback: glass-to-glass delay, sender CPU, bitrate still vs moving", benchScreenShare),
]

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first, let group = groups.first(where: { $0.name == name }) else {
    print("usage: shroud-bench GROUP [options]\n")
    for g in groups { print("  \(g.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(g.summary)") }
    exit(2)
}
do {
    try group.run(Array(arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("shroud-bench: \(error)\n".utf8))
    exit(1)
}
