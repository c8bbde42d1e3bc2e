import ShroudTestSupport
import Testing
import ShroudWire
@testable import ShroudRelayCore

/// Bad input never crashes the relay and affects only the connection that sent it.
@Suite struct RelayFuzzTests {
    @Test(arguments: relayStoreKinds)
    func mutatedFramesNeverCrashAndLeaveOthersWorking(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 1000, maximumConnectionsPerIP: 1000, messageTTLMilliseconds: 100_000)
        limits.connectionBurstPerIP = 100_000
        limits.requestBurst = 100_000
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let bystander = TestIdentity(seed: 9)
        let watcher = try h.login(bystander, address: "10.9.9.9")
        let room = channelID(0x77)
        _ = h.request(watcher, .createChannel(channel: room, visibility: .open, metadata: blob(1)))
        let fuzzer = TestIdentity(seed: 8)
        let seeds: [RelayMessage] = [
            .sendDirect(recipient: bystander.key, blob: blob(2)), .joinChannel(channel: room), .sendChannel(channel: room, blob: blob(3)),
            .acknowledgeDirect([try MessageID(blob(4, size: 16))]), .fetchHistory(channel: room, afterSequence: 0, limit: 5),
            .createInvite(channel: room, uses: 2, ttlSeconds: 60), .kickMember(channel: room, member: bystander.key),
            .publishPrekeys(agreement: fuzzer.agreement, signed: SignedPrekey(id: 1, key: try PrekeyPublicKey(blob(5, size: 32)), signature: try Ed25519Signature(blob(6, size: 64))),
                            oneTime: [OneTimePrekey(id: 2, key: try PrekeyPublicKey(blob(7, size: 32)))]),
            .fetchBundle(identity: fuzzer.key), .listMembers(channel: room), .leaveChannel(channel: room),
        ]
        var rng = SplitMix64(seed: 0xF022)
        var connection = try h.login(fuzzer)
        for round in 0..<3000 {
            if h.closed.contains(connection) { connection = try h.login(fuzzer) }
            var bytes = SessionFrame(requestID: UInt32(round), seeds[round % seeds.count]).serialize()
            if round % 3 != 0 {
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let index = Int.random(in: 0..<bytes.count, using: &rng)
                    bytes[index] ^= UInt8.random(in: 1...255, using: &rng)
                }
            }
            h.sendRaw(connection, bytes)
            _ = h.take(connection)
            if round % 500 == 0 { h.advance(milliseconds: 1000) }
        }
        // The bystander was never closed and the relay still answers it.
        #expect(!h.closed.contains(watcher))
        #expect(h.request(watcher, .countPrekeys).count == 1)
    }
}
