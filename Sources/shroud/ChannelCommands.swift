import ArgumentParser
import Foundation
import ShroudCrypto
import ShroudStore
import ShroudWire

struct ChannelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "channel",
        abstract: "End-to-end encrypted channels: the relay sees only random ids and opaque blobs.",
        subcommands: [Create.self, Invite.self, Join.self, Leave.self, Send.self, Read.self, Members.self, Kick.self])

    /// The longest `--ttl`: the relay's limit.
    static let maximumTTLSeconds = SessionLimits.maximumInviteTTLSeconds
    /// An invite's lifetime when `--ttl` is not given (7 days).
    static let defaultTTLSeconds: UInt32 = 7 * 24 * 3600

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a channel (you are its owner).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's name (encrypted; only members can read it).") var name: String
        @Flag(help: "Joining needs an invite (otherwise anyone who knows the id may join, though only invitees can read).")
        var `private` = false

        func validate() throws {
            guard !name.isEmpty, name.utf8.count <= ChannelSecret.maximumNameBytes else {
                throw ValidationError("a channel name is 1 to \(ChannelSecret.maximumNameBytes) UTF-8 bytes")
            }
            guard !ChannelInvite.looksLikeInvite(name), !(name.count == 2 * ChannelID.size && Hex.decode(name) != nil) else {
                throw ValidationError("a channel name may not look like an invite or a channel id")
            }
        }

        func run() throws {
            try withChannels(global) { channels, random in
                let local = try channels.create(name: name, visibility: self.private ? .invitation : .open, random: &random)
                let id = Hex.encode(local.id.bytes)
                global.output.emit("Created channel \(name) (\(id)).", ["channel": id, "name": name, "private": self.private])
            }
        }
    }

    struct Invite: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print an invite string for CH (owner or admin).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String
        @Option(help: "How many people may join with it.") var uses: Int = 1
        @Option(help: "How long it stays valid: seconds, or a number with s, m, h or d.") var ttl: String?

        func validate() throws {
            guard (1...SessionLimits.maximumInviteUses).contains(uses) else {
                throw ValidationError("--uses must be between 1 and \(SessionLimits.maximumInviteUses)")
            }
            if let ttl { _ = try ChannelCommand.parseDuration(ttl) }
        }

        func run() throws {
            let ttlSeconds = try ttl.map(ChannelCommand.parseDuration) ?? ChannelCommand.defaultTTLSeconds
            try withChannels(global) { channels, _ in
                let local = try ChannelCommand.find(channel, in: channels)
                let (invite, expiresAt) = try channels.invite(local, uses: UInt16(uses), ttlSeconds: ttlSeconds)
                global.output.emit(invite.text, ["invite": invite.text, "channel": Hex.encode(local.id.bytes), "uses": uses,
                                                 "expires_at": Int(clamping: expiresAt)])
            }
        }
    }

    struct Join: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Join with an invite string, or rejoin an open channel you know.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "An invite (shroud-invite-1.…) or a known channel's name or id.") var target: String

        func run() throws {
            // A damaged invite is refused before any network traffic.
            var invite: ChannelInvite?
            if ChannelInvite.looksLikeInvite(target) {
                do { invite = try ChannelInvite(parsing: target) } catch { throw Failure("not a valid invite: \(oneLine(error))") }
            }
            try withChannels(global) { channels, _ in
                let local: LocalChannel
                if let invite {
                    local = try channels.join(invite)
                } else {
                    local = try channels.rejoin(try ChannelCommand.find(target, in: channels))
                }
                let id = Hex.encode(local.id.bytes)
                global.output.emit("Joined channel \(local.name) (\(id)).", ["channel": id, "name": local.name, "joined": true])
            }
        }
    }

    struct Leave: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Leave a channel (the others then replace their sender keys).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String

        func run() throws {
            try withChannels(global) { channels, _ in
                let local = try ChannelCommand.find(channel, in: channels)
                try channels.leave(local)
                global.output.emit("Left channel \(local.name).", ["channel": Hex.encode(local.id.bytes), "left": true])
            }
        }
    }

    struct Kick: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member (owner or admin, of a lower role).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String
        @Argument(help: "The member: a contact name or an identity id (sid1…).") var member: String

        func run() throws {
            try withChannels(global) { channels, _ in
                let local = try ChannelCommand.find(channel, in: channels)
                let id = try ChannelCommand.identity(member, contacts: ContactBook(profile: channels.client.profileStore))
                try channels.kick(local, member: try IdentityKey(id.signingKey))
                global.output.emit("Removed \(member) from \(local.name).", ["channel": Hex.encode(local.id.bytes), "member": id.text, "kicked": true])
            }
        }
    }

    struct Members: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the channel's members and roles.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String

        func run() throws {
            try withChannels(global) { channels, _ in
                let local = try ChannelCommand.find(channel, in: channels)
                let contacts = ContactBook(profile: channels.client.profileStore)
                let me = channels.client.identity.publicIdentity.signingKey
                for member in try channels.members(local) {
                    let id = try IdentityID(signingKey: member.identity.bytes)
                    let name = member.identity.bytes == me ? "(you)" : try contacts.contact(for: id)?.name ?? id.text
                    let role = ChannelCommand.roleName(member.role)
                    global.output.emit("\(name)  \(role)  \(id.text)", ["channel": Hex.encode(local.id.bytes), "member": id.text, "name": name, "role": role])
                }
            }
        }
    }

    struct Send: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Encrypt TEXT to the channel's members; exits 0 once the relay has stored it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String
        @Argument(help: "The message text; '-' reads it from standard input.") var text: String

        func run() throws {
            let body = text == "-" ? readStandardInput() : text
            guard body.utf8.count <= ChannelPayload.maximumBodyLength else {
                throw Failure("the message is \(body.utf8.count) bytes; the most is \(ChannelPayload.maximumBodyLength)")
            }
            try withChannels(global) { channels, random in
                let local = try ChannelCommand.find(channel, in: channels)
                let outcome = try channels.send(try ChannelPayload.text(body, sentAt: nowMilliseconds()), to: local, random: &random)
                global.output.emit("Sent to \(local.name).", ["channel": Hex.encode(local.id.bytes), "sent": true,
                                                               "rotated": outcome.rotated, "distributed": outcome.distributed])
            }
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Receive, decrypt and print the channel's new messages, each once (history starts at your join).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String
        @Option(help: "Keep waiting this many seconds for more messages.") var wait: Double = 0

        func validate() throws {
            guard wait >= 0, wait <= MessagingClient.maximumWaitSeconds else {
                throw ValidationError("--wait must be between 0 and \(Int(MessagingClient.maximumWaitSeconds)) seconds")
            }
        }

        func run() throws {
            try withChannels(global) { channels, random in
                let local = try ChannelCommand.find(channel, in: channels)
                // Refuses a non-member with a reason, before anything is shown.
                _ = try channels.members(local)
                let output = global.output
                // Direct text messages stay queued for `msg read`; only sender keys are needed here.
                let show: (ReceivedChannelPayload) -> Void = { output.channelMessage($0, contacts: ContactBook(profile: channels.client.profileStore)) }
                try channels.client.drainQueued(random: &random, show: { _ in }, keepingText: true)
                try channels.decryptWaiting()
                try channels.consume(local, now: nowMilliseconds(), show)
                if wait > 0 {
                    try channels.client.receive(until: Date().addingTimeInterval(wait), random: &random, show: { _ in }, keepingText: true) {
                        try channels.decryptWaiting()
                        try channels.consume(local, now: nowMilliseconds(), show)
                    }
                }
            }
        }
    }

    // MARK: Helpers

    static func find(_ nameOrID: String, in channels: ChannelMessaging) throws -> LocalChannel {
        guard let local = try channels.book.find(nameOrID) else {
            throw Failure("no channel \"\(nameOrID)\" in this profile (create one, or join with an invite)")
        }
        return local
    }

    static func identity(_ text: String, contacts: ContactBook) throws -> IdentityID {
        if let contact = try contacts.contact(named: text) { return contact.id }
        do { return try IdentityID(parsing: text) } catch { throw Failure("\"\(text)\" is neither a contact nor an identity id") }
    }

    static func roleName(_ role: ChannelRole) -> String {
        switch role {
        case .owner: "owner"
        case .admin: "admin"
        case .member: "member"
        }
    }

    /// "90", "90s", "15m", "2h", "7d" → seconds, between 1 and the relay's maximum.
    static func parseDuration(_ text: String) throws -> UInt32 {
        let units: [Character: UInt64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var digits = Substring(text)
        var unit: UInt64 = 1
        if let last = text.last, let factor = units[last] { unit = factor; digits = digits.dropLast() }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = UInt64(digits), value >= 1 else {
            throw ValidationError("--ttl must be a positive number of seconds, or a number with s, m, h or d")
        }
        let (seconds, overflow) = value.multipliedReportingOverflow(by: unit)
        guard !overflow, seconds <= UInt64(maximumTTLSeconds) else {
            throw ValidationError("--ttl must be at most \(maximumTTLSeconds) seconds (30 days)")
        }
        return UInt32(seconds)
    }
}

/// Opens the profile, connects, and runs `body` with the channel layer.
private func withChannels(_ global: GlobalOptions, _ body: (ChannelMessaging, inout SystemRandom) throws -> Void) throws {
    var random = SystemRandom()
    let profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
    defer { profile.lock() }
    let client = try MessagingClient(profile: profile, address: try global.relayAddress(profile.store), random: &random)
    defer { client.close() }
    try body(ChannelMessaging(client: client), &random)
}

extension Output {
    /// Prints a channel text message; control payloads (other features') are skipped.
    func channelMessage(_ m: ReceivedChannelPayload, contacts: ContactBook) {
        guard let text = m.payload.text else { return }
        let senderID = (try? IdentityID(signingKey: m.sender))
        let from = senderID.flatMap { try? contacts.contact(for: $0)?.name } ?? senderID?.text ?? Hex.encode(m.sender)
        let time = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(m.receivedAt) / 1000))
        emit("[\(time)] #\(m.channel.name) \(from): \(text)",
             ["channel": Hex.encode(m.channel.id.bytes), "channel_name": m.channel.name, "sequence": Int(clamping: m.sequence),
              "from": from, "from_id": senderID?.text ?? "", "text": text,
              "sent_at": Int(clamping: m.payload.sentAt), "received_at": Int(clamping: m.receivedAt)])
        fflush(nil)
    }
}
