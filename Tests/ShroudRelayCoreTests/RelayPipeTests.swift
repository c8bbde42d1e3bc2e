import Testing
import ShroudWire
@testable import ShroudRelayCore

/// The relay's blind byte pipes for file transfers (docs/PROTOCOL.md §7), on a virtual clock.
@Suite struct RelayPipeTests {
    let alice = TestIdentity(seed: 11)
    let bob = TestIdentity(seed: 12)
    let carol = TestIdentity(seed: 13)
    let pipe = try! PipeID([UInt8](repeating: 0x5A, count: 16))

    func harness(_ configure: (inout PipeLimits) -> Void = { _ in }) -> RelayHarness {
        var limits = RelayLimits(maximumConnections: 100, maximumConnectionsPerIP: 50, messageTTLMilliseconds: 3_600_000)
        configure(&limits.pipes)
        return RelayHarness(store: InMemoryRelayStore(), limits: limits)
    }

    func pipe(_ n: UInt8) -> PipeID { try! PipeID([UInt8](repeating: n, count: 16)) }

    /// Sends a frame with request id 0, as clients send pipe data.
    func push(_ h: RelayHarness, _ id: ConnectionID, _ message: RelayMessage) {
        h.sendRaw(id, SessionFrame(message).serialize())
    }

    @Test func twoEndsMeetAndBytesFlowBothWaysUnchanged() throws {
        let h = harness()
        let a = try h.login(alice), b = try h.login(bob), c = try h.login(carol)
        #expect(h.request(a, .openPipe(pipe: pipe)) == [.ok])
        // Before the second end, data has nowhere to go.
        #expect(errorCode(h.request(a, .pipeData(pipe: pipe, data: [1]))) == .notFound)
        #expect(!h.closed.contains(a))
        #expect(h.take(a).isEmpty)
        #expect(h.request(b, .openPipe(pipe: pipe)) == [.ok])
        let ready = RelayMessage.pipeReady(pipe: pipe, bytesPerSecond: PipeLimits.defaultBytesPerSecond)
        #expect(h.take(a) == [ready])
        #expect(h.take(b) == [ready])
        // A third party, even knowing the id, cannot join a full pipe or send into it.
        #expect(errorCode(h.request(c, .openPipe(pipe: pipe))) == .alreadyExists)
        #expect(errorCode(h.request(a, .openPipe(pipe: pipe))) == .alreadyExists)
        #expect(errorCode(h.request(c, .pipeData(pipe: pipe, data: [9]))) == .notFound)

        let data = (0..<5000).map { UInt8(truncatingIfNeeded: $0) }
        push(h, a, .pipeData(pipe: pipe, data: data))
        #expect(h.take(b) == [.pipeData(pipe: pipe, data: data)])
        push(h, b, .pipeAck(pipe: pipe, bytes: 5000))
        push(h, b, .pipeData(pipe: pipe, data: [7, 7]))
        #expect(h.take(a) == [.pipeAck(pipe: pipe, bytes: 5000), .pipeData(pipe: pipe, data: [7, 7])])
        #expect(h.take(c).isEmpty)
        #expect(h.relay.pipeCount == 1)
    }

    @Test func closingOrDisconnectingTellsTheOtherEnd() throws {
        let h = harness()
        let a = try h.login(alice), b = try h.login(bob)
        _ = h.request(a, .openPipe(pipe: pipe)); _ = h.request(b, .openPipe(pipe: pipe))
        _ = h.take(a); _ = h.take(b)
        #expect(h.request(a, .closePipe(pipe: pipe)) == [.ok])
        #expect(h.take(b) == [.pipeClosed(pipe: pipe, code: .pipeEnded)])
        #expect(errorCode(h.request(a, .closePipe(pipe: pipe))) == .notFound)
        #expect(h.relay.pipeCount == 0)

        _ = h.request(a, .openPipe(pipe: pipe)); _ = h.request(b, .openPipe(pipe: pipe))
        _ = h.take(a); _ = h.take(b)
        h.apply(h.relay.disconnected(b))
        #expect(h.take(a) == [.pipeClosed(pipe: pipe, code: .pipeEnded)])
        push(h, a, .pipeData(pipe: pipe, data: [1]))  // nothing to forward to any more
        #expect(h.take(a) == [.error(code: .notFound, text: "not in this pipe")])
        #expect(h.relay.pipeCount == 0)
    }

    @Test func theDisconnectNoticeReachesTheSurvivor() throws {
        let h = harness()
        let a = try h.login(alice), b = try h.login(bob)
        _ = h.request(a, .openPipe(pipe: pipe)); _ = h.request(b, .openPipe(pipe: pipe))
        _ = h.take(a); _ = h.take(b)
        // A malformed frame from b makes the relay drop b; a hears the pipe closed.
        h.sendRaw(b, [1, 0x52, 0, 0, 0, 0, 1])
        #expect(h.closed.contains(b))
        #expect(h.take(a) == [.pipeClosed(pipe: pipe, code: .pipeEnded)])
    }

    @Test func unauthenticatedConnectionsCannotOpenPipes() throws {
        let h = harness()
        let id = h.connect()
        _ = h.take(id)
        h.sendRaw(id, SessionFrame(requestID: 1, .openPipe(pipe: pipe)).serialize())
        #expect(h.closed.contains(id))
        #expect(h.relay.pipeCount == 0)
    }

    @Test func theByteRateHoldsAtTheLimitAndClosesThePipeOnePast() throws {
        let h = harness { $0.bytesPerSecond = 10_000; $0.burstBytes = 4_000 }
        let a = try h.login(alice), b = try h.login(bob)
        _ = h.request(a, .openPipe(pipe: pipe)); _ = h.request(b, .openPipe(pipe: pipe))
        #expect(h.take(a) == [.pipeReady(pipe: pipe, bytesPerSecond: 10_000)])
        _ = h.take(b)
        // The burst, exactly.
        push(h, a, .pipeData(pipe: pipe, data: [UInt8](repeating: 1, count: 4_000)))
        #expect(h.take(b).count == 1)
        // 100 ms later the bucket holds 1000 bytes: 1000 pass, then one byte more closes the pipe.
        h.now += 100
        push(h, a, .pipeData(pipe: pipe, data: [UInt8](repeating: 2, count: 1_000)))
        #expect(h.take(b).count == 1)
        push(h, a, .pipeData(pipe: pipe, data: [3]))
        #expect(h.take(a) == [.pipeClosed(pipe: pipe, code: .rateLimited)])
        #expect(h.take(b) == [.pipeClosed(pipe: pipe, code: .rateLimited)])
        #expect(h.relay.pipeCount == 0)
        // Each direction has its own bucket; acknowledgements are not counted.
        let other = pipe(2)
        _ = h.request(a, .openPipe(pipe: other)); _ = h.request(b, .openPipe(pipe: other))
        _ = h.take(a); _ = h.take(b)
        push(h, a, .pipeData(pipe: other, data: [UInt8](repeating: 1, count: 4_000)))
        push(h, b, .pipeData(pipe: other, data: [UInt8](repeating: 1, count: 4_000)))
        for _ in 0..<10 { push(h, b, .pipeAck(pipe: other, bytes: 1 << 20)) }
        #expect(h.take(a).count == 11)
        #expect(h.take(b).count == 1)
    }

    @Test func pipeDataIsNotCountedAgainstTheRequestRate() throws {
        let h = harness()
        let a = try h.login(alice), b = try h.login(bob)
        _ = h.request(a, .openPipe(pipe: pipe)); _ = h.request(b, .openPipe(pipe: pipe))
        _ = h.take(a); _ = h.take(b)
        let frames = RelayLimits.defaultRequestBurst * 2
        for i in 0..<frames { push(h, a, .pipeData(pipe: pipe, data: [UInt8(truncatingIfNeeded: i)])) }
        #expect(h.take(b).count == frames)
        #expect(h.take(a).isEmpty)
    }

    @Test func pipeCountLimitsHoldAtTheLimitAndOnePast() throws {
        let h = harness { $0.maximumPipes = 3; $0.maximumPipesPerConnection = 2 }
        let a = try h.login(alice), b = try h.login(bob), c = try h.login(carol)
        // Per connection: two, not three.
        #expect(h.request(a, .openPipe(pipe: pipe(1))) == [.ok])
        #expect(h.request(a, .openPipe(pipe: pipe(2))) == [.ok])
        #expect(errorCode(h.request(a, .openPipe(pipe: pipe(3)))) == .limitExceeded)
        // Joining as second end counts too.
        #expect(h.request(b, .openPipe(pipe: pipe(1))) == [.ok])
        #expect(h.request(b, .openPipe(pipe: pipe(2))) == [.ok])
        #expect(h.request(c, .openPipe(pipe: pipe(3))) == [.ok])
        #expect(errorCode(h.request(b, .openPipe(pipe: pipe(3)))) == .limitExceeded)
        // On the relay: three, not four.
        #expect(h.relay.pipeCount == 3)
        #expect(errorCode(h.request(c, .openPipe(pipe: pipe(4)))) == .limitExceeded)
        #expect(h.request(a, .closePipe(pipe: pipe(1))) == [.ok])
        #expect(h.request(c, .openPipe(pipe: pipe(4))) == [.ok])
    }

    @Test func byteBucketRefillsAndCaps() {
        var bucket = ByteBucket(capacity: 100, perSecond: 1000, now: 0)
        var took = bucket.take(100, now: 0); #expect(took)
        took = bucket.take(1, now: 0); #expect(!took)
        took = bucket.take(50, now: 50); #expect(took)
        took = bucket.take(1, now: 50); #expect(!took)
        took = bucket.take(100, now: 10_000); #expect(took)  // capped at capacity
        took = bucket.take(1, now: 10_000); #expect(!took)
        var huge = ByteBucket(capacity: .max, perSecond: .max, now: 0)
        took = huge.take(.max, now: 0); #expect(took)
        took = huge.take(1, now: UInt64.max); #expect(took)  // no overflow after a long idle time
    }
}
