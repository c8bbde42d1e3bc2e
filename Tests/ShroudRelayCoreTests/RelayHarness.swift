import Crypto
import ShroudTestSupport
import Testing
import ShroudWire
@testable import ShroudRelayCore

/// A store the relay tests run against; every relay test runs once per kind.
struct StoreKind: CustomStringConvertible, Sendable {
    let description: String
    let make: @Sendable () throws -> any RelayStore
}

/// A client identity with a real Ed25519 key.
struct TestIdentity {
    let signingKey: Curve25519.Signing.PrivateKey
    let key: IdentityKey

    init(seed: UInt8) {
        // Deterministic keys so failures reproduce.
        signingKey = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: seed, count: 32))
        key = try! IdentityKey(Array(signingKey.publicKey.rawRepresentation))
    }

    /// An agreement key (any 32 bytes: the relay checks only the binding signature) signed by
    /// this identity, as `publishPrekeys` needs.
    var agreement: IdentityAgreementKey {
        let key = try! PrekeyPublicKey([UInt8](repeating: 0xA0 ^ key.bytes[0], count: 32))
        return IdentityAgreementKey(key: key, signature: try! Ed25519Signature(Array(try! signingKey.signature(for: IdentityAgreementKey.bindingLabel + key.bytes))))
    }

    func answer(_ challenge: RelayMessage) throws -> RelayMessage {
        guard case let .challenge(nonce, deadline, binding) = challenge else { throw WireError.invalid(field: "challenge", reason: "\(challenge)") }
        let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: key)
        return .authenticate(identity: key, signature: try Ed25519Signature(Array(signingKey.signature(for: transcript))))
    }
}

/// Drives a `Relay` on a virtual clock and plays the network adapter: frames the relay sends are
/// parsed (they must parse) into per-connection inboxes and reported written, unless the
/// connection is stalled (to simulate a slow reader).
final class RelayHarness {
    static let start: UInt64 = 1_700_000_000_000
    static let binding = "wss://relay.test/ws"

    let relay: Relay
    var now: UInt64 = start
    var inbox: [ConnectionID: [SessionFrame]] = [:]
    var closed: Set<ConnectionID> = []
    var stalled: Set<ConnectionID> = []
    /// Datagrams the relay asked the UDP adapter to send.
    var datagramsSent: [(MediaAddress, [UInt8])] = []
    private var unwritten: [ConnectionID: [Int]] = [:]
    private var nextRequest: UInt32 = 1

    init(store: any RelayStore, limits: RelayLimits = RelayLimits(maximumConnections: 100, maximumConnectionsPerIP: 50,
                                                                  messageTTLMilliseconds: 3_600_000)) {
        relay = Relay(store: store, relayBinding: Self.binding, limits: limits, random: SplitMix64(seed: 42))
    }

    func apply(_ actions: [RelayAction]) {
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case let .send(id, bytes):
                #expect(!closed.contains(id), "send after close")
                do { inbox[id, default: []].append(try SessionFrame(parsing: bytes)) } catch { Issue.record("relay sent a bad frame: \(error)") }
                if stalled.contains(id) { unwritten[id, default: []].append(bytes.count) } else { pending += relay.written(id, bytes: bytes.count) }
            case let .close(id):
                closed.insert(id)
            case let .sendDatagram(address, bytes):
                datagramsSent.append((address, bytes))
            }
        }
    }

    /// Whether a new connection from `address` gets a challenge rather than a refusal.
    func admitted(_ address: String) -> Bool {
        let id = connect(address: address)
        return !closed.contains(id)
    }

    /// A stalled connection's writes complete: reports every unreported frame as written.
    func unstall(_ id: ConnectionID) {
        stalled.remove(id)
        for size in unwritten.removeValue(forKey: id) ?? [] { apply(relay.written(id, bytes: size)) }
    }

    /// Removes and returns everything the connection received so far.
    func take(_ id: ConnectionID) -> [RelayMessage] {
        defer { inbox[id] = [] }
        return (inbox[id] ?? []).map(\.message)
    }

    func connect(address: String = "10.0.0.1") -> ConnectionID {
        let (id, actions) = relay.connect(address: address, now: now)
        apply(actions)
        return id
    }

    func sendRaw(_ id: ConnectionID, _ bytes: [UInt8]) { apply(relay.receive(bytes, from: id, now: now)) }

    /// Sends a request and returns the messages that came back to this connection with its id.
    @discardableResult
    func request(_ id: ConnectionID, _ message: RelayMessage) -> [RelayMessage] {
        let requestID = nextRequest
        nextRequest += 1
        let before = inbox[id]?.count ?? 0
        sendRaw(id, SessionFrame(requestID: requestID, message).serialize())
        let fresh = (inbox[id] ?? []).dropFirst(before)
        let replies = fresh.filter { $0.requestID == requestID }.map(\.message)
        inbox[id] = (inbox[id] ?? []).prefix(before) + fresh.filter { $0.requestID != requestID }
        return replies
    }

    /// Connects and authenticates; returns the connection with an empty inbox except pushes that
    /// followed the `ok` (queued deliveries).
    func login(_ identity: TestIdentity, address: String = "10.0.0.1") throws -> ConnectionID {
        let id = connect(address: address)
        let challenge = try #require(take(id).first)
        let replies = request(id, try identity.answer(challenge))
        #expect(replies == [.ok])
        return id
    }

    func advance(milliseconds: UInt64) {
        now += milliseconds
        apply(relay.tick(now: now))
    }
}

func blob(_ byte: UInt8, size: Int = 256) -> [UInt8] { [UInt8](repeating: byte, count: size) }

func channelID(_ byte: UInt8) -> ChannelID { try! ChannelID([UInt8](repeating: byte, count: 16)) }

/// The direct deliveries in a list of messages.
func directDeliveries(_ messages: [RelayMessage]) -> [(id: MessageID, blob: [UInt8])] {
    messages.compactMap { if case let .directDelivery(id, _, blob) = $0 { (id, blob) } else { nil } }
}

func channelDeliveries(_ messages: [RelayMessage]) -> [(sequence: UInt64, blob: [UInt8])] {
    messages.compactMap { if case let .channelDelivery(_, sequence, _, blob) = $0 { (sequence, blob) } else { nil } }
}

func errorCode(_ messages: [RelayMessage]) -> SessionErrorCode? {
    for message in messages { if case let .error(code, _) = message { return code } }
    return nil
}
