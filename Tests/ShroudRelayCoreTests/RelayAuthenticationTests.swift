import Crypto
import Testing
import ShroudWire
@testable import ShroudRelayCore

@Suite struct RelayAuthenticationTests {
    let alice = TestIdentity(seed: 1)
    let bob = TestIdentity(seed: 2)

    @Test(arguments: relayStoreKinds)
    func challengeThenValidAnswerAuthenticates(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let id = h.connect()
        let challenge = h.take(id)
        guard case let .challenge(_, deadline, binding) = try #require(challenge.first) else { Issue.record("no challenge"); return }
        #expect(binding == RelayHarness.binding)
        #expect(deadline == h.now + RelayLimits.defaultAuthenticationTimeoutMilliseconds)
        #expect(h.relay.identity(of: id) == nil)
        #expect(h.request(id, try alice.answer(challenge[0])) == [.ok])
        #expect(h.relay.identity(of: id) == alice.key)
        #expect(!h.closed.contains(id))
    }

    @Test(arguments: relayStoreKinds)
    func everyBadAnswerClosesWithItsCode(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())

        // A signature by another key.
        var id = h.connect()
        var challenge = h.take(id)[0]
        guard case let .authenticate(_, signature) = try bob.answer(challenge) else { return }
        #expect(errorCode(h.request(id, .authenticate(identity: alice.key, signature: signature))) == .authenticationFailed)
        #expect(h.closed.contains(id))

        // A signature meant for another relay (different binding) is refused here.
        id = h.connect()
        challenge = h.take(id)[0]
        guard case let .challenge(nonce, deadline, _) = challenge else { return }
        let foreign = RelayMessage.challenge(nonce: nonce, deadline: deadline, relayBinding: "wss://other.relay/ws")
        #expect(errorCode(h.request(id, try alice.answer(foreign))) == .authenticationFailed)
        #expect(h.closed.contains(id))

        // A valid answer replayed on another connection (another nonce) is refused.
        let first = h.connect()
        let answer = try alice.answer(h.take(first)[0])
        #expect(h.request(first, answer) == [.ok])
        id = h.connect()
        _ = h.take(id)
        #expect(errorCode(h.request(id, answer)) == .authenticationFailed)
        #expect(h.closed.contains(id))
    }

    @Test(arguments: relayStoreKinds)
    func anythingButAnAnswerBeforeAuthenticationCloses(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        var id = h.connect()
        _ = h.take(id)
        #expect(errorCode(h.request(id, .countPrekeys)) == .notAuthenticated)
        #expect(h.closed.contains(id))

        id = h.connect()
        _ = h.take(id)
        h.sendRaw(id, [1, 0x7F, 0, 0])
        #expect(errorCode(h.take(id)) == .malformed)
        #expect(h.closed.contains(id))

        id = h.connect()
        _ = h.take(id)
        h.sendRaw(id, [9, 0x03, 0, 0, 0, 0])
        #expect(errorCode(h.take(id)) == .unsupportedVersion)
        #expect(h.closed.contains(id))

        // Frames after the close are ignored.
        h.sendRaw(id, SessionFrame(.countPrekeys).serialize())
        #expect(h.take(id).isEmpty)
    }

    @Test(arguments: relayStoreKinds)
    func deadlineIsEnforcedAtAndPastTheLimit(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let timeout = RelayLimits.defaultAuthenticationTimeoutMilliseconds
        // Answer exactly at the deadline: accepted.
        var id = h.connect()
        var challenge = h.take(id)[0]
        h.now += timeout
        #expect(h.request(id, try alice.answer(challenge)) == [.ok])

        // One millisecond past: refused.
        id = h.connect()
        challenge = h.take(id)[0]
        h.now += timeout + 1
        #expect(errorCode(h.request(id, try alice.answer(challenge))) == .authenticationExpired)
        #expect(h.closed.contains(id))

        // A silent connection is closed by tick once the deadline has passed, not before.
        h.advance(milliseconds: 0) // runs the first expiry sweep, so the next one is a minute away
        id = h.connect()
        _ = h.take(id)
        #expect(h.relay.nextDeadline == h.now + timeout)
        h.advance(milliseconds: timeout)
        #expect(!h.closed.contains(id))
        h.advance(milliseconds: 1)
        #expect(errorCode(h.take(id)) == .authenticationExpired)
        #expect(h.closed.contains(id))
    }

    @Test(arguments: relayStoreKinds)
    func relayOnlyMessagesFromAClientClose(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let id = try h.login(alice)
        #expect(errorCode(h.request(id, .ok)) == .unexpectedMessage)
        #expect(h.closed.contains(id))
        // Only that connection: another client is unaffected.
        let other = try h.login(bob)
        #expect(h.request(other, .countPrekeys) == [.prekeyCount(0)])
        let again = try h.login(alice)
        _ = h.take(again)
        #expect(errorCode(h.request(again, try alice.answer(.challenge(nonce: try ChallengeNonce(blob(0, size: 32)), deadline: 0, relayBinding: "x")))) == .unexpectedMessage)
    }

    @Test(arguments: relayStoreKinds)
    func garbageAfterAuthenticationClosesOnlyThatConnection(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let a = try h.login(alice)
        let b = try h.login(bob)
        h.sendRaw(a, [1, 0x20, 0, 0, 0, 1, 0xFF])
        #expect(errorCode(h.take(a)) == .malformed)
        #expect(h.closed.contains(a))
        #expect(!h.closed.contains(b))
        #expect(h.request(b, .countPrekeys) == [.prekeyCount(0)])
    }

    @Test(arguments: relayStoreKinds)
    func totalConnectionLimit(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 3, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 1000)
        limits.connectionBurstPerIP = 100
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let open = (0..<3).map { h.connect(address: "10.0.0.\($0)") }
        #expect(open.allSatisfy { !h.closed.contains($0) })
        #expect(h.relay.connectionCount == 3)
        let refused = h.connect(address: "10.0.0.9")
        #expect(errorCode(h.take(refused)) == .tooManyConnections)
        #expect(h.closed.contains(refused))
        h.relay.disconnected(open[0])
        let admitted = h.connect(address: "10.0.0.9")
        #expect(!h.closed.contains(admitted))
    }

    @Test(arguments: relayStoreKinds)
    func perAddressConnectionLimit(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 100, maximumConnectionsPerIP: 2, messageTTLMilliseconds: 1000)
        limits.connectionBurstPerIP = 100
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let first = h.connect(address: "192.0.2.1")
        _ = h.connect(address: "192.0.2.1")
        let third = h.connect(address: "192.0.2.1")
        #expect(errorCode(h.take(third)) == .tooManyConnections)
        #expect(h.admitted("192.0.2.2"))
        h.relay.disconnected(first)
        #expect(h.admitted("192.0.2.1"))
    }

    @Test(arguments: relayStoreKinds)
    func newConnectionRatePerAddress(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 100, maximumConnectionsPerIP: 100, messageTTLMilliseconds: 1000)
        limits.connectionBurstPerIP = 3
        limits.connectionsPerSecondPerIP = 1
        let h = RelayHarness(store: try kind.make(), limits: limits)
        for _ in 0..<3 { #expect(h.admitted("198.51.100.7")) }
        let fourth = h.connect(address: "198.51.100.7")
        #expect(errorCode(h.take(fourth)) == .rateLimited)
        h.now += 999
        #expect(!h.admitted("198.51.100.7"))
        h.now += 1
        #expect(h.admitted("198.51.100.7"))
    }

    @Test(arguments: relayStoreKinds)
    func requestRateLimitDropsTheRequestButKeepsTheConnection(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 100, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 1000)
        limits.requestBurst = 5
        limits.requestsPerSecond = 2
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let id = try h.login(alice)
        for _ in 0..<5 { #expect(h.request(id, .countPrekeys) == [.prekeyCount(0)]) }
        #expect(errorCode(h.request(id, .countPrekeys)) == .rateLimited)
        #expect(!h.closed.contains(id))
        h.now += 500
        #expect(h.request(id, .countPrekeys) == [.prekeyCount(0)])
        #expect(errorCode(h.request(id, .countPrekeys)) == .rateLimited)
    }

    @Test func tokenBucketRefillsAndCaps() {
        var bucket = TokenBucket(capacity: 2, perSecond: 10, now: 0)
        var results: [Bool] = []
        for time: UInt64 in [0, 0, 0, 99, 100] { results.append(bucket.take(now: time)) }
        #expect(results == [true, true, false, false, true])
        // A long idle period refills only to the capacity, without overflow.
        results = []
        for _ in 0..<3 { results.append(bucket.take(now: UInt64.max / 2)) }
        #expect(results == [true, true, false])
    }
}

@Suite struct RelayLimitsTests {
    @Test func configurationMapsToLimitsAndHugeTTLsAreCapped() throws {
        let config = try RelayConfiguration.resolve(flags: [.maxConnections: "5", .maxConnectionsPerIP: "2", .messageTTL: "24h"],
                                                    environment: [:], dotEnv: nil)
        let limits = RelayLimits(configuration: config)
        #expect(limits.maximumConnections == 5 && limits.maximumConnectionsPerIP == 2)
        #expect(limits.messageTTLMilliseconds == 86_400_000)
        let huge = try RelayConfiguration.resolve(flags: [.messageTTL: "\(Int.max)"], environment: [:], dotEnv: nil)
        #expect(RelayLimits(configuration: huge).messageTTLMilliseconds == RelayLimits.maximumMessageTTLMilliseconds)
        var direct = RelayLimits()
        direct.messageTTLMilliseconds = .max
        #expect(direct.messageTTLMilliseconds == RelayLimits.maximumMessageTTLMilliseconds)
    }
}
