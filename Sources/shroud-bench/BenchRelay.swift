import ShroudCrypto
import ShroudRelayCore
import ShroudStore
import ShroudWire

/// The relay core with each store, no network: authenticated clients send sealed 256-byte direct
/// messages to online recipients, which acknowledge each delivery. One message = `sendDirect`
/// (committed, `ok`, delivery pushed) + `acknowledgeDirect` (deleted). Reports messages per second
/// and the latency of each call. Options: --seconds S (default 3), --pairs N (default 50).
func benchRelay(_ arguments: [String]) throws {
    var seconds = 3.0
    var pairs = 50
    var i = 0
    while i < arguments.count {
        switch arguments[i] {
        case "--seconds": i += 1; seconds = Double(arguments[safe: i] ?? "") ?? seconds
        case "--pairs": i += 1; pairs = max(1, Int(arguments[safe: i] ?? "") ?? pairs)
        default: throw BenchError.failed("unknown option \(arguments[i])")
        }
        i += 1
    }
    var table = Table("store", "messages/s", "send p50 (µs)", "send p99 (µs)", "ack p50 (µs)", "ack p99 (µs)")
    let directory = NSTemporaryDirectory() + "shroud-bench-relay-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let stores: [(String, () throws -> any RelayStore)] = [
        ("in-memory", { InMemoryRelayStore() }),
        ("SQLite (WAL, synchronous=NORMAL)", { try SQLiteRelayStore(path: directory + "/relay.db") }),
    ]
    for (name, makeStore) in stores {
        var limits = RelayLimits(maximumConnections: 10_000, maximumConnectionsPerIP: 10_000, messageTTLMilliseconds: 3_600_000)
        limits.requestBurst = 1 << 30
        limits.connectionBurstPerIP = 1 << 30
        let relay = Relay(store: try makeStore(), relayBinding: "bench", limits: limits, random: SystemRandomNumberGenerator())
        var clock: UInt64 = 1_700_000_000_000
        var lastFrame: [ConnectionID: SessionFrame] = [:]
        func perform(_ actions: [RelayAction]) throws {
            for case let .send(id, bytes) in actions {
                lastFrame[id] = try SessionFrame(parsing: bytes)
                try perform(relay.written(id, bytes: bytes.count))
            }
        }
        func login(seed: Int) throws -> (ConnectionID, IdentityKey) {
            var random = SystemRandom()
            let pair = try IdentityKeyPair(signingSeed: SecureBytes(randomCount: 32, using: &random),
                                           agreementSecret: SecureBytes(randomCount: 32, using: &random))
            let key = try IdentityKey(pair.publicIdentity.signingKey)
            let (id, actions) = relay.connect(address: "127.0.0.\(seed % 250 + 1)", now: clock)
            try perform(actions)
            guard case let .challenge(nonce, deadline, binding)? = lastFrame[id]?.message else { throw BenchError.failed("no challenge") }
            let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: key)
            try perform(relay.receive(SessionFrame(requestID: 1, .authenticate(identity: key, signature: try Ed25519Signature(pair.sign(transcript))))
                .serialize(), from: id, now: clock))
            return (id, key)
        }
        let senders = try (0..<pairs).map { try login(seed: $0) }
        let recipients = try (0..<pairs).map { try login(seed: pairs + $0) }
        let blob = [UInt8](repeating: 0x5A, count: 256)
        var sendTimes: [Double] = [], ackTimes: [Double] = []
        var messages = 0
        let start = now()
        while now() - start < seconds {
            for pair in 0..<pairs {
                clock += 1
                let send = SessionFrame(requestID: 2, .sendDirect(recipient: recipients[pair].1, blob: blob)).serialize()
                let t0 = now()
                try perform(relay.receive(send, from: senders[pair].0, now: clock))
                let t1 = now()
                guard case let .directDelivery(messageID, _, _)? = lastFrame[recipients[pair].0]?.message else {
                    throw BenchError.failed("no delivery")
                }
                try perform(relay.receive(SessionFrame(requestID: 3, .acknowledgeDirect([messageID])).serialize(),
                                          from: recipients[pair].0, now: clock))
                let t2 = now()
                sendTimes.append(t1 - t0)
                ackTimes.append(t2 - t1)
                messages += 1
            }
        }
        let elapsed = now() - start
        func percentile(_ values: [Double], _ p: Double) -> String {
            let sorted = values.sorted()
            return fmt(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1e6)
        }
        table.add(name, fmt(Double(messages) / elapsed, 0), percentile(sendTimes, 0.5), percentile(sendTimes, 0.99),
                  percentile(ackTimes, 0.5), percentile(ackTimes, 0.99))
    }
    table.print(title: "Relay core: sealed direct message sent, delivered and acknowledged (\(pairs) sender/recipient pairs, one thread, no network)")
}
