import ShroudCrypto

// Double Ratchet (header encryption) and Sender Keys throughput on one core, 1 KiB messages.
// Options: --seconds S (per measurement, default 2), --size BYTES (default 1024),
// --only one-way|ping-pong (stop after that loop, for profiling).
func benchRatchet(_ arguments: [String]) throws {
    var seconds = 2.0
    var size = 1024
    var only = ""
    var i = 0
    while i < arguments.count {
        switch arguments[i] {
        case "--seconds" where i + 1 < arguments.count: seconds = Double(arguments[i + 1]) ?? seconds; i += 2
        case "--size" where i + 1 < arguments.count: size = Int(arguments[i + 1]) ?? size; i += 2
        case "--only" where i + 1 < arguments.count: only = arguments[i + 1]; i += 2
        default: throw BenchError.failed("unknown option \(arguments[i]); use --seconds S --size BYTES")
        }
    }
    var random = SystemRandom()
    let alice = try IdentityKeyPair(seed: SecureBytes(randomCount: 64, using: &random))
    let bob = try IdentityKeyPair(seed: SecureBytes(randomCount: 64, using: &random))
    let spk = try SignedPreKey.generate(id: 1, identity: bob, now: 0, random: &random)
    let bundle = try PreKeyBundle(identity: bob, signedPreKey: spk, oneTimePreKey: nil)
    var aliceSession = try Session.initiate(identity: alice, bundle: bundle, random: &random)
    guard case let .preKey(first) = try aliceSession.encrypt([0], localIdentity: alice.publicIdentity) else {
        throw BenchError.failed("first message is not a prekey message")
    }
    var bobSession = try Session.respond(identity: bob, message: first, signedPreKey: spk, oneTimePreKey: nil, now: 0,
                                         random: &random).session
    let plaintext = [UInt8](repeating: 0x5A, count: size)

    func ratchet(_ m: SessionMessage) -> RatchetMessage {
        switch m {
        case let .ratchet(r): return r
        case let .preKey(p): return p.message
        }
    }

    /// Seconds of CPU time this thread has used: on a shared machine, wall time also counts the
    /// time other processes held the core, so both are reported.
    func threadCPUTime() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    struct Measurement { let perSecond: Double; let perCPUSecond: Double; let count: Int }

    /// Runs `body` in batches until `seconds` of wall time have passed.
    func measure(_ body: () throws -> Void) rethrows -> Measurement {
        var count = 0
        let start = now(), cpuStart = threadCPUTime()
        var elapsed = 0.0
        repeat {
            for _ in 0..<200 { try body() }
            count += 200
            elapsed = now() - start
        } while elapsed < seconds
        let cpu = threadCPUTime() - cpuStart
        return Measurement(perSecond: Double(count) / elapsed, perCPUSecond: Double(count) / max(cpu, 1e-9), count: count)
    }

    // One direction: Alice → Bob, so the receiving chain only steps symmetrically.
    // Bob replies once first so that Alice's messages are plain ratchet messages.
    _ = try aliceSession.decrypt(ratchet(try bobSession.encrypt([1], localIdentity: bob.publicIdentity)), now: 0, random: &random)
    let oneWay = try measure {
        let m = try aliceSession.encrypt(plaintext, localIdentity: alice.publicIdentity)
        let p = try bobSession.decrypt(ratchet(m), now: 0, random: &random)
        guard p.count == size else { throw BenchError.failed("wrong plaintext") }
    }
    if only == "one-way" {
        print("one-way ratchet encrypt+decrypt: \(fmt(oneWay.perSecond, 0))/s wall, \(fmt(oneWay.perCPUSecond, 0)) per CPU-second")
        return
    }
    // Ping-pong: every message changes direction, so every receive performs a DH ratchet step.
    var toBob = true
    let pingPong = try measure {
        if toBob {
            let m = try aliceSession.encrypt(plaintext, localIdentity: alice.publicIdentity)
            _ = try bobSession.decrypt(ratchet(m), now: 0, random: &random)
        } else {
            let m = try bobSession.encrypt(plaintext, localIdentity: bob.publicIdentity)
            _ = try aliceSession.decrypt(ratchet(m), now: 0, random: &random)
        }
        toBob.toggle()
    }
    if only == "ping-pong" {
        print("ping-pong ratchet encrypt+decrypt: \(fmt(pingPong.perSecond, 0))/s wall, \(fmt(pingPong.perCPUSecond, 0)) per CPU-second")
        return
    }

    // Last, since the receiver never sees these messages.
    let encryptOnly = try measure {
        _ = try aliceSession.encrypt(plaintext, localIdentity: alice.publicIdentity)
    }

    // Sender keys: encrypt + sign at the sender, verify + decrypt at one receiver.
    var own = OwnSenderKey(random: &random)
    var receiver = SenderKeyRecord()
    receiver.process(own.distribution)
    let channel = Array("bench-channel".utf8)
    let senderKeys = try measure {
        let m = try own.encrypt(plaintext, associatedData: channel)
        _ = try receiver.decrypt(m, associatedData: channel)
        if own.iteration > 100_000 {  // stay far from the skipped-key window
            own.rotate(random: &random)
            receiver = SenderKeyRecord()
            receiver.process(own.distribution)
        }
    }
    let senderEncrypt = try measure { _ = try own.encrypt(plaintext, associatedData: channel) }

    var table = Table("operation", "message bytes", "ops/s (wall)", "ops per CPU-second (one core)", "CPU µs/op", "count")
    func add(_ name: String, _ r: Measurement) {
        table.add(name, "\(size)", fmt(r.perSecond, 0), fmt(r.perCPUSecond, 0), fmt(1e6 / r.perCPUSecond, 2), "\(r.count)")
    }
    add("ratchet encrypt+decrypt, one direction", oneWay)
    add("ratchet encrypt only", encryptOnly)
    add("ratchet encrypt+decrypt, ping-pong (DH step each message)", pingPong)
    add("sender key encrypt+sign, verify+decrypt", senderKeys)
    add("sender key encrypt+sign only", senderEncrypt)
    table.print(title: "Double Ratchet (header encryption) and Sender Keys")
}
