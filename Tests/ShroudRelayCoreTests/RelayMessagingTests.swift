import Testing
import ShroudWire
@testable import ShroudRelayCore

@Suite struct RelayPrekeyTests {
    let alice = TestIdentity(seed: 1)
    let bob = TestIdentity(seed: 2)

    private func signed(_ id: UInt32) -> SignedPrekey {
        SignedPrekey(id: id, key: try! PrekeyPublicKey(blob(UInt8(id), size: 32)), signature: try! Ed25519Signature(blob(9, size: 64)))
    }
    private func oneTime(_ ids: Range<UInt32>) -> [OneTimePrekey] {
        ids.map { OneTimePrekey(id: $0, key: try! PrekeyPublicKey(blob(UInt8(truncatingIfNeeded: $0), size: 32))) }
    }

    @Test(arguments: relayStoreKinds)
    func eachFetchConsumesExactlyOneOneTimePrekey(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let a = try h.login(alice)
        let b = try h.login(bob)
        #expect(errorCode(h.request(b, .fetchBundle(identity: alice.key))) == .notFound)
        #expect(h.request(a, .publishPrekeys(agreement: alice.agreement, signed: signed(1), oneTime: oneTime(10..<13))) == [.ok])
        #expect(h.request(a, .countPrekeys) == [.prekeyCount(3)])
        var seen: [UInt32] = []
        for _ in 0..<3 {
            guard case let .bundle(bundle) = try #require(h.request(b, .fetchBundle(identity: alice.key)).first) else {
                Issue.record("no bundle"); return
            }
            #expect(bundle.identity == alice.key && bundle.agreement == alice.agreement && bundle.signedPrekey == signed(1))
            seen.append(try #require(bundle.oneTimePrekey).id)
        }
        #expect(seen.sorted() == [10, 11, 12])
        #expect(h.request(a, .countPrekeys) == [.prekeyCount(0)])
        // Exhausted: the bundle still comes, without a one-time prekey.
        #expect(h.request(b, .fetchBundle(identity: alice.key)) == [.bundle(PrekeyBundle(identity: alice.key, agreement: alice.agreement, signedPrekey: signed(1), oneTimePrekey: nil))])
        // Rotating the signed prekey replaces it.
        #expect(h.request(a, .publishPrekeys(agreement: alice.agreement, signed: signed(2), oneTime: [])) == [.ok])
        #expect(h.request(b, .fetchBundle(identity: alice.key)) == [.bundle(PrekeyBundle(identity: alice.key, agreement: alice.agreement, signedPrekey: signed(2), oneTimePrekey: nil))])
    }

    /// An agreement key not signed by the publishing identity (here: signed by another identity,
    /// and one with a flipped bit) is refused and stores nothing; the connection stays usable.
    @Test(arguments: relayStoreKinds)
    func agreementKeyMustBeSignedByThePublisher(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let a = try h.login(alice)
        let b = try h.login(bob)
        #expect(errorCode(h.request(a, .publishPrekeys(agreement: bob.agreement, signed: signed(1), oneTime: oneTime(0..<2)))) == .invalidSignature)
        var flipped = alice.agreement
        flipped.key = try PrekeyPublicKey(flipped.key.bytes.enumerated().map { $0.offset == 0 ? $0.element ^ 1 : $0.element })
        #expect(errorCode(h.request(a, .publishPrekeys(agreement: flipped, signed: signed(1), oneTime: oneTime(0..<2)))) == .invalidSignature)
        #expect(h.request(a, .countPrekeys) == [.prekeyCount(0)])
        #expect(errorCode(h.request(b, .fetchBundle(identity: alice.key))) == .notFound)
        #expect(h.request(a, .publishPrekeys(agreement: alice.agreement, signed: signed(1), oneTime: oneTime(0..<2))) == [.ok])
    }

    @Test(arguments: relayStoreKinds)
    func oneTimePrekeyLimit(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 1000)
        limits.maximumOneTimePrekeys = 150
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let a = try h.login(alice)
        #expect(h.request(a, .publishPrekeys(agreement: alice.agreement, signed: signed(1), oneTime: oneTime(0..<100))) == [.ok])
        #expect(h.request(a, .publishPrekeys(agreement: alice.agreement, signed: signed(1), oneTime: oneTime(100..<150))) == [.ok])
        #expect(h.request(a, .countPrekeys) == [.prekeyCount(150)])
        #expect(errorCode(h.request(a, .publishPrekeys(agreement: alice.agreement, signed: signed(2), oneTime: oneTime(150..<151)))) == .limitExceeded)
        // Refused means nothing changed, not even the signed prekey.
        let b = try h.login(bob)
        guard case let .bundle(bundle) = try #require(h.request(b, .fetchBundle(identity: alice.key)).first) else { return }
        #expect(bundle.signedPrekey == signed(1))
    }
}

@Suite struct RelayDirectMessageTests {
    let alice = TestIdentity(seed: 1)
    let bob = TestIdentity(seed: 2)
    let carol = TestIdentity(seed: 3)

    @Test(arguments: relayStoreKinds)
    func queuedForAnOfflineRecipientAndDeletedOnlyAfterAcknowledgement(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let a = try h.login(alice)
        #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(1))) == [.ok])
        #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(2, size: 512))) == [.ok])
        // The sender hears nothing else; nothing in the delivery names the sender.
        #expect(h.take(a).isEmpty)

        var b = try h.login(bob)
        let first = directDeliveries(h.take(b))
        #expect(first.map(\.blob) == [blob(1), blob(2, size: 512)])
        // Reconnecting without acknowledging delivers the same messages again.
        h.relay.disconnected(b)
        b = try h.login(bob)
        let again = directDeliveries(h.take(b))
        #expect(again.map(\.id) == first.map(\.id))
        #expect(h.request(b, .acknowledgeDirect([first[0].id])) == [.ok])
        h.relay.disconnected(b)
        b = try h.login(bob)
        #expect(directDeliveries(h.take(b)).map(\.id) == [first[1].id])
        #expect(h.request(b, .acknowledgeDirect([first[1].id])) == [.ok])
        h.relay.disconnected(b)
        b = try h.login(bob)
        #expect(h.take(b).isEmpty)
    }

    @Test(arguments: relayStoreKinds)
    func deliveredLiveToEveryConnectionOfTheRecipient(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let a = try h.login(alice)
        let b1 = try h.login(bob)
        let b2 = try h.login(bob, address: "10.0.0.2")
        #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(7))) == [.ok])
        let d1 = directDeliveries(h.take(b1))
        #expect(d1.map(\.blob) == [blob(7)])
        #expect(directDeliveries(h.take(b2)).map(\.id) == d1.map(\.id))
        #expect(directDeliveries(h.take(a)).isEmpty)
    }

    @Test(arguments: relayStoreKinds)
    func aClientCannotAcknowledgeAnotherRecipientsMail(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make())
        let a = try h.login(alice)
        let b = try h.login(bob)
        let c = try h.login(carol)
        #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(1))) == [.ok])
        let id = try #require(directDeliveries(h.take(b)).first).id
        #expect(h.request(c, .acknowledgeDirect([id])) == [.ok])
        h.relay.disconnected(b)
        let b2 = try h.login(bob)
        #expect(directDeliveries(h.take(b2)).map(\.id) == [id])
    }

    @Test(arguments: relayStoreKinds)
    func messagesExpireAfterTheTTL(_ kind: StoreKind) throws {
        let h = RelayHarness(store: try kind.make(), limits: RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10,
                                                                         messageTTLMilliseconds: 120_000))
        let a = try h.login(alice)
        #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(1))) == [.ok])
        h.advance(milliseconds: 60_000)
        #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(2))) == [.ok])
        // The sweep runs every minute; at 120 s the first message (expiring at 120 s) is gone.
        h.advance(milliseconds: 60_000)
        let b = try h.login(bob)
        #expect(directDeliveries(h.take(b)).map(\.blob) == [blob(2)])
    }

    @Test(arguments: relayStoreKinds)
    func recipientQueueLimit(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 100_000)
        limits.maximumQueuedPerRecipient = 5
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let a = try h.login(alice)
        for i in 0..<5 { #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(UInt8(i)))) == [.ok]) }
        #expect(errorCode(h.request(a, .sendDirect(recipient: bob.key, blob: blob(9)))) == .limitExceeded)
        // Another recipient's queue is separate.
        #expect(h.request(a, .sendDirect(recipient: carol.key, blob: blob(9))) == [.ok])
    }

    @Test(arguments: relayStoreKinds)
    func deliveryWindowLimitsUnacknowledgedDeliveries(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 100_000)
        limits.deliveryWindow = 4
        limits.requestBurst = 1000
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let a = try h.login(alice)
        for i in 0..<10 { #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(UInt8(i)))) == [.ok]) }
        let b = try h.login(bob)
        var received: [[UInt8]] = []
        var batch = directDeliveries(h.take(b))
        #expect(batch.count == 4)
        while !batch.isEmpty {
            received += batch.map(\.blob)
            _ = h.request(b, .acknowledgeDirect(batch.map(\.id)))
            batch = directDeliveries(h.take(b))
            #expect(batch.count <= 4)
        }
        #expect(received == (0..<10).map { blob(UInt8($0)) })
    }

    @Test(arguments: relayStoreKinds)
    func statisticsCountWithoutNamingAnyone(_ kind: StoreKind) throws {
        var limits = RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 2, messageTTLMilliseconds: 100_000)
        limits.connectionBurstPerIP = 100
        let h = RelayHarness(store: try kind.make(), limits: limits)
        let a = try h.login(alice)
        let b = try h.login(bob)
        _ = h.connect() // refused: a third connection from the address
        #expect(h.request(a, .sendDirect(recipient: bob.key, blob: blob(1))) == [.ok])
        let stats = h.relay.statistics
        #expect(stats.connections == 2 && stats.authenticatedConnections == 2)
        #expect(stats.connectionsAccepted == 2 && stats.connectionsRefused == 1)
        #expect(stats.directMessagesAccepted == 1 && stats.deliveriesSent == 1)
        #expect(stats.framesReceived == 3)
        _ = b
    }
}
