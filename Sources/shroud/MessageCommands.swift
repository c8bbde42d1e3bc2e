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

/// `shroud listen`: stays connected and prints direct and channel messages as they arrive, until SIGINT or
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
        let channels = ChannelMessaging(client: client)
        let contacts = ContactBook(profile: profile.store)
        let showChannels = {
            try channels.decryptWaiting()
            for channel in try channels.book.all() {
                try channels.consume(channel, now: nowMilliseconds()) { output.channelMessage($0, contacts: contacts) }
            }
        }
        try client.drainQueued(random: &random) { output.message($0) }
        try showChannels()
        while true {
            try client.receive(until: Date().addingTimeInterval(3600), random: &random, show: { output.message($0) }, afterEach: showChannels)
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
    /// kind byte of `DirectPayload` and the 8-byte sent-at field of `DirectText`.
    static let maximumTextBytes = RatchetMessage.maxPlaintextLength - 9
    /// The longest `msg read --wait`.
    static let maximumWaitSeconds: Double = 86_400

    let session: RelaySession
    private let profile: UnlockedProfile
    private let identities: SQLiteIdentityStore
    private let sessions: SQLiteSessionStore
    private let prekeys: SQLitePreKeyStore
    private let book: ContactBook
    let channels: ChannelBook
    let senderKeys: SQLiteSenderKeyStore
    var identity: IdentityKeyPair { profile.identity }
    var profileStore: ProfileStore { profile.store }

    init(profile: UnlockedProfile, address: RelayAddress, random: inout some RandomSource) throws {
        self.profile = profile
        session = try RelaySession(address: address, identity: profile.identity, profile: profile.store)
        identities = SQLiteIdentityStore(profile: profile.store, localIdentity: profile.identity)
        sessions = SQLiteSessionStore(profile: profile.store, secrets: profile.secrets)
        prekeys = SQLitePreKeyStore(profile: profile.store, secrets: profile.secrets)
        book = ContactBook(profile: profile.store)
        channels = ChannelBook(profile: profile.store, secrets: profile.secrets)
        senderKeys = SQLiteSenderKeyStore(profile: profile.store, secrets: profile.secrets)
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
        let plaintext = DirectPayload.text(DirectText(sentAt: nowMilliseconds(), text: text)).serialize()
        try sendPayload(plaintext, to: remoteSigningKey, random: &random)
    }

    /// Sends any direct payload kind (file offers and answers too) the same way as text.
    func send(_ payload: DirectPayload, to remoteSigningKey: [UInt8], random: inout some RandomSource) throws {
        try sendPayload(payload.serialize(), to: remoteSigningKey, random: &random)
    }

    /// Encrypts a serialized `DirectPayload` to one identity through the pairwise session (started
    /// from the prekey bundle on first contact), seals the sender, pads and hands it to the relay.
    func sendPayload(_ plaintext: [UInt8], to remoteSigningKey: [UInt8], random: inout some RandomSource) throws {
        let remote: PublicIdentity
        if let current = try sessions.sessionRecord(for: remoteSigningKey)?.current {
            remote = current.remoteIdentity
        } else {
            remote = try startSession(with: remoteSigningKey, random: &random)
        }
        let message = try SessionCipher.encrypt(plaintext, to: remoteSigningKey, identities: identities, sessions: sessions)
        let envelope = try SealedEnvelope.seal(sender: profile.identity.publicIdentity.signingKey, message: message, recipient: remote,
                                              random: &random)
        let blob = try BucketPadding.pad(envelope)
        guard case .ok = try session.request(.sendDirect(recipient: try IdentityKey(remoteSigningKey), blob: blob)) else {
            throw Failure("the relay answered sendDirect with something else")
        }
    }

    /// Fetches the identity's prekey bundle, checks that its agreement key and signed prekey are
    /// signed by `signingKey` (the key the caller pinned), and starts a session from it.
    private func startSession(with signingKey: [UInt8], random: inout some RandomSource) throws -> PublicIdentity {
        let reply: RelayMessage
        do {
            reply = try session.request(.fetchBundle(identity: try IdentityKey(signingKey)))
        } catch let refusal as RelayRefusal where refusal.code == .notFound {
            throw Failure("the contact has no prekeys on this relay yet (they must run 'shroud connect' once)")
        }
        guard case let .bundle(wire) = reply, wire.identity.bytes == signingKey else {
            throw Failure("the relay answered fetchBundle with something else")
        }
        let remote: PublicIdentity
        let bundle: PreKeyBundle
        do {
            // Checks the agreement key's binding signature against the pinned Ed25519 key.
            remote = try PublicIdentity(signingKey: signingKey, agreementKey: wire.agreement.key.bytes,
                                        agreementSignature: wire.agreement.signature.bytes)
            // Checks the signed prekey's signature against the same key.
            bundle = try PreKeyBundle(identity: remote, signedPreKeyId: wire.signedPrekey.id, signedPreKey: wire.signedPrekey.key.bytes,
                                      signedPreKeySignature: wire.signedPrekey.signature.bytes,
                                      oneTimePreKeyId: wire.oneTimePrekey?.id, oneTimePreKey: wire.oneTimePrekey?.key.bytes)
        } catch {
            throw Failure("the contact's prekey bundle is not signed by its identity: \(oneLine(error))")
        }
        try SessionCipher.startSession(with: bundle, identities: identities, sessions: sessions, random: &random)
        return remote
    }

    // MARK: Receiving

    /// Processes everything the relay has queued: each round asks for the prekey count, whose reply
    /// comes after the deliveries already sent, and stops when a round brings none.
    ///
    /// With `keepingText`, direct text messages are decrypted into the inbox but neither shown nor
    /// acknowledged, so `msg read` still shows them; sender keys are processed either way.
    func drainQueued(random: inout some RandomSource, show: (ReceivedMessage) -> Void, keepingText: Bool = false) throws {
        while true {
            _ = try session.request(.countPrekeys)
            var any = false
            while let frame = try session.nextPush(timeout: 0) {
                any = true
                try handle(frame, random: &random, show: show, keepingText: keepingText)
            }
            if !any { return }
        }
    }

    /// Processes pushed frames until `deadline`; `afterEach` runs after every frame (so channel
    /// messages stored by it can be shown at once).
    func receive(until deadline: Date, random: inout some RandomSource, show: (ReceivedMessage) -> Void,
                 keepingText: Bool = false, afterEach: () throws -> Void = {}) throws {
        while deadline.timeIntervalSinceNow > 0 {
            guard let frame = try session.nextPush(timeout: deadline.timeIntervalSinceNow) else { return }
            try handle(frame, random: &random, show: show, keepingText: keepingText)
            try afterEach()
        }
    }

    // MARK: File payloads (docs/PROTOCOL.md §7)

    /// What a command does with a decrypted file offer or answer.
    enum Disposition {
        /// Done with it: mark it processed and acknowledge it.
        case processed
        /// Another command wants it: keep it in the inbox, unacknowledged, so the relay delivers it
        /// again on a later connection (a file offer seen by `msg read`, text seen by `file send`).
        case leave
    }

    /// One decrypted file offer or answer.
    struct Delivery {
        let id: MessageID
        let sender: IdentityID
        /// The pinned contact, or nil for an unknown sender.
        let contact: Contact?
        let receivedAt: UInt64
        let payload: DirectPayload
        var fromName: String { contact?.name ?? sender.text }
    }

    /// Decides about file offers and answers; `file send` and `file receive` set it. Without it
    /// (`msg read`, `listen`, `channel read`), a current offer is left for `file receive` with a
    /// note on stderr, and stale offers and answers (only a running `file send` wants those) are dropped.
    var fileHandler: ((Delivery) throws -> Disposition)?

    private func fileDisposition(_ delivery: Delivery) throws -> Disposition {
        if let fileHandler { return try fileHandler(delivery) }
        if case let .fileOffer(offer) = delivery.payload, FileOfferPolicy.isFresh(offer, receivedAt: delivery.receivedAt) {
            FileHandle.standardError.write(Data("shroud: \(delivery.fromName) offers a file (\(offer.size) bytes): run 'shroud file receive'\n".utf8))
            return .leave
        }
        return .processed
    }

    /// Marks a delivery left earlier (`.leave`) as processed, forgets its inbox row, and acknowledges it.
    func markProcessed(_ delivery: Delivery) throws {
        try profile.store.atomically {
            try profile.store.setSetting(RelaySettings.processedMessageKey(delivery.id), String(delivery.receivedAt))
            try profile.store.removeSealedSecret(named: Self.inboxName(delivery.id))
        }
        _ = try session.request(.acknowledgeDirect([delivery.id]))
    }

    /// Called with every membership notice, after the profile was updated (the voice plane and
    /// `listen` use it).
    var onMembershipChange: ((ChannelID, IdentityKey, MembershipChange) -> Void)?
    /// Called with pushed frames this client does not handle itself (e.g. `roomLeft`).
    var onOtherPush: ((SessionFrame) -> Void)?

    private func handle(_ frame: SessionFrame, random: inout some RandomSource, show: (ReceivedMessage) -> Void, keepingText: Bool) throws {
        switch frame.message {
        case let .directDelivery(id, receivedAt, blob):
            try handleDirect(id: id, receivedAt: receivedAt, blob: blob, random: &random, show: show, keepingText: keepingText)
        case let .channelDelivery(channel, sequence, receivedAt, blob):
            // Stored (still wrapped) before it is acknowledged; decrypted and shown later, by
            // whichever command displays the channel. A channel this profile does not know is
            // acknowledged only: nothing in it could ever be read.
            _ = try channels.storeDelivery(channel: channel, sequence: sequence, receivedAt: receivedAt, blob: blob)
            _ = try session.request(.acknowledgeChannel(channel: channel, throughSequence: sequence))
        case let .membershipChanged(channel, member, change, _):
            if var local = try channels.channel(channel) {
                let me = profile.identity.publicIdentity.signingKey
                switch change {
                case .left, .kicked:
                    if member.bytes == me {
                        local.isMember = false
                        try channels.save(local)
                        for sender in try senderKeys.senders(channel: channel.bytes) { try senderKeys.removeSender(channel: channel.bytes, sender: sender) }
                    } else {
                        // Their keys are useless from now on; our own key is replaced before our
                        // next send (SenderKeyAudience), since they hold it.
                        try senderKeys.removeSender(channel: channel.bytes, sender: member.bytes)
                    }
                case .joined, .roleChanged:
                    break
                }
            }
            onMembershipChange?(channel, member, change)
        default:
            onOtherPush?(frame)
        }
    }

    /// One direct delivery: skip if already processed; else take it from the inbox (decrypted by an
    /// earlier run that stopped before showing it) or open and decrypt it — the ratchet step and
    /// its result (the inbox row for text; the installed key and the processed mark for a sender
    /// key) commit in one transaction, so no crash can consume a message key without keeping the
    /// message. Text is then shown, and marked processed with its inbox row deleted (one
    /// transaction); only then is the delivery acknowledged. A message that cannot be opened is
    /// reported on stderr, marked and acknowledged, since it never will open.
    private func handleDirect(id: MessageID, receivedAt: UInt64, blob: [UInt8], random: inout some RandomSource,
                              show: (ReceivedMessage) -> Void, keepingText: Bool) throws {
        let processedKey = RelaySettings.processedMessageKey(id)
        if try profile.store.setting(processedKey) == nil {
            do {
                let entry: (sender: [UInt8], payload: DirectPayload)
                if let stored = try inboxEntry(id) {
                    entry = stored
                } else {
                    entry = try profile.store.atomically {
                        let opened = try decrypt(id, blob: blob, random: &random)
                        if case let .senderKey(channel, distribution) = opened.payload {
                            // Only for channels this profile is in: a stranger cannot fill the key store.
                            if try channels.channel(channel)?.isMember == true {
                                try SenderKeyCipher.process(distribution, channel: channel.bytes, sender: opened.sender, store: senderKeys)
                            }
                            try profile.store.setSetting(processedKey, String(receivedAt))
                        }
                        return opened
                    }
                }
                if case let .text(direct) = entry.payload {
                    // `channel read` leaves text for `msg read`: decrypted into the inbox, not acknowledged.
                    if keepingText { return }
                    let senderID = try IdentityID(signingKey: entry.sender)
                    let name = try book.contact(for: senderID)?.name ?? senderID.text
                    show(ReceivedMessage(id: id, from: name, fromID: senderID.text, sentAt: direct.sentAt, receivedAt: receivedAt,
                                         text: direct.text))
                    try profile.store.atomically {
                        try profile.store.setSetting(processedKey, String(receivedAt))
                        try profile.store.removeSealedSecret(named: Self.inboxName(id))
                    }
                }
                if entry.payload.isFileSignal {
                    let senderID = try IdentityID(signingKey: entry.sender)
                    let delivery = Delivery(id: id, sender: senderID, contact: try book.contact(for: senderID), receivedAt: receivedAt,
                                            payload: entry.payload)
                    guard case .processed = try fileDisposition(delivery) else { return }
                    try profile.store.atomically {
                        try profile.store.setSetting(processedKey, String(receivedAt))
                        try profile.store.removeSealedSecret(named: Self.inboxName(id))
                    }
                }
            } catch {
                FileHandle.standardError.write(Data("shroud: dropped undecryptable message \(Hex.encode(id.bytes)): \(oneLine(error))\n".utf8))
                try profile.store.setSetting(processedKey, String(receivedAt))
            }
        }
        _ = try session.request(.acknowledgeDirect([id]))
    }

    /// The inbox keeps each decrypted text message (and file offer or answer) until it is handled, sealed by the profile's row
    /// cipher, under `dm-inbox:<id hex>` in the `sealed_secret` table: sender Ed25519 key (32) ‖ DirectPayload.
    private static func inboxName(_ id: MessageID) -> String { "dm-inbox:" + Hex.encode(id.bytes) }
    private static let inboxTable = "sealed_secret"

    private func inboxEntry(_ id: MessageID) throws -> (sender: [UInt8], payload: DirectPayload)? {
        let name = Self.inboxName(id)
        guard let sealed = try profile.store.sealedSecret(named: name) else { return nil }
        let bytes = try RowCipher(secrets: profile.secrets).open(sealed, table: Self.inboxTable, row: [Array(name.utf8)], rowName: name)
        guard bytes.count >= 32 else { throw ProfileError.corrupt("inbox entry \(name) is too short") }
        return (Array(bytes[0..<32]), try DirectPayload(parsing: Array(bytes[32...])))
    }

    private func decrypt(_ id: MessageID, blob: [UInt8], random: inout some RandomSource) throws -> (sender: [UInt8], payload: DirectPayload) {
        let envelope = try BucketPadding.unpad(blob)
        let (senderKey, message) = try SealedEnvelope.open(envelope, recipient: profile.identity)
        let (sender, plaintext) = try SessionCipher.decrypt(message, from: senderKey, identities: identities, preKeys: prekeys,
                                                            signedPreKeys: prekeys, sessions: sessions, now: nowSeconds(),
                                                            random: &random)
        let payload = try DirectPayload(parsing: plaintext)
        // Text and file signals are kept until handled: a command that leaves one finds it here
        // when the relay delivers it again.
        if payload.isFileSignal || payload.kind == .text {
            let name = Self.inboxName(id)
            try profile.store.storeSealedSecret(try RowCipher(secrets: profile.secrets).seal(sender.signingKey + plaintext, table: Self.inboxTable,
                                                                                             row: [Array(name.utf8)]), named: name)
        }
        return (sender.signingKey, payload)
    }
}

func nowMilliseconds() -> UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }
