import ArgumentParser
import Foundation
import ShroudCrypto
import ShroudStore
import ShroudWire

struct MessageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "msg",
        abstract: "Sealed direct messages through the relay.",
        subcommands: [Send.self, Read.self])

    struct Send: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Encrypt TEXT to CONTACT and hand it to the relay; exits 0 once the relay has stored it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The contact's name.") var contact: String
        @Argument(help: "The message text; '-' reads it from standard input.") var text: String

        func run() throws {
            let body = text == "-" ? readStandardInput() : text
            guard body.utf8.count <= MessagingClient.maximumTextBytes else {
                throw Failure("the message is \(body.utf8.count) bytes; the most is \(MessagingClient.maximumTextBytes)")
            }
            var random = SystemRandom()
            let profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
            defer { profile.lock() }
            // Refused before any network traffic: unknown, changed or blocked contacts get nothing.
            let recipient = try ContactBook(profile: profile.store).requireSendable(contact)
            let client = try MessagingClient(profile: profile, address: try global.relayAddress(profile.store), random: &random)
            defer { client.close() }
            try client.send(body, to: recipient.id.signingKey, random: &random)
            global.output.emit("Sent to \(contact).", ["to": contact, "to_id": recipient.id.text, "sent": true])
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Receive, decrypt and print the queued messages, each once; then acknowledge them to the relay.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Keep waiting this many seconds for more messages.") var wait: Double = 0

        func validate() throws {
            guard wait >= 0, wait <= MessagingClient.maximumWaitSeconds else {
                throw ValidationError("--wait must be between 0 and \(Int(MessagingClient.maximumWaitSeconds)) seconds")
            }
        }

        func run() throws {
            var random = SystemRandom()
            let profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
            defer { profile.lock() }
            let client = try MessagingClient(profile: profile, address: try global.relayAddress(profile.store), random: &random)
            defer { client.close() }
            let output = global.output
            try client.drainQueued(random: &random) { output.message($0) }
            if wait > 0 {
                try client.receive(until: Date().addingTimeInterval(wait), random: &random) { output.message($0) }
            }
        }
    }
}

/// `shroud listen`: stays connected and prints direct messages as they arrive, until SIGINT or
/// SIGTERM. Every message is marked processed and acknowledged right after it is printed, so
/// being stopped at any moment loses nothing and shows nothing twice.
struct ListenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "listen", abstract: "Stay online and print messages as they arrive (stop with Ctrl-C).")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        // Each message is flushed to stdout before it is marked processed (Output.message), so
        // ending the process at once on a signal loses nothing.
        signal(SIGINT) { _ in _exit(0) }
        signal(SIGTERM) { _ in _exit(0) }
        var random = SystemRandom()
        let profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
        defer { profile.lock() }
        let client = try MessagingClient(profile: profile, address: try global.relayAddress(profile.store), random: &random)
        defer { client.close() }
        let output = global.output
        output.note("Listening on \(client.session.address.text); stop with Ctrl-C.")
        while true {
            try client.receive(until: Date().addingTimeInterval(3600), random: &random) { output.message($0) }
        }
    }
}

/// A decrypted direct message, as printed.
struct ReceivedMessage {
    let id: MessageID
    let from: String
    let fromID: String
    let sentAt: UInt64
    let receivedAt: UInt64
    let text: String
}

extension Output {
    func message(_ m: ReceivedMessage) {
        let time = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(m.receivedAt) / 1000))
        emit("[\(time)] \(m.from): \(m.text)",
             ["id": Hex.encode(m.id.bytes), "from": m.from, "from_id": m.fromID, "text": m.text,
              "sent_at": Int(clamping: m.sentAt), "received_at": Int(clamping: m.receivedAt)])
        fflush(nil)
    }
}

/// Direct messaging over one relay session: sending (X3DH on first contact, then the ratchet,
/// sealed sender, bucket padding) and receiving exactly once.
final class MessagingClient {
    /// The longest message text, in UTF-8 bytes: the ratchet's largest plaintext less the
    /// 8-byte sent-at field of `DirectText`.
    static let maximumTextBytes = RatchetMessage.maxPlaintextLength - 8
    /// The longest `msg read --wait`.
    static let maximumWaitSeconds: Double = 86_400

    let session: RelaySession
    private let profile: UnlockedProfile
    private let identities: SQLiteIdentityStore
    private let sessions: SQLiteSessionStore
    private let prekeys: SQLitePreKeyStore
    private let book: ContactBook

    init(profile: UnlockedProfile, address: RelayAddress, random: inout some RandomSource) throws {
        self.profile = profile
        session = try RelaySession(address: address, identity: profile.identity, profile: profile.store)
        identities = SQLiteIdentityStore(profile: profile.store, localIdentity: profile.identity)
        sessions = SQLiteSessionStore(profile: profile.store, secrets: profile.secrets)
        prekeys = SQLitePreKeyStore(profile: profile.store, secrets: profile.secrets)
        book = ContactBook(profile: profile.store)
        do {
            _ = try PrekeyMaintenance.topUp(session: session, identity: profile.identity, profile: profile.store,
                                            prekeys: prekeys, now: nowSeconds(), random: &random)
        } catch {
            session.close()
            throw error
        }
    }

    func close() { session.close() }

    func send(_ text: String, to remoteSigningKey: [UInt8], random: inout some RandomSource) throws {
        try send(.text(DirectText(sentAt: UInt64(max(0, Date().timeIntervalSince1970 * 1000)), text: text)), to: remoteSigningKey,
                 random: &random)
    }

    /// Sends any direct payload kind (text, file offer, file answer) the same way.
    func send(_ payload: DirectPayload, to remoteSigningKey: [UInt8], random: inout some RandomSource) throws {
        let remote: PublicIdentity
        if let current = try sessions.sessionRecord(for: remoteSigningKey)?.current {
            remote = current.remoteIdentity
        } else {
            remote = try fetchIdentityCard(remoteSigningKey)
            try startSession(with: remote, random: &random)
        }
        let plaintext = payload.serialize()
        let message = try SessionCipher.encrypt(plaintext, to: remoteSigningKey, identities: identities, sessions: sessions)
        let envelope = try SealedEnvelope.seal(sender: profile.identity.publicIdentity.signingKey, message: message, recipient: remote,
                                              random: &random)
        let blob = try BucketPadding.pad(envelope)
        guard case .ok = try session.request(.sendDirect(recipient: try IdentityKey(remoteSigningKey), blob: blob)) else {
            throw Failure("the relay answered sendDirect with something else")
        }
    }

    private func fetchIdentityCard(_ signingKey: [UInt8]) throws -> PublicIdentity {
        let channel = try IdentityCard.channel(for: signingKey)
        let joined: RelayMessage
        do {
            joined = try session.request(.joinChannel(channel: channel))
        } catch let refusal as RelayRefusal where refusal.code == .notFound {
            throw Failure("the contact has not published its identity on this relay yet (they must run 'shroud connect' once)")
        } catch let refusal as RelayRefusal where refusal.code == .alreadyExists {
            // Still a member from an interrupted earlier lookup: leave and look again.
            _ = try session.request(.leaveChannel(channel: channel))
            joined = try session.request(.joinChannel(channel: channel))
        }
        guard case let .channelJoined(_, _, _, _, metadata) = joined else {
            throw Failure("the relay answered joinChannel with something else")
        }
        // Stay out of the card's member list: it only exists to be read.
        _ = try? session.request(.leaveChannel(channel: channel))
        return try IdentityCard.parse(metadata, expecting: signingKey)
    }

    private func startSession(with remote: PublicIdentity, random: inout some RandomSource) throws {
        let reply: RelayMessage
        do {
            reply = try session.request(.fetchBundle(identity: try IdentityKey(remote.signingKey)))
        } catch let refusal as RelayRefusal where refusal.code == .notFound {
            throw Failure("the contact has no prekeys on this relay yet (they must run 'shroud connect' once)")
        }
        guard case let .bundle(wire) = reply, wire.identity.bytes == remote.signingKey else {
            throw Failure("the relay answered fetchBundle with something else")
        }
        let bundle: PreKeyBundle
        do {
            // Checks the signed prekey's signature against the contact's pinned Ed25519 key.
            bundle = try PreKeyBundle(identity: remote, signedPreKeyId: wire.signedPrekey.id, signedPreKey: wire.signedPrekey.key.bytes,
                                      signedPreKeySignature: wire.signedPrekey.signature.bytes,
                                      oneTimePreKeyId: wire.oneTimePrekey?.id, oneTimePreKey: wire.oneTimePrekey?.key.bytes)
        } catch {
            throw Failure("the contact's prekey bundle is not signed by its identity: \(oneLine(error))")
        }
        try SessionCipher.startSession(with: bundle, identities: identities, sessions: sessions, random: &random)
    }

    // MARK: Receiving

    /// Processes everything the relay has queued: each round asks for the prekey count, whose reply
    /// comes after the deliveries already sent, and stops when a round brings none.
    func drainQueued(random: inout some RandomSource, show: (ReceivedMessage) -> Void) throws {
        try drainQueued(random: &random) { try textOnly($0, show) }
    }

    /// Processes pushed frames until `deadline`.
    func receive(until deadline: Date, random: inout some RandomSource, show: (ReceivedMessage) -> Void) throws {
        try receive(until: deadline, random: &random) { try textOnly($0, show) }
    }

    /// What a command does with one decrypted delivery.
    enum Disposition {
        /// Done with it: mark it processed and acknowledge it.
        case processed
        /// Another command wants it: keep it in the inbox, unacknowledged, so the relay delivers it
        /// again on a later connection (a text message seen by `file send`, a file offer seen by `msg read`).
        case leave
    }

    /// One decrypted delivery of any payload kind.
    struct Delivery {
        let id: MessageID
        let sender: IdentityID
        /// The pinned contact, or nil for an unknown sender.
        let contact: Contact?
        let receivedAt: UInt64
        let payload: DirectPayload
        var fromName: String { contact?.name ?? sender.text }
    }

    /// `msg read` and `listen`: texts are shown; a recent file offer is left for `file receive`
    /// (with a note); stale offers and answers (only a running `file send` wants those) are dropped.
    private func textOnly(_ delivery: Delivery, _ show: (ReceivedMessage) -> Void) throws -> Disposition {
            switch delivery.payload {
            case let .text(direct):
                show(ReceivedMessage(id: delivery.id, from: delivery.fromName, fromID: delivery.sender.text, sentAt: direct.sentAt,
                                     receivedAt: delivery.receivedAt, text: direct.text))
                return .processed
            case let .fileOffer(offer) where FileOfferPolicy.isFresh(offer, receivedAt: delivery.receivedAt):
                FileHandle.standardError.write(Data("shroud: \(delivery.fromName) offers a file (\(offer.size) bytes): run 'shroud file receive'\n".utf8))
                return .leave
            case .fileOffer, .fileAnswer:
                return .processed
            }
    }

    /// Marks a delivery left earlier (`.leave`) as processed and acknowledges it.
    func markProcessed(_ delivery: Delivery) throws {
        try profile.store.setSetting(RelaySettings.processedMessageKey(delivery.id), String(delivery.receivedAt))
        _ = try session.request(.acknowledgeDirect([delivery.id]))
    }

    func drainQueued(random: inout some RandomSource, dispatch: (Delivery) throws -> Disposition) throws {
        while true {
            _ = try session.request(.countPrekeys)
            var any = false
            while let frame = try session.nextPush(timeout: 0) {
                any = true
                try handle(frame, random: &random, dispatch: dispatch)
            }
            if !any { return }
        }
    }

    /// Processes pushed frames until `deadline` or until `dispatch` sets `stop`.
    func receive(until deadline: Date, random: inout some RandomSource, stop: () -> Bool = { false },
                 dispatch: (Delivery) throws -> Disposition) throws {
        while deadline.timeIntervalSinceNow > 0, !stop() {
            guard let frame = try session.nextPush(timeout: deadline.timeIntervalSinceNow) else { return }
            try handle(frame, random: &random, dispatch: dispatch)
        }
    }

    /// One delivery: skip if already shown; else take it from the inbox (decrypted by an earlier
    /// run that stopped before showing it) or open and decrypt it and put it in the inbox; show it;
    /// mark it shown; and only then acknowledge it. A message that cannot be opened is reported on
    /// stderr and acknowledged, since it never will open.
    private func handle(_ frame: SessionFrame, random: inout some RandomSource, dispatch: (Delivery) throws -> Disposition) throws {
        guard case let .directDelivery(id, receivedAt, blob) = frame.message else { return }
        let processedKey = RelaySettings.processedMessageKey(id)
        if try profile.store.setting(processedKey) == nil {
            let delivery: Delivery
            do {
                let (senderKey, payload) = try inboxEntry(id) ?? decryptIntoInbox(id, blob: blob, random: &random)
                let senderID = try IdentityID(signingKey: senderKey)
                delivery = Delivery(id: id, sender: senderID, contact: try book.contact(for: senderID), receivedAt: receivedAt, payload: payload)
            } catch {
                FileHandle.standardError.write(Data("shroud: dropped undecryptable message \(Hex.encode(id.bytes)): \(oneLine(error))\n".utf8))
                try profile.store.setSetting(processedKey, String(receivedAt))
                _ = try session.request(.acknowledgeDirect([id]))
                return
            }
            guard case .processed = try dispatch(delivery) else { return }
            try profile.store.setSetting(processedKey, String(receivedAt))
        }
        _ = try session.request(.acknowledgeDirect([id]))
    }

    /// The inbox keeps every decrypted message, sealed by the profile's row cipher, under
    /// `dm-inbox:<id hex>` in the `sealed_secret` table: sender Ed25519 key (32) ‖ DirectText.
    private static func inboxName(_ id: MessageID) -> String { "dm-inbox:" + Hex.encode(id.bytes) }
    private static let inboxTable = "sealed_secret"

    private func inboxEntry(_ id: MessageID) throws -> (sender: [UInt8], payload: DirectPayload)? {
        let name = Self.inboxName(id)
        guard let sealed = try profile.store.sealedSecret(named: name) else { return nil }
        let bytes = try RowCipher(secrets: profile.secrets).open(sealed, table: Self.inboxTable, row: [Array(name.utf8)], rowName: name)
        guard bytes.count >= 32 else { throw ProfileError.corrupt("inbox entry \(name) is too short") }
        return (Array(bytes[0..<32]), try DirectPayload(parsing: Array(bytes[32...])))
    }

    private func decryptIntoInbox(_ id: MessageID, blob: [UInt8], random: inout some RandomSource) throws -> (sender: [UInt8], payload: DirectPayload) {
        let envelope = try BucketPadding.unpad(blob)
        let (senderKey, message) = try SealedEnvelope.open(envelope, recipient: profile.identity)
        let (sender, plaintext) = try SessionCipher.decrypt(message, from: senderKey, identities: identities, preKeys: prekeys,
                                                            signedPreKeys: prekeys, sessions: sessions, now: nowSeconds(),
                                                            random: &random)
        let direct = try DirectPayload(parsing: plaintext)
        let name = Self.inboxName(id)
        try profile.store.storeSealedSecret(try RowCipher(secrets: profile.secrets).seal(sender.signingKey + plaintext, table: Self.inboxTable,
                                                                                         row: [Array(name.utf8)]), named: name)
        return (sender.signingKey, direct)
    }
}
