import Crypto
import Foundation
import ShroudWire

// The client side of channels (docs/PROTOCOL.md §6): what the relay's opaque channel blobs and
// metadata hold, what travels through the pairwise sessions, and the invite string. Everything
// here is pure: keys, time and randomness come in as parameters.

/// What a sealed direct message's session plaintext holds: a kind byte, then the kind's body.
///
///     0x01 text           sent-at u64 (ms since the epoch, sender's clock) ‖ UTF-8 text
///     0x02 sender key     channel id (16) ‖ SenderKeyDistributionMessage (73)
///     0x03 file offer     `FileOffer` (docs/PROTOCOL.md §7)
///     0x04 file answer    `FileAnswer`
///
/// Other kinds are refused (a newer client's message shows as undecryptable, never as text).
public enum DirectPayload: Sendable {
    case text(DirectText)
    /// The sender's current sender key for a channel, given to one member.
    case senderKey(channel: ChannelID, distribution: SenderKeyDistributionMessage)
    /// A file transfer offer or answer (`shroud file send|receive`).
    case fileOffer(FileOffer)
    case fileAnswer(FileAnswer)

    public enum Kind: UInt8, Sendable { case text = 0x01, senderKey = 0x02, fileOffer = 0x03, fileAnswer = 0x04 }

    public var kind: Kind {
        switch self {
        case .text: .text
        case .senderKey: .senderKey
        case .fileOffer: .fileOffer
        case .fileAnswer: .fileAnswer
        }
    }

    public func serialize() -> [UInt8] {
        switch self {
        case let .text(text): return [Kind.text.rawValue] + text.serialize()
        case let .senderKey(channel, distribution): return [Kind.senderKey.rawValue] + channel.bytes + distribution.serialize()
        case let .fileOffer(offer): return [Kind.fileOffer.rawValue] + offer.serialize()
        case let .fileAnswer(answer): return [Kind.fileAnswer.rawValue] + answer.serialize()
        }
    }

    public init(parsing bytes: [UInt8]) throws {
        guard let first = bytes.first else { throw CryptoError.invalidInput("empty direct message") }
        guard let kind = Kind(rawValue: first) else {
            throw CryptoError.invalidInput("unknown direct message kind 0x\(String(first, radix: 16))")
        }
        let body = Array(bytes.dropFirst())
        switch kind {
        case .text:
            self = .text(try DirectText(parsing: body))
        case .senderKey:
            guard body.count == ChannelID.size + SenderKeyDistributionMessage.length else {
                throw CryptoError.invalidInput("sender key message of \(body.count) bytes, expected \(ChannelID.size + SenderKeyDistributionMessage.length)")
            }
            self = .senderKey(channel: try ChannelID(Array(body.prefix(ChannelID.size))),
                              distribution: try SenderKeyDistributionMessage(parsing: Array(body.dropFirst(ChannelID.size))))
        case .fileOffer:
            self = .fileOffer(try FileOffer(parsing: body))
        case .fileAnswer:
            self = .fileAnswer(try FileAnswer(parsing: body))
        }
    }
}

/// What a channel message's sender-key plaintext holds: kind u8 ‖ sent-at u64 ‖ body.
///
/// Kind 0x01 is text (UTF-8 body), shown by `channel read` and `listen`. Kinds 0x10–0x7F are
/// *control* payloads (0x10: `MediaKeyAnnouncement`) for other features riding on the channel's sender keys, with opaque bodies
/// those features define: 0x10–0x1F voice (e.g. SFrame media keys), 0x20–0x2F screen sharing,
/// 0x30–0x7F unassigned. Text readers skip control payloads. 0x00, 0x02–0x0F and 0x80–0xFF are refused.
public struct ChannelPayload: Equatable, Sendable {
    public struct Kind: RawRepresentable, Hashable, Sendable {
        public let rawValue: UInt8
        public init?(rawValue: UInt8) {
            guard rawValue == 0x01 || Self.controlRange.contains(rawValue) else { return nil }
            self.rawValue = rawValue
        }
        public static let text = Kind(unchecked: 0x01)
        /// Voice: one member's SFrame media key (`MediaKeyAnnouncement`).
        public static let mediaKey = Kind(unchecked: 0x10)
        public static let controlRange: ClosedRange<UInt8> = 0x10...0x7F
        public static let voiceRange: ClosedRange<UInt8> = 0x10...0x1F
        public static let screenRange: ClosedRange<UInt8> = 0x20...0x2F
        private init(unchecked raw: UInt8) { rawValue = raw }
        public var isControl: Bool { Self.controlRange.contains(rawValue) }
    }

    public static let headerLength = 1 + 8
    /// The largest body: a sender-key message's largest plaintext less the header.
    public static let maximumBodyLength = SenderKeyMessage.maxPlaintextLength - headerLength

    public let kind: Kind
    public let sentAt: UInt64
    public let body: [UInt8]

    public init(kind: Kind, sentAt: UInt64, body: [UInt8]) throws {
        guard body.count <= Self.maximumBodyLength else {
            throw CryptoError.limitExceeded("channel payload of \(body.count) bytes exceeds \(Self.maximumBodyLength)")
        }
        self.kind = kind; self.sentAt = sentAt; self.body = body
    }

    public static func text(_ text: String, sentAt: UInt64) throws -> ChannelPayload {
        try ChannelPayload(kind: .text, sentAt: sentAt, body: Array(text.utf8))
    }

    /// The text of a text payload (nil for control payloads).
    public var text: String? {
        guard kind == .text else { return nil }
        return String(decoding: body, as: UTF8.self)
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: Self.headerLength + body.count)
        w.write(kind.rawValue); w.write(sentAt); w.write(bytes: body)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        let raw = try r.readUInt8("channel payload kind")
        guard let kind = Kind(rawValue: raw) else { throw CryptoError.invalidInput("unknown channel payload kind 0x\(String(raw, radix: 16))") }
        let sentAt = try r.readUInt64("sent at")
        let body = r.readRest()
        if kind == .text, String(validating: body, as: UTF8.self) == nil { throw CryptoError.invalidInput("channel text is not UTF-8") }
        try self.init(kind: kind, sentAt: sentAt, body: body)
    }
}

/// Voice: one member's SFrame media key, sent as a channel payload of kind `mediaKey` (0x10), so
/// it travels under the sender's current sender key and only the channel's current members can
/// read it (a removed member never holds the rotated sender key).
///
///     body = flags u8 ‖ key id u64 ‖ base key (32)
///
/// Flag bit 0 (`joining`): the sender just joined the call; every member in the call answers with
/// its current key (flag clear, so answers never cascade). Other flag bits are refused. The key id
/// is the SFrame KID the sender's frames carry; the base key is the SFrame base key (`SFrame`,
/// AES_256_GCM_SHA512_128), 32 random bytes.
public struct MediaKeyAnnouncement: Equatable, Sendable {
    public static let baseKeyLength = 32
    public static let bodyLength = 1 + 8 + baseKeyLength
    public static let joiningFlag: UInt8 = 0x01

    public let keyID: UInt64
    public let baseKey: [UInt8]
    public let joining: Bool

    public init(keyID: UInt64, baseKey: [UInt8], joining: Bool) throws {
        guard baseKey.count == Self.baseKeyLength else {
            throw CryptoError.invalidKey("a media base key is \(Self.baseKeyLength) bytes, not \(baseKey.count)")
        }
        self.keyID = keyID; self.baseKey = baseKey; self.joining = joining
    }

    /// A fresh key: a random 48-bit id (short in every SFrame header; a collision among the few
    /// keys of one call is negligible and refused by the key ring anyway) and a random base key.
    public static func random(joining: Bool, random: inout some RandomSource) -> MediaKeyAnnouncement {
        let idBytes = random.bytes(6)
        let id = idBytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return MediaKeyAnnouncement(unchecked: id, random.bytes(baseKeyLength), joining)
    }

    private init(unchecked keyID: UInt64, _ baseKey: [UInt8], _ joining: Bool) {
        self.keyID = keyID; self.baseKey = baseKey; self.joining = joining
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: Self.bodyLength)
        w.write(joining ? Self.joiningFlag : 0); w.write(keyID); w.write(bytes: baseKey)
        return w.bytes
    }

    public init(parsing body: [UInt8]) throws {
        guard body.count == Self.bodyLength else {
            throw CryptoError.invalidInput("a media key payload is \(Self.bodyLength) bytes, not \(body.count)")
        }
        var r = ByteReader(body)
        let flags = try r.readUInt8("media key flags")
        guard flags & ~Self.joiningFlag == 0 else { throw CryptoError.invalidInput("unknown media key flags 0x\(String(flags, radix: 16))") }
        let keyID = try r.readUInt64("media key id")
        try self.init(keyID: keyID, baseKey: r.readRest(), joining: flags & Self.joiningFlag != 0)
    }

    /// The channel payload carrying this key.
    public func payload(sentAt: UInt64) throws -> ChannelPayload {
        try ChannelPayload(kind: .mediaKey, sentAt: sentAt, body: serialize())
    }

    /// The key a payload carries; nil for other kinds, throws when a media key payload is malformed.
    public static func from(_ payload: ChannelPayload) throws -> MediaKeyAnnouncement? {
        guard payload.kind == .mediaKey else { return nil }
        return try MediaKeyAnnouncement(parsing: payload.body)
    }
}

/// A channel's secret: 32 random bytes the creator chooses and passes on only inside invites. The
/// relay never sees it. Two keys are derived from it (HKDF-SHA256, salt = channel id):
///
///     metadata key = HKDF(secret, salt: channel id, info: "shroud/v1/channel/metadata", 32)
///     envelope key = HKDF(secret, salt: channel id, info: "shroud/v1/channel/envelope", 32)
///
/// The metadata key encrypts the channel's name for the relay's metadata blob; the envelope key
/// wraps each channel message so that the relay sees neither the sender nor the sender-key id.
/// Message *content* is protected by the sender keys, which change when a member leaves.
public struct ChannelSecret: Equatable, Sendable {
    public static let length = 32
    public static let metadataInfo = Array("shroud/v1/channel/metadata".utf8)
    public static let envelopeInfo = Array("shroud/v1/channel/envelope".utf8)
    /// The longest channel name, in UTF-8 bytes.
    public static let maximumNameBytes = 64

    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) throws {
        guard bytes.count == Self.length else { throw CryptoError.invalidKey("a channel secret is \(Self.length) bytes, not \(bytes.count)") }
        self.bytes = bytes
    }

    public init(random: inout some RandomSource) {
        bytes = random.bytes(Self.length)
    }

    private func key(_ info: [UInt8], channel: ChannelID) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: bytes), salt: channel.bytes, info: info, outputByteCount: 32)
    }

    /// The relay's metadata blob: BucketPadding(nonce 12 ‖ AES-256-GCM(metadata key, version u8 = 1 ‖
    /// name length u8 ‖ name, AD = channel id) ‖ tag 16).
    public func sealMetadata(name: String, channel: ChannelID, random: inout some RandomSource) throws -> [UInt8] {
        let nameBytes = Array(name.utf8)
        guard !nameBytes.isEmpty, nameBytes.count <= Self.maximumNameBytes else {
            throw CryptoError.invalidInput("a channel name is 1 to \(Self.maximumNameBytes) UTF-8 bytes")
        }
        let plaintext = [UInt8(1), UInt8(nameBytes.count)] + nameBytes
        return try BucketPadding.pad(try seal(plaintext, key: key(Self.metadataInfo, channel: channel), channel: channel, random: &random))
    }

    public func openMetadata(_ blob: [UInt8], channel: ChannelID) throws -> String {
        let plaintext = try open(try BucketPadding.unpad(blob), key: key(Self.metadataInfo, channel: channel), channel: channel,
                                 what: "channel metadata")
        var r = ByteReader(plaintext)
        guard try r.readUInt8("metadata version") == 1 else { throw CryptoError.invalidInput("unknown channel metadata version") }
        let length = Int(try r.readUInt8("name length"))
        let name = try r.readBytes(length, "name")
        guard r.isAtEnd, let text = String(validating: name, as: UTF8.self), !text.isEmpty else {
            throw CryptoError.invalidInput("channel metadata does not parse")
        }
        return text
    }

    /// The relay's channel blob: BucketPadding(nonce 12 ‖ AES-256-GCM(envelope key, sender Ed25519
    /// key (32) ‖ SenderKeyMessage, AD = channel id) ‖ tag 16).
    public func sealEnvelope(sender: [UInt8], message: SenderKeyMessage, channel: ChannelID,
                             random: inout some RandomSource) throws -> [UInt8] {
        guard sender.count == 32 else { throw CryptoError.invalidInput("sender key must be 32 bytes") }
        return try BucketPadding.pad(try seal(sender + message.serialize(), key: key(Self.envelopeInfo, channel: channel),
                                              channel: channel, random: &random))
    }

    public func openEnvelope(_ blob: [UInt8], channel: ChannelID) throws -> (sender: [UInt8], message: SenderKeyMessage) {
        let inner = try open(try BucketPadding.unpad(blob), key: key(Self.envelopeInfo, channel: channel), channel: channel,
                             what: "channel message envelope")
        guard inner.count > 32 else { throw CryptoError.invalidInput("channel message envelope is too short") }
        return (Array(inner.prefix(32)), try SenderKeyMessage(parsing: Array(inner.dropFirst(32))))
    }

    private func seal(_ plaintext: [UInt8], key: SymmetricKey, channel: ChannelID, random: inout some RandomSource) throws -> [UInt8] {
        let nonce = random.bytes(12)
        let box = try AES.GCM.seal(plaintext, using: key, nonce: try AES.GCM.Nonce(data: nonce), authenticating: channel.bytes)
        return nonce + Array(box.ciphertext) + Array(box.tag)
    }

    private func open(_ sealed: [UInt8], key: SymmetricKey, channel: ChannelID, what: String) throws -> [UInt8] {
        guard sealed.count >= 12 + 16 else { throw CryptoError.invalidInput("\(what) is too short") }
        do {
            let box = try AES.GCM.SealedBox(nonce: try AES.GCM.Nonce(data: sealed[0..<12]), ciphertext: sealed[12..<(sealed.count - 16)],
                                            tag: sealed[(sealed.count - 16)...])
            return Array(try AES.GCM.open(box, using: key, authenticating: channel.bytes))
        } catch {
            throw CryptoError.authenticationFailed("\(what) does not authenticate under the channel secret")
        }
    }
}

/// The invite a user passes around: one string carrying the relay's invite token, the channel id
/// and the channel secret, so the relay (which sees only the token) never learns the secret.
///
///     "shroud-invite-1." ‖ base64url without padding (token 16 ‖ channel id 16 ‖ channel secret 32)
///
/// 86 characters after the prefix. Anyone holding the string can join (until the relay's use
/// count or expiry runs out) and read the channel's name: share it like a password.
public struct ChannelInvite: Equatable, Sendable {
    public static let prefix = "shroud-invite-1."
    public static let payloadLength = InviteToken.size + ChannelID.size + ChannelSecret.length

    public let token: InviteToken
    public let channel: ChannelID
    public let secret: ChannelSecret

    public init(token: InviteToken, channel: ChannelID, secret: ChannelSecret) {
        self.token = token; self.channel = channel; self.secret = secret
    }

    public var text: String {
        let payload = token.bytes + channel.bytes + secret.bytes
        return Self.prefix + Data(payload).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Whether `text` looks like an invite at all (so the command line can tell it from a name).
    public static func looksLikeInvite(_ text: String) -> Bool { text.hasPrefix(prefix) }

    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix(Self.prefix) else { throw CryptoError.invalidInput("an invite starts with \(Self.prefix)") }
        let encoded = trimmed.dropFirst(Self.prefix.count)
        guard encoded.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw CryptoError.invalidInput("the invite has characters outside base64url")
        }
        var standard = encoded.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.count % 4 != 0 { standard += "=" }
        guard let data = Data(base64Encoded: standard) else { throw CryptoError.invalidInput("the invite is not valid base64url") }
        let payload = [UInt8](data)
        guard payload.count == Self.payloadLength else {
            throw CryptoError.invalidInput("the invite holds \(payload.count) bytes, not \(Self.payloadLength): it is cut or damaged")
        }
        token = try InviteToken(Array(payload[0..<InviteToken.size]))
        channel = try ChannelID(Array(payload[InviteToken.size..<(InviteToken.size + ChannelID.size)]))
        secret = try ChannelSecret(Array(payload[(InviteToken.size + ChannelID.size)...]))
    }
}

/// The sender-key rule applied before every channel send (DESIGN.md §1, invariant 4: keys rotate on
/// every membership change). The profile records which members our current sender key was given
/// to; if the member list (without us) is not exactly that set — someone joined, left or was
/// kicked, or an earlier distribution was interrupted — or we have no key yet, a new key is made and
/// given to every other member. Otherwise nothing needs sending.
public struct SenderKeyAudience: Equatable, Sendable {
    public var rotate: Bool
    /// The members (Ed25519 keys) to send the distribution to before the message, in member order.
    public var distributeTo: [[UInt8]]

    public static func plan(members: [[UInt8]], holders: Set<[UInt8]>, me: [UInt8], hasKey: Bool) -> SenderKeyAudience {
        let others = members.filter { $0 != me }
        let rotate = !hasKey || Set(others) != holders
        return SenderKeyAudience(rotate: rotate, distributeTo: rotate ? others : [])
    }
}

/// Which locally stored channel messages may be shown now. Messages arrive (and are stored and
/// acknowledged) in sequence order; one whose sender key has not arrived yet stays *waiting* and is
/// retried after the direct messages (which carry the keys) have been processed. Messages are
/// shown in sequence order, so a waiting message holds back the later ones — until it is older than
/// `giveUpAfterMilliseconds`, when it is dropped as undecryptable.
public enum ChannelMessageOrder {
    /// How long a message may wait for its sender key.
    public static let giveUpAfterMilliseconds: UInt64 = 10 * 60 * 1000

    public enum State: Equatable, Sendable { case decrypted, waiting }

    public struct Entry: Equatable, Sendable {
        public var sequence: UInt64
        public var receivedAt: UInt64
        public var state: State
        public init(sequence: UInt64, receivedAt: UInt64, state: State) {
            self.sequence = sequence; self.receivedAt = receivedAt; self.state = state
        }
    }

    public struct Decision: Equatable, Sendable {
        /// Decrypted messages to show, in order.
        public var show: [UInt64]
        /// Waiting messages that waited too long, to delete with a note.
        public var giveUp: [UInt64]
    }

    public static func decide(_ entries: [Entry], now: UInt64) -> Decision {
        var decision = Decision(show: [], giveUp: [])
        for entry in entries.sorted(by: { $0.sequence < $1.sequence }) {
            switch entry.state {
            case .decrypted:
                decision.show.append(entry.sequence)
            case .waiting:
                guard now >= entry.receivedAt, now - entry.receivedAt >= giveUpAfterMilliseconds else { return decision }
                decision.giveUp.append(entry.sequence)
            }
        }
        return decision
    }
}
