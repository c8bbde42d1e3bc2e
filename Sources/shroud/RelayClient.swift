import Foundation
import NIOCore
import NIOPosix
import ShroudCrypto
import ShroudNet
import ShroudStore
import ShroudWire

/// A relay's address as the user writes it: `ws://HOST:PORT` or, with TLS, `wss://HOST:PORT`,
/// optionally ending in `/ws` (the only path the relay serves sessions on).
struct RelayAddress: Equatable {
    static let defaultPort = 8443
    let host: String
    let port: Int
    /// `wss://`: TLS, the relay's certificate verified against the system's roots and
    /// SHROUD_CA_FILE.
    let secure: Bool

    /// The canonical text, used as the key under which the relay's binding is pinned.
    var text: String { "\(secure ? "wss" : "ws")://\(host):\(port)" }

    init(parsing input: String) throws {
        var rest = Substring(input.trimmingCharacters(in: .whitespaces))
        if rest.hasPrefix("wss://") {
            secure = true
            rest = rest.dropFirst("wss://".count)
        } else if rest.hasPrefix("ws://") {
            secure = false
            rest = rest.dropFirst("ws://".count)
        } else {
            throw Failure("server '\(input)' must look like ws://HOST:PORT or wss://HOST:PORT")
        }
        if rest.hasSuffix(sessionWebSocketPath) { rest = rest.dropLast(sessionWebSocketPath.count) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        let hostPart: Substring
        var port = Self.defaultPort
        if let colon = rest.lastIndex(of: ":") {
            hostPart = rest[..<colon]
            guard let value = Int(rest[rest.index(after: colon)...]), (1...65535).contains(value) else {
                throw Failure("server '\(input)' has no valid port (1–65535)")
            }
            port = value
        } else {
            hostPart = rest
        }
        guard !hostPart.isEmpty, !hostPart.contains("/"), !hostPart.contains("@") else {
            throw Failure("server '\(input)' has no valid host")
        }
        host = String(hostPart)
        self.port = port
    }
}

/// Profile settings the client keeps about relays (all public, in the `setting` table).
enum RelaySettings {
    /// The relay used last; the default when neither --server nor SHROUD_SERVER is given.
    static let serverKey = "server"
    /// The relay binding pinned on first use for a relay URL (docs/PROTOCOL.md §1, Authentication).
    static func bindingKey(_ address: RelayAddress) -> String { "relay-binding:" + address.text }
    /// The id the next one-time prekey gets (ids are never reused).
    static let nextOneTimePrekeyIDKey = "next-one-time-prekey-id"
    /// Direct message ids already shown (and stored): redeliveries of these are only acknowledged.
    static func processedMessageKey(_ id: MessageID) -> String { "dm-processed:" + Hex.encode(id.bytes) }
    /// The signed prekey id last published to a relay, together with the agreement key (the "v2"
    /// marks publishes that carried it, so profiles from before it publish once more).
    static func publishedSignedPrekeyKey(_ address: RelayAddress) -> String { "published-signed-prekey-v2:" + address.text }
}

extension GlobalOptions {
    /// The relay: --server, else SHROUD_SERVER, else the profile's `server` setting.
    func relayAddress(_ profile: ProfileStore) throws -> RelayAddress {
        if let server, !server.isEmpty { return try RelayAddress(parsing: server) }
        if let server = ProcessInfo.processInfo.environment["SHROUD_SERVER"], !server.isEmpty {
            return try RelayAddress(parsing: server)
        }
        if let server = try profile.setting(RelaySettings.serverKey), !server.isEmpty { return try RelayAddress(parsing: server) }
        throw Failure("no relay: give --server ws://HOST:PORT (or wss://) or set SHROUD_SERVER")
    }
}

/// The error the relay answered a request with.
struct RelayRefusal: Error, CustomStringConvertible {
    let code: SessionErrorCode
    let text: String
    var description: String { "the relay refused: \(text) (code \(code.rawValue))" }
}

/// An authenticated session with the relay, on blocking calls: the command line does one thing
/// and exits, so it never needs more than one request in flight. Frames the relay pushes on its
/// own (request id 0: deliveries, membership notices) that arrive while a reply is awaited are
/// kept, in order, for `nextPush`.
final class RelaySession {
    /// How long a connection, the challenge and each reply may take.
    static let replyTimeout: Double = 15

    let address: RelayAddress
    let binding: String
    private let group: MultiThreadedEventLoopGroup
    private let connection: SessionClientConnection
    private var nextRequestID: UInt32 = 1
    private var pushed: [SessionFrame] = []
    /// Media datagrams of a voice call over the WebSocket fallback go here as soon as they are read
    /// (also while a reply is awaited), never into the push queue.
    var onMediaDatagram: (([UInt8]) -> Void)?

    /// Connects, checks the relay binding against the one pinned for this URL (pinning it on first
    /// use), and answers the challenge with the identity key.
    init(address: RelayAddress, identity: IdentityKeyPair, profile: ProfileStore) throws {
        self.address = address
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let tls = address.secure
                ? try RelayTLS.clientContext(caFile: ProcessInfo.processInfo.environment[RelayTLS.caFileVariable].flatMap { $0.isEmpty ? nil : $0 })
                : nil
            connection = try SessionClientConnection.connectBlocking(host: address.host, port: address.port, group: group, tls: tls)
        } catch let error as TLSSetupError {
            try? group.syncShutdownGracefully()
            throw Failure("\(error)")
        } catch {
            try? group.syncShutdownGracefully()
            let reason = RelayTLS.failureReason(error, host: address.host) ?? oneLine(error)
            throw Failure("cannot reach the relay at \(address.text): \(reason)")
        }
        do {
            let first = try connection.nextBlocking(timeout: Self.replyTimeout)
            guard case let .challenge(nonce, deadline, relayBinding) = first.message else {
                throw Failure("the relay at \(address.text) did not start with a challenge")
            }
            if let pinned = try profile.setting(RelaySettings.bindingKey(address)) {
                guard pinned == relayBinding else {
                    throw Failure("the relay at \(address.text) presents binding '\(relayBinding)', not the pinned '\(pinned)': refusing to authenticate")
                }
            }
            binding = relayBinding
            let key = try IdentityKey(identity.publicIdentity.signingKey)
            let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: relayBinding, identity: key)
            let signature = try Ed25519Signature(try identity.sign(transcript))
            _ = try requestLocked(.authenticate(identity: key, signature: signature))
            if try profile.setting(RelaySettings.bindingKey(address)) == nil {
                try profile.setSetting(RelaySettings.bindingKey(address), relayBinding)
            }
            try profile.setSetting(RelaySettings.serverKey, address.text)
        } catch {
            try? connection.channel.close().wait()
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// Sends `message` and returns the relay's reply to it; an `error` reply throws `RelayRefusal`.
    func request(_ message: RelayMessage) throws -> RelayMessage {
        try requestLocked(message)
    }

    private func requestLocked(_ message: RelayMessage) throws -> RelayMessage {
        let id = nextRequestID
        nextRequestID &+= 1
        if nextRequestID == 0 { nextRequestID = 1 }
        do {
            try connection.sendBlocking(SessionFrame(requestID: id, message))
        } catch {
            throw Failure("lost the connection to the relay at \(address.text): \(oneLine(error))")
        }
        let deadline = Date().addingTimeInterval(Self.replyTimeout)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else { throw Failure("the relay at \(address.text) did not answer within \(Int(Self.replyTimeout)) s") }
            let frame = try receive(timeout: remaining, waitingFor: "a reply")
            if frame.requestID == id {
                if case let .error(code, text) = frame.message { throw RelayRefusal(code: code, text: text) }
                return frame.message
            }
            if case let .mediaDatagram(datagram) = frame.message, let onMediaDatagram {
                onMediaDatagram(datagram)
                continue
            }
            if case let .error(code, text) = frame.message {
                // Unsolicited errors (request id 0) precede the relay closing the connection.
                throw RelayRefusal(code: code, text: text)
            }
            pushed.append(frame)
        }
    }

    /// Sends a message that has no reply (request id 0): relay pipe data and acknowledgements.
    /// Does not wait for the write: the pipe's window bounds what is in flight, and a failed
    /// write closes the connection, which the next read reports.
    func post(_ message: RelayMessage) throws {
        guard connection.channel.isActive else { throw Failure("lost the connection to the relay at \(address.text)") }
        connection.sendWithoutWaiting(SessionFrame(requestID: 0, message))
    }

    /// `post(.pipeData(pipe:data:))` straight from the caller's buffer: framed and masked in one
    /// copy into the outgoing buffer, without building the data array and the serialized frame.
    func postPipeData(pipe: PipeID, _ data: UnsafeRawBufferPointer) throws {
        guard connection.channel.isActive else { throw Failure("lost the connection to the relay at \(address.text)") }
        let prefix = SessionFrame.pipeDataPrefix(pipe: pipe, dataLength: data.count)
        prefix.withUnsafeBytes { connection.sendMaskedWithoutWaiting([$0, data]) }
    }

    /// The next frame the relay pushes on its own, or nil when none comes within `timeout` seconds.
    func nextPush(timeout: Double) throws -> SessionFrame? {
        if !pushed.isEmpty { return pushed.removeFirst() }
        let deadline = Date().addingTimeInterval(timeout)
        do {
            while true {
                let frame = try connection.nextBlocking(timeout: max(deadline.timeIntervalSinceNow, 0.001))
                guard case let .mediaDatagram(datagram) = frame.message, let onMediaDatagram else { return frame }
                onMediaDatagram(datagram)
                if deadline.timeIntervalSinceNow <= 0 { return nil }
            }
        } catch ChannelError.connectTimeout {
            return nil
        } catch let error as ChannelError {
            throw Failure("lost the connection to the relay at \(address.text): \(error)")
        }
    }

    private func receive(timeout: Double, waitingFor what: String) throws -> SessionFrame {
        do {
            return try connection.nextBlocking(timeout: timeout)
        } catch ChannelError.connectTimeout {
            throw Failure("the relay at \(address.text) did not send \(what) within \(Int(Self.replyTimeout)) s")
        } catch let error as ChannelError {
            throw Failure("lost the connection to the relay at \(address.text): \(error)")
        }
    }

    /// The connection itself, for the WebSocket media fallback's sending side.
    var mediaConnection: SessionClientConnection { connection }

    func close() {
        try? connection.channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// Keeps the relay stocked with this profile's prekeys (docs/PROTOCOL.md §1, publishPrekeys):
/// the current signed prekey (rotated by `SignedPreKeyRotation`) whenever the relay does not
/// have it yet, and a batch of one-time prekeys when the relay holds fewer than `lowWatermark`.
enum PrekeyMaintenance {
    /// Below this many one-time prekeys on the relay, a batch is published.
    static let lowWatermark: UInt32 = 20
    /// One-time prekeys per batch: the most one publish message may carry.
    static let batchSize = SessionLimits.maximumOneTimePrekeysPerUpload

    struct Outcome {
        var oneTimePublished: Int
        var signedPublished: Bool
        var relayCount: UInt32
    }

    /// Private halves are stored in the profile *before* the public halves are published, so a
    /// crash in between leaves unused local keys, never published keys nobody can answer.
    static func topUp(session: RelaySession, identity: IdentityKeyPair, profile: ProfileStore, prekeys: SQLitePreKeyStore,
                      now: UInt64, random: inout some RandomSource) throws -> Outcome {
        guard case let .prekeyCount(count) = try session.request(.countPrekeys) else {
            throw Failure("the relay answered countPrekeys with something else")
        }
        let signed = try SignedPreKeyRotation.rotateIfDue(store: prekeys, identity: identity, now: now, random: &random)
        let publishedKey = RelaySettings.publishedSignedPrekeyKey(session.address)
        let signedIsPublished = try profile.setting(publishedKey) == String(signed.id)
        var batch: [OneTimePreKey] = []
        if count < lowWatermark {
            let first = UInt32(try profile.setting(RelaySettings.nextOneTimePrekeyIDKey) ?? "1") ?? 1
            batch = OneTimePreKey.generateBatch(firstId: first, count: batchSize, random: &random)
            for key in batch { try prekeys.storeOneTimePreKey(key) }
            try profile.setSetting(RelaySettings.nextOneTimePrekeyIDKey, String(first &+ UInt32(batchSize)))
        }
        guard !batch.isEmpty || !signedIsPublished else {
            return Outcome(oneTimePublished: 0, signedPublished: false, relayCount: count)
        }
        let wireSigned = SignedPrekey(id: signed.id, key: try PrekeyPublicKey(signed.publicKey),
                                      signature: try Ed25519Signature(signed.signature))
        let wireOneTime = try batch.map { OneTimePrekey(id: $0.id, key: try PrekeyPublicKey($0.publicKey)) }
        let agreement = IdentityAgreementKey(key: try PrekeyPublicKey(identity.publicIdentity.agreementKey),
                                             signature: try Ed25519Signature(identity.publicIdentity.agreementSignature))
        guard case .ok = try session.request(.publishPrekeys(agreement: agreement, signed: wireSigned, oneTime: wireOneTime)) else {
            throw Failure("the relay answered publishPrekeys with something else")
        }
        try profile.setSetting(publishedKey, String(signed.id))
        return Outcome(oneTimePublished: batch.count, signedPublished: !signedIsPublished, relayCount: count + UInt32(batch.count))
    }
}

/// The unlocked profile a networked command needs: identity key pair, secrets, stores.
struct UnlockedProfile {
    let store: ProfileStore
    let secrets: ProfileSecrets
    let identity: IdentityKeyPair

    init(home: String, random: inout some RandomSource) throws {
        store = try ProfileStore(home: home, create: false)
        let stored = try loadPublicIdentity(store)
        secrets = try ProfileVault.unlock(store, passphrase: try Passphrase.read(confirm: false), random: &random)
        guard let entropy = try secrets.secret(named: ProfileVault.recoveryEntropyName) else {
            secrets.lock()
            throw ProfileError.corrupt("the recovery secret is missing")
        }
        identity = try RecoveryPhrase(entropy: entropy).identity()
        guard identity.publicIdentity == stored else {
            secrets.lock()
            throw ProfileError.corrupt("the sealed recovery secret does not derive the stored identity")
        }
    }

    func lock() {
        identity.wipe()
        secrets.lock()
    }
}

func nowSeconds() -> UInt64 { UInt64(max(0, Date().timeIntervalSince1970)) }
