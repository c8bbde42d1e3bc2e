/// The session protocol between a client and the relay (docs/PROTOCOL.md §1). One WebSocket
/// binary frame carries exactly one `SessionFrame`:
///
/// ```
///  0        1        2                 6
/// +--------+--------+-----------------+---------------------------+
/// |version | type   | request id (u32)| body (layout set by type) |
/// +--------+--------+-----------------+---------------------------+
/// ```
///
/// All integers are big-endian. Every variable-length field has an explicit length prefix and a
/// named maximum; the body must be consumed exactly (trailing bytes are an error), so every frame
/// has one encoding and parse ∘ serialize is the identity.
public struct SessionFrame: Equatable, Sendable {
    /// Correlates a response with its request: the relay copies the request's id into its `ok`,
    /// `error` or data response. Pushes the relay sends on its own (deliveries, membership changes,
    /// the challenge) carry 0.
    public var requestID: UInt32
    public var message: RelayMessage

    public init(requestID: UInt32 = 0, _ message: RelayMessage) {
        self.requestID = requestID
        self.message = message
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count <= SessionLimits.maximumFrameSize else {
            throw WireError.tooLarge(field: "session frame", size: bytes.count, limit: SessionLimits.maximumFrameSize)
        }
        var reader = ByteReader(bytes)
        let version = try reader.readUInt8("version")
        guard version == SessionLimits.protocolVersion else {
            throw WireError.invalid(field: "version", reason: "unsupported protocol version \(version)")
        }
        let rawType = try reader.readUInt8("message type")
        guard let type = RelayMessageType(rawValue: rawType) else {
            throw WireError.invalid(field: "message type", reason: "unknown type 0x\(String(rawType, radix: 16))")
        }
        requestID = try reader.readUInt32("request id")
        message = try RelayMessage(type: type, body: &reader)
        guard reader.isAtEnd else {
            throw WireError.invalid(field: "session frame", reason: "\(reader.remaining) trailing bytes after \(type)")
        }
    }

    public func serialize() -> [UInt8] {
        var writer = ByteWriter(capacity: SessionLimits.headerSize + 64)
        writer.write(SessionLimits.protocolVersion)
        writer.write(message.type.rawValue)
        writer.write(requestID)
        message.serializeBody(into: &writer)
        return writer.bytes
    }

    /// The bytes of a `pipeData` frame (request id 0) that come before its data: followed by
    /// `dataLength` bytes of data they equal `SessionFrame(.pipeData(pipe:data:)).serialize()`.
    /// Lets a sender frame a stream chunk straight from its own buffer, without building the array.
    public static func pipeDataPrefix(pipe: PipeID, dataLength: Int) -> [UInt8] {
        var writer = ByteWriter(capacity: pipeDataPrefixSize)
        writer.write(SessionLimits.protocolVersion)
        writer.write(RelayMessageType.pipeData.rawValue)
        writer.write(UInt32(0))
        writer.write(pipe)
        writer.write(UInt32(clamping: dataLength))
        return writer.bytes
    }

    /// Header (6), pipe id (16), data length (4).
    public static let pipeDataPrefixSize = SessionLimits.headerSize + PipeID.size + 4
}

/// Named sizes and maxima of the session protocol.
public enum SessionLimits {
    public static let protocolVersion: UInt8 = 1
    /// version + type + request id.
    public static let headerSize = 6
    /// The largest padded blob (a sealed direct message or a channel message): the largest
    /// padding bucket, 4 MiB.
    public static let maximumBlobSize = 4 << 20
    /// Largest `pipeData` payload (not padded: the pipe carries a stream, not stored blobs).
    public static let maximumPipeDataSize = 4 << 20
    /// The largest encrypted channel metadata blob.
    public static let maximumMetadataSize = 64 << 10
    /// The whole frame: the largest blob plus the largest fixed fields of any message, rounded up.
    public static let maximumFrameSize = maximumBlobSize + 1024
    /// The relay binding string in a challenge (its URL or identity), UTF-8 bytes.
    public static let maximumRelayBindingSize = 255
    /// An error's human-readable text, UTF-8 bytes.
    public static let maximumErrorTextSize = 255
    /// One-time prekeys in one publish message.
    public static let maximumOneTimePrekeysPerUpload = 100
    /// Message ids in one direct acknowledgement.
    public static let maximumAcknowledgementsPerFrame = 256
    /// Entries in one member list; also the most members a channel can have.
    public static let maximumMembersPerChannel = 1000
    /// Messages asked for in one history request.
    public static let maximumHistoryPage = 100
    /// Uses of one invite.
    public static let maximumInviteUses = 1000
    /// An invite's lifetime, in seconds (30 days).
    public static let maximumInviteTTLSeconds: UInt32 = 30 * 24 * 3600

    // Padding buckets, restated from ShroudCrypto's BucketPadding because the relay side may not
    // import the end-to-end layer; a test in ShroudCryptoTests checks that both rules agree.
    public static let smallestBucket = 256
    public static let largeBucketStep = 64 << 10

    /// Whether `size` is a padding bucket: 256, 512, … 65536 (powers of two), then multiples of
    /// 64 KiB up to 4 MiB. The relay only accepts blobs of these sizes, so it stores and forwards
    /// nothing finer-grained than a bucket.
    public static func isPaddingBucket(_ size: Int) -> Bool {
        guard size >= smallestBucket, size <= maximumBlobSize else { return false }
        if size <= largeBucketStep { return size & (size - 1) == 0 }
        return size % largeBucketStep == 0
    }
}

public enum RelayMessageType: UInt8, Sendable, CaseIterable {
    case challenge = 0x01, authenticate = 0x02, ok = 0x03, error = 0x04
    case publishPrekeys = 0x10, fetchBundle = 0x11, bundle = 0x12, countPrekeys = 0x13, prekeyCount = 0x14
    case sendDirect = 0x20, directDelivery = 0x21, acknowledgeDirect = 0x22
    case createChannel = 0x30, createInvite = 0x31, invite = 0x32, redeemInvite = 0x33, joinChannel = 0x34
    case channelJoined = 0x35, leaveChannel = 0x36, kickMember = 0x37, setRole = 0x38, listMembers = 0x39
    case members = 0x3A, sendChannel = 0x3B, channelDelivery = 0x3C, acknowledgeChannel = 0x3D
    case fetchHistory = 0x3E, membershipChanged = 0x3F
    // File transfer relay pipes (docs/PROTOCOL.md §7): 0x50–0x5F.
    case openPipe = 0x50, pipeReady = 0x51, pipeData = 0x52, pipeAck = 0x53, closePipe = 0x54, pipeClosed = 0x55
    case joinRoom = 0x40, roomJoined = 0x41, leaveRoom = 0x42, mediaDatagram = 0x43, roomLeft = 0x44
}

/// How a room participant's media travels: UDP datagrams bound with the media token, or
/// `mediaDatagram` frames on the session WebSocket when UDP does not get through.
public enum MediaTransport: UInt8, Sendable, CaseIterable {
    case datagram = 0
    case session = 1
}

/// What a `joinRoom` is for: the channel's voice room, or its screen room as the one sharer or as
/// a watcher. Voice and screen are separate rooms of the same channel (docs/PROTOCOL.md §4.7).
public enum RoomPurpose: UInt8, Sendable, CaseIterable {
    case voice = 0
    case screenShare = 1
    case screenWatch = 2
}

/// Simulcast layer numbers in `joinRoom`'s `maxLayer` and in the routing header's layer field.
public enum MediaLayers {
    /// The highest layer number a `joinRoom` may name; `maxLayer == noCap` means "no cap".
    public static let noCap: UInt8 = MediaPacket.maxLayer
    /// Every participant is given this many consecutive stream ids (its base is a multiple of it),
    /// so a sharer sends layer L as stream base + L.
    public static let streamBlockSize: UInt32 = 8
}

/// Error codes the relay sends in an `error` message. Unknown codes parse (a newer relay may add
/// some) and are shown by number.
public struct SessionErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The frame did not parse; the connection is closed.
    public static let malformed = SessionErrorCode(rawValue: 1)
    /// The frame's version byte is not 1; the connection is closed.
    public static let unsupportedVersion = SessionErrorCode(rawValue: 2)
    /// Anything but a valid `authenticate` before authentication; the connection is closed.
    public static let notAuthenticated = SessionErrorCode(rawValue: 3)
    /// The signature did not verify; the connection is closed.
    public static let authenticationFailed = SessionErrorCode(rawValue: 4)
    /// The challenge deadline passed; the connection is closed.
    public static let authenticationExpired = SessionErrorCode(rawValue: 5)
    /// The connection's token bucket is empty; the request was dropped, the connection stays.
    public static let rateLimited = SessionErrorCode(rawValue: 6)
    /// The relay's total or per-IP connection limit is reached; the connection is closed.
    public static let tooManyConnections = SessionErrorCode(rawValue: 7)
    /// The channel, invite, member or prekey bundle does not exist.
    public static let notFound = SessionErrorCode(rawValue: 8)
    /// The sender is not a member of the channel.
    public static let notMember = SessionErrorCode(rawValue: 9)
    /// The sender's role does not allow the operation.
    public static let forbidden = SessionErrorCode(rawValue: 10)
    /// The channel id is taken or the member is already in the channel.
    public static let alreadyExists = SessionErrorCode(rawValue: 11)
    /// The invite has expired or has no uses left.
    public static let inviteExhausted = SessionErrorCode(rawValue: 12)
    /// A storage limit (queue length, prekey count, members) would be exceeded.
    public static let limitExceeded = SessionErrorCode(rawValue: 13)
    /// A message only the relay sends, sent by a client; the connection is closed.
    public static let unexpectedMessage = SessionErrorCode(rawValue: 14)
    /// The connection's outbound queue overflowed; the connection is closed.
    public static let slowConsumer = SessionErrorCode(rawValue: 15)
    /// The relay's storage failed; the request had no effect.
    public static let internalError = SessionErrorCode(rawValue: 16)
    /// A published agreement key's binding signature does not verify under the caller's identity
    /// key; nothing was stored, the connection stays.
    public static let invalidSignature = SessionErrorCode(rawValue: 17)
    /// `joinRoom` with purpose `screenShare` while another connection shares in the channel's
    /// screen room (one sharer at a time); the connection stays and may watch or retry later.
    public static let screenAlreadyShared = SessionErrorCode(rawValue: 18)

    public var description: String { "error \(rawValue)" }
}

public enum ChannelVisibility: UInt8, Sendable, CaseIterable {
    /// Anyone who knows the channel id can join.
    case open = 0
    /// Joining needs an invite token.
    case invitation = 1
}

public enum ChannelRole: UInt8, Sendable, CaseIterable, Comparable {
    case owner = 1, admin = 2, member = 3
    /// Lower raw value is more powerful, so `owner < admin < member`.
    public static func < (a: ChannelRole, b: ChannelRole) -> Bool { a.rawValue < b.rawValue }
}

public enum MembershipChange: UInt8, Sendable, CaseIterable {
    case joined = 1, left = 2, kicked = 3, roleChanged = 4
}

public struct SignedPrekey: Equatable, Sendable {
    public var id: UInt32
    public var key: PrekeyPublicKey
    /// The identity key's signature over `key`, checked by the fetching client, not the relay.
    public var signature: Ed25519Signature
    public init(id: UInt32, key: PrekeyPublicKey, signature: Ed25519Signature) {
        self.id = id; self.key = key; self.signature = signature
    }
}

public struct OneTimePrekey: Hashable, Sendable {
    public var id: UInt32
    public var key: PrekeyPublicKey
    public init(id: UInt32, key: PrekeyPublicKey) { self.id = id; self.key = key }
}

/// The identity's X25519 agreement key and the identity's Ed25519 signature binding it:
/// `Ed25519(identity, bindingLabel ‖ key)` — the same binding `PublicIdentity` checks on the client
/// side (ShroudCryptoTests checks the labels agree). X3DH and the sealed-sender layer need this key;
/// the relay checks the signature when it is published, and the fetching client checks it again
/// against the contact's pinned Ed25519 key, so the relay cannot substitute another key.
public struct IdentityAgreementKey: Equatable, Sendable {
    public static let bindingLabel = Array("shroud/v1/identity/agreement-key".utf8)
    public var key: PrekeyPublicKey
    public var signature: Ed25519Signature
    public init(key: PrekeyPublicKey, signature: Ed25519Signature) { self.key = key; self.signature = signature }

    /// The bytes the identity key signs.
    public var signedBytes: [UInt8] { Self.bindingLabel + key.bytes }
}

public struct PrekeyBundle: Equatable, Sendable {
    public var identity: IdentityKey
    public var agreement: IdentityAgreementKey
    public var signedPrekey: SignedPrekey
    /// Nil when the owner has no one-time prekeys left; X3DH then runs without one.
    public var oneTimePrekey: OneTimePrekey?
    public init(identity: IdentityKey, agreement: IdentityAgreementKey, signedPrekey: SignedPrekey, oneTimePrekey: OneTimePrekey?) {
        self.identity = identity; self.agreement = agreement; self.signedPrekey = signedPrekey; self.oneTimePrekey = oneTimePrekey
    }
}

public struct ChannelMember: Equatable, Sendable {
    public var identity: IdentityKey
    public var role: ChannelRole
    public init(identity: IdentityKey, role: ChannelRole) { self.identity = identity; self.role = role }
}

/// One message of the session protocol. Direction: C→R client to relay, R→C relay to client.
public enum RelayMessage: Equatable, Sendable {
    /// R→C, first frame on every connection.
    case challenge(nonce: ChallengeNonce, deadline: UInt64, relayBinding: String)
    /// C→R, the answer: the client's identity key and its signature over `AuthenticationTranscript`.
    case authenticate(identity: IdentityKey, signature: Ed25519Signature)
    /// R→C, the request succeeded (or authentication succeeded).
    case ok
    /// R→C, the request failed.
    case error(code: SessionErrorCode, text: String)

    /// C→R, publishes the identity's agreement key (the relay checks its binding signature),
    /// replaces the signed prekey and adds one-time prekeys.
    case publishPrekeys(agreement: IdentityAgreementKey, signed: SignedPrekey, oneTime: [OneTimePrekey])
    /// C→R, asks for another identity's bundle; consumes one one-time prekey.
    case fetchBundle(identity: IdentityKey)
    /// R→C, the answer to `fetchBundle`.
    case bundle(PrekeyBundle)
    /// C→R, asks how many one-time prekeys the relay holds for the caller.
    case countPrekeys
    /// R→C, the answer to `countPrekeys`.
    case prekeyCount(UInt32)

    /// C→R, a sealed direct message: recipient and a padded blob; the sender is inside the blob.
    case sendDirect(recipient: IdentityKey, blob: [UInt8])
    /// R→C, a queued direct message for the connected identity.
    case directDelivery(id: MessageID, receivedAt: UInt64, blob: [UInt8])
    /// C→R, the listed messages were stored by the client and may be deleted.
    case acknowledgeDirect([MessageID])

    /// C→R, creates a channel with the caller as owner.
    case createChannel(channel: ChannelID, visibility: ChannelVisibility, metadata: [UInt8])
    /// C→R, owner or admin: a new invite.
    case createInvite(channel: ChannelID, uses: UInt16, ttlSeconds: UInt32)
    /// R→C, the answer to `createInvite`.
    case invite(token: InviteToken, expiresAt: UInt64)
    /// C→R, joins the invite's channel, using one of its uses.
    case redeemInvite(token: InviteToken)
    /// C→R, joins an open channel.
    case joinChannel(channel: ChannelID)
    /// R→C, the answer to `createChannel`, `redeemInvite` and `joinChannel`.
    case channelJoined(channel: ChannelID, visibility: ChannelVisibility, role: ChannelRole,
                       joinedAfter: UInt64, metadata: [UInt8])
    /// C→R, leaves a channel.
    case leaveChannel(channel: ChannelID)
    /// C→R, owner or admin: removes a member of lower role.
    case kickMember(channel: ChannelID, member: IdentityKey)
    /// C→R, owner: sets a member's role (admin or member).
    case setRole(channel: ChannelID, member: IdentityKey, role: ChannelRole)
    /// C→R, asks for the member list.
    case listMembers(channel: ChannelID)
    /// R→C, the answer to `listMembers`.
    case members(channel: ChannelID, [ChannelMember])
    /// C→R, a channel message (padded blob) for every member.
    case sendChannel(channel: ChannelID, blob: [UInt8])
    /// R→C, a channel message, live or from history.
    case channelDelivery(channel: ChannelID, sequence: UInt64, receivedAt: UInt64, blob: [UInt8])
    /// C→R, the caller has stored every message of the channel up to `throughSequence`.
    case acknowledgeChannel(channel: ChannelID, throughSequence: UInt64)
    /// C→R, asks again for messages after `afterSequence` (never before the caller's join).
    case fetchHistory(channel: ChannelID, afterSequence: UInt64, limit: UInt16)
    /// R→C, pushed to every member when the membership changes, so clients rotate sender keys.
    case membershipChanged(channel: ChannelID, member: IdentityKey, change: MembershipChange, role: ChannelRole)

    /// Client: join the pipe named `pipe` (a rendezvous both ends derive from their secret); `ok`.
    case openPipe(pipe: PipeID)
    /// Relay (request id 0): both ends are in; each may send at most `bytesPerSecond` of data.
    case pipeReady(pipe: PipeID, bytesPerSecond: UInt64)
    /// Either way, request id 0, no reply: opaque bytes for the other end of the pipe.
    case pipeData(pipe: PipeID, data: [UInt8])
    /// Either way, request id 0, no reply: the sender of this consumed `bytes` more of the pipe's
    /// data (end-to-end flow control; the relay only forwards it).
    case pipeAck(pipe: PipeID, bytes: UInt32)
    /// Client: leave the pipe; `ok`. The other end gets `pipeClosed`.
    case closePipe(pipe: PipeID)
    /// Relay (request id 0): the pipe is gone (the other end left, or a limit was broken).
    case pipeClosed(pipe: PipeID, code: SessionErrorCode)
    /// C→R, joins one of the channel's rooms (members only): its voice room, or its screen room as
    /// the sharer or a watcher; a connection is in at most one room. `maxLayer` (0…7, 7 = no cap)
    /// is the highest simulcast layer a screen watcher wants; voice and sharers send 7.
    case joinRoom(channel: ChannelID, transport: MediaTransport, purpose: RoomPurpose, maxLayer: UInt8)
    /// R→C, the answer to `joinRoom`: the token to bind a UDP address with (valid until
    /// `tokenExpiresAt` unless used; each bind extends it), the stream id the relay assigned to the
    /// caller's media, and the relay's UDP media port.
    case roomJoined(channel: ChannelID, token: MediaToken, streamID: UInt32, tokenExpiresAt: UInt64, mediaPort: UInt16)
    /// C→R, leaves the voice room.
    case leaveRoom(channel: ChannelID)
    /// C→R and R→C, one media-plane datagram (docs/PROTOCOL.md §4) on the session, for a
    /// participant that joined with transport `session`.
    case mediaDatagram([UInt8])
    /// R→C, pushed when the relay removed the caller from the room (left or kicked from the channel).
    case roomLeft(channel: ChannelID)

    public var type: RelayMessageType {
        switch self {
        case .challenge: .challenge
        case .authenticate: .authenticate
        case .ok: .ok
        case .error: .error
        case .publishPrekeys: .publishPrekeys
        case .fetchBundle: .fetchBundle
        case .bundle: .bundle
        case .countPrekeys: .countPrekeys
        case .prekeyCount: .prekeyCount
        case .sendDirect: .sendDirect
        case .directDelivery: .directDelivery
        case .acknowledgeDirect: .acknowledgeDirect
        case .createChannel: .createChannel
        case .createInvite: .createInvite
        case .invite: .invite
        case .redeemInvite: .redeemInvite
        case .joinChannel: .joinChannel
        case .channelJoined: .channelJoined
        case .leaveChannel: .leaveChannel
        case .kickMember: .kickMember
        case .setRole: .setRole
        case .listMembers: .listMembers
        case .members: .members
        case .sendChannel: .sendChannel
        case .channelDelivery: .channelDelivery
        case .acknowledgeChannel: .acknowledgeChannel
        case .fetchHistory: .fetchHistory
        case .membershipChanged: .membershipChanged
        case .openPipe: .openPipe
        case .pipeReady: .pipeReady
        case .pipeData: .pipeData
        case .pipeAck: .pipeAck
        case .closePipe: .closePipe
        case .pipeClosed: .pipeClosed
        case .joinRoom: .joinRoom
        case .roomJoined: .roomJoined
        case .leaveRoom: .leaveRoom
        case .mediaDatagram: .mediaDatagram
        case .roomLeft: .roomLeft
        }
    }

    /// Whether only the relay may send this message.
    public var isRelayToClient: Bool {
        switch type {
        case .challenge, .ok, .error, .bundle, .prekeyCount, .directDelivery, .invite, .channelJoined,
             .members, .channelDelivery, .membershipChanged, .pipeReady, .pipeClosed, .roomJoined, .roomLeft: true
        default: false
        }
    }

    // MARK: Parsing

    init(type: RelayMessageType, body r: inout ByteReader) throws {
        switch type {
        case .challenge:
            let nonce = try ChallengeNonce(reading: &r)
            let deadline = try r.readUInt64("deadline")
            let binding = try Self.readShortText(&r, "relay binding", limit: SessionLimits.maximumRelayBindingSize)
            guard !binding.isEmpty else { throw WireError.invalid(field: "relay binding", reason: "empty") }
            self = .challenge(nonce: nonce, deadline: deadline, relayBinding: binding)
        case .authenticate:
            self = .authenticate(identity: try IdentityKey(reading: &r), signature: try Ed25519Signature(reading: &r))
        case .ok:
            self = .ok
        case .error:
            let code = SessionErrorCode(rawValue: try r.readUInt16("error code"))
            self = .error(code: code, text: try Self.readShortText(&r, "error text", limit: SessionLimits.maximumErrorTextSize))
        case .publishPrekeys:
            let agreement = try Self.readAgreementKey(&r)
            let signed = try Self.readSignedPrekey(&r)
            let count = Int(try r.readUInt16("one-time prekey count"))
            guard count <= SessionLimits.maximumOneTimePrekeysPerUpload else {
                throw WireError.tooLarge(field: "one-time prekey count", size: count, limit: SessionLimits.maximumOneTimePrekeysPerUpload)
            }
            var keys: [OneTimePrekey] = []
            keys.reserveCapacity(count)
            for _ in 0..<count {
                keys.append(OneTimePrekey(id: try r.readUInt32("one-time prekey id"), key: try PrekeyPublicKey(reading: &r)))
            }
            guard Set(keys.map(\.id)).count == keys.count else {
                throw WireError.invalid(field: "one-time prekeys", reason: "duplicate id")
            }
            self = .publishPrekeys(agreement: agreement, signed: signed, oneTime: keys)
        case .fetchBundle:
            self = .fetchBundle(identity: try IdentityKey(reading: &r))
        case .bundle:
            let identity = try IdentityKey(reading: &r)
            let agreement = try Self.readAgreementKey(&r)
            let signed = try Self.readSignedPrekey(&r)
            let oneTime: OneTimePrekey?
            switch try r.readUInt8("one-time prekey flag") {
            case 0: oneTime = nil
            case 1: oneTime = OneTimePrekey(id: try r.readUInt32("one-time prekey id"), key: try PrekeyPublicKey(reading: &r))
            case let flag: throw WireError.invalid(field: "one-time prekey flag", reason: "\(flag) is not 0 or 1")
            }
            self = .bundle(PrekeyBundle(identity: identity, agreement: agreement, signedPrekey: signed, oneTimePrekey: oneTime))
        case .countPrekeys:
            self = .countPrekeys
        case .prekeyCount:
            self = .prekeyCount(try r.readUInt32("prekey count"))
        case .sendDirect:
            self = .sendDirect(recipient: try IdentityKey(reading: &r), blob: try Self.readBlob(&r, "blob", limit: SessionLimits.maximumBlobSize))
        case .directDelivery:
            self = .directDelivery(id: try MessageID(reading: &r), receivedAt: try r.readUInt64("received at"),
                                   blob: try Self.readBlob(&r, "blob", limit: SessionLimits.maximumBlobSize))
        case .acknowledgeDirect:
            let count = Int(try r.readUInt16("acknowledgement count"))
            guard count >= 1 else { throw WireError.invalid(field: "acknowledgement count", reason: "zero") }
            guard count <= SessionLimits.maximumAcknowledgementsPerFrame else {
                throw WireError.tooLarge(field: "acknowledgement count", size: count, limit: SessionLimits.maximumAcknowledgementsPerFrame)
            }
            var ids: [MessageID] = []
            ids.reserveCapacity(count)
            for _ in 0..<count { ids.append(try MessageID(reading: &r)) }
            self = .acknowledgeDirect(ids)
        case .createChannel:
            let channel = try ChannelID(reading: &r)
            let visibility = try Self.readVisibility(&r)
            self = .createChannel(channel: channel, visibility: visibility,
                                  metadata: try Self.readBlob(&r, "metadata", limit: SessionLimits.maximumMetadataSize))
        case .createInvite:
            let channel = try ChannelID(reading: &r)
            let uses = try r.readUInt16("invite uses")
            guard uses >= 1 else { throw WireError.invalid(field: "invite uses", reason: "zero") }
            guard Int(uses) <= SessionLimits.maximumInviteUses else {
                throw WireError.tooLarge(field: "invite uses", size: Int(uses), limit: SessionLimits.maximumInviteUses)
            }
            let ttl = try r.readUInt32("invite ttl")
            guard ttl >= 1 else { throw WireError.invalid(field: "invite ttl", reason: "zero") }
            guard ttl <= SessionLimits.maximumInviteTTLSeconds else {
                throw WireError.tooLarge(field: "invite ttl", size: Int(ttl), limit: Int(SessionLimits.maximumInviteTTLSeconds))
            }
            self = .createInvite(channel: channel, uses: uses, ttlSeconds: ttl)
        case .invite:
            self = .invite(token: try InviteToken(reading: &r), expiresAt: try r.readUInt64("expires at"))
        case .redeemInvite:
            self = .redeemInvite(token: try InviteToken(reading: &r))
        case .joinChannel:
            self = .joinChannel(channel: try ChannelID(reading: &r))
        case .channelJoined:
            let channel = try ChannelID(reading: &r)
            let visibility = try Self.readVisibility(&r)
            let role = try Self.readRole(&r)
            let joinedAfter = try r.readUInt64("joined after")
            self = .channelJoined(channel: channel, visibility: visibility, role: role, joinedAfter: joinedAfter,
                                  metadata: try Self.readBlob(&r, "metadata", limit: SessionLimits.maximumMetadataSize))
        case .leaveChannel:
            self = .leaveChannel(channel: try ChannelID(reading: &r))
        case .kickMember:
            self = .kickMember(channel: try ChannelID(reading: &r), member: try IdentityKey(reading: &r))
        case .setRole:
            self = .setRole(channel: try ChannelID(reading: &r), member: try IdentityKey(reading: &r), role: try Self.readRole(&r))
        case .listMembers:
            self = .listMembers(channel: try ChannelID(reading: &r))
        case .members:
            let channel = try ChannelID(reading: &r)
            let count = Int(try r.readUInt16("member count"))
            guard count <= SessionLimits.maximumMembersPerChannel else {
                throw WireError.tooLarge(field: "member count", size: count, limit: SessionLimits.maximumMembersPerChannel)
            }
            var list: [ChannelMember] = []
            list.reserveCapacity(count)
            for _ in 0..<count { list.append(ChannelMember(identity: try IdentityKey(reading: &r), role: try Self.readRole(&r))) }
            self = .members(channel: channel, list)
        case .sendChannel:
            self = .sendChannel(channel: try ChannelID(reading: &r), blob: try Self.readBlob(&r, "blob", limit: SessionLimits.maximumBlobSize))
        case .channelDelivery:
            self = .channelDelivery(channel: try ChannelID(reading: &r), sequence: try r.readUInt64("sequence"),
                                    receivedAt: try r.readUInt64("received at"),
                                    blob: try Self.readBlob(&r, "blob", limit: SessionLimits.maximumBlobSize))
        case .acknowledgeChannel:
            self = .acknowledgeChannel(channel: try ChannelID(reading: &r), throughSequence: try r.readUInt64("through sequence"))
        case .fetchHistory:
            let channel = try ChannelID(reading: &r)
            let after = try r.readUInt64("after sequence")
            let limit = try r.readUInt16("history limit")
            guard limit >= 1 else { throw WireError.invalid(field: "history limit", reason: "zero") }
            guard Int(limit) <= SessionLimits.maximumHistoryPage else {
                throw WireError.tooLarge(field: "history limit", size: Int(limit), limit: SessionLimits.maximumHistoryPage)
            }
            self = .fetchHistory(channel: channel, afterSequence: after, limit: limit)
        case .membershipChanged:
            let channel = try ChannelID(reading: &r)
            let member = try IdentityKey(reading: &r)
            let rawChange = try r.readUInt8("membership change")
            guard let change = MembershipChange(rawValue: rawChange) else {
                throw WireError.invalid(field: "membership change", reason: "unknown value \(rawChange)")
            }
            self = .membershipChanged(channel: channel, member: member, change: change, role: try Self.readRole(&r))
        case .openPipe:
            self = .openPipe(pipe: try PipeID(reading: &r))
        case .pipeReady:
            self = .pipeReady(pipe: try PipeID(reading: &r), bytesPerSecond: try r.readUInt64("bytes per second"))
        case .pipeData:
            let pipe = try PipeID(reading: &r)
            let length = Int(try r.readUInt32("pipe data length"))
            guard length >= 1 else { throw WireError.invalid(field: "pipe data", reason: "empty") }
            guard length <= SessionLimits.maximumPipeDataSize else {
                throw WireError.tooLarge(field: "pipe data", size: length, limit: SessionLimits.maximumPipeDataSize)
            }
            self = .pipeData(pipe: pipe, data: try r.readBytes(length, "pipe data"))
        case .pipeAck:
            self = .pipeAck(pipe: try PipeID(reading: &r), bytes: try r.readUInt32("acknowledged bytes"))
        case .closePipe:
            self = .closePipe(pipe: try PipeID(reading: &r))
        case .pipeClosed:
            self = .pipeClosed(pipe: try PipeID(reading: &r), code: SessionErrorCode(rawValue: try r.readUInt16("error code")))
        case .joinRoom:
            let channel = try ChannelID(reading: &r)
            let raw = try r.readUInt8("media transport")
            guard let transport = MediaTransport(rawValue: raw) else {
                throw WireError.invalid(field: "media transport", reason: "unknown value \(raw)")
            }
            let rawPurpose = try r.readUInt8("room purpose")
            guard let purpose = RoomPurpose(rawValue: rawPurpose) else {
                throw WireError.invalid(field: "room purpose", reason: "unknown value \(rawPurpose)")
            }
            let maxLayer = try r.readUInt8("maximum layer")
            guard maxLayer <= MediaLayers.noCap else {
                throw WireError.invalid(field: "maximum layer", reason: "\(maxLayer) is above \(MediaLayers.noCap)")
            }
            self = .joinRoom(channel: channel, transport: transport, purpose: purpose, maxLayer: maxLayer)
        case .roomJoined:
            self = .roomJoined(channel: try ChannelID(reading: &r), token: try MediaToken(reading: &r),
                               streamID: try r.readUInt32("stream id"), tokenExpiresAt: try r.readUInt64("token expires at"),
                               mediaPort: try r.readUInt16("media port"))
        case .leaveRoom:
            self = .leaveRoom(channel: try ChannelID(reading: &r))
        case .mediaDatagram:
            let length = Int(try r.readUInt16("media datagram length"))
            guard length >= 1 else { throw WireError.invalid(field: "media datagram", reason: "empty") }
            guard length <= MediaPlane.maxDatagramBytes else {
                throw WireError.tooLarge(field: "media datagram", size: length, limit: MediaPlane.maxDatagramBytes)
            }
            self = .mediaDatagram(try r.readBytes(length, "media datagram"))
        case .roomLeft:
            self = .roomLeft(channel: try ChannelID(reading: &r))
        }
    }

    /// A blob: u32 length, then that many bytes. The length must be a padding bucket no larger than
    /// `limit`, so the relay never holds anything finer-grained than a bucket.
    private static func readBlob(_ r: inout ByteReader, _ field: String, limit: Int) throws -> [UInt8] {
        let length = Int(try r.readUInt32("\(field) length"))
        guard length <= limit else { throw WireError.tooLarge(field: field, size: length, limit: limit) }
        guard SessionLimits.isPaddingBucket(length) else {
            throw WireError.invalid(field: field, reason: "\(length) bytes is not a padding bucket")
        }
        return try r.readBytes(length, field)
    }

    /// Short UTF-8 text: u8 length, then the bytes.
    private static func readShortText(_ r: inout ByteReader, _ field: String, limit: Int) throws -> String {
        let length = Int(try r.readUInt8("\(field) length"))
        guard length <= limit else { throw WireError.tooLarge(field: field, size: length, limit: limit) }
        let bytes = try r.readBytes(length, field)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw WireError.invalid(field: field, reason: "not UTF-8")
        }
        return text
    }

    private static func readSignedPrekey(_ r: inout ByteReader) throws -> SignedPrekey {
        SignedPrekey(id: try r.readUInt32("signed prekey id"), key: try PrekeyPublicKey(reading: &r),
                     signature: try Ed25519Signature(reading: &r))
    }

    private static func readAgreementKey(_ r: inout ByteReader) throws -> IdentityAgreementKey {
        IdentityAgreementKey(key: try PrekeyPublicKey(reading: &r), signature: try Ed25519Signature(reading: &r))
    }

    private static func readVisibility(_ r: inout ByteReader) throws -> ChannelVisibility {
        let raw = try r.readUInt8("visibility")
        guard let value = ChannelVisibility(rawValue: raw) else {
            throw WireError.invalid(field: "visibility", reason: "unknown value \(raw)")
        }
        return value
    }

    private static func readRole(_ r: inout ByteReader) throws -> ChannelRole {
        let raw = try r.readUInt8("role")
        guard let value = ChannelRole(rawValue: raw) else { throw WireError.invalid(field: "role", reason: "unknown value \(raw)") }
        return value
    }

    // MARK: Serialization

    func serializeBody(into w: inout ByteWriter) {
        switch self {
        case let .challenge(nonce, deadline, binding):
            w.write(nonce); w.write(deadline); Self.writeShortText(&w, binding, limit: SessionLimits.maximumRelayBindingSize)
        case let .authenticate(identity, signature):
            w.write(identity); w.write(signature)
        case .ok, .countPrekeys:
            break
        case let .error(code, text):
            w.write(code.rawValue); Self.writeShortText(&w, text, limit: SessionLimits.maximumErrorTextSize)
        case let .publishPrekeys(agreement, signed, oneTime):
            w.write(agreement.key); w.write(agreement.signature)
            Self.writeSignedPrekey(&w, signed)
            w.write(UInt16(clamping: oneTime.count))
            for key in oneTime.prefix(Int(UInt16.max)) { w.write(key.id); w.write(key.key) }
        case let .fetchBundle(identity):
            w.write(identity)
        case let .bundle(bundle):
            w.write(bundle.identity); w.write(bundle.agreement.key); w.write(bundle.agreement.signature)
            Self.writeSignedPrekey(&w, bundle.signedPrekey)
            if let key = bundle.oneTimePrekey { w.write(UInt8(1)); w.write(key.id); w.write(key.key) } else { w.write(UInt8(0)) }
        case let .prekeyCount(count):
            w.write(count)
        case let .sendDirect(recipient, blob):
            w.write(recipient); Self.writeBlob(&w, blob)
        case let .directDelivery(id, receivedAt, blob):
            w.write(id); w.write(receivedAt); Self.writeBlob(&w, blob)
        case let .acknowledgeDirect(ids):
            w.write(UInt16(clamping: ids.count))
            for id in ids.prefix(Int(UInt16.max)) { w.write(id) }
        case let .createChannel(channel, visibility, metadata):
            w.write(channel); w.write(visibility.rawValue); Self.writeBlob(&w, metadata)
        case let .createInvite(channel, uses, ttl):
            w.write(channel); w.write(uses); w.write(ttl)
        case let .invite(token, expiresAt):
            w.write(token); w.write(expiresAt)
        case let .redeemInvite(token):
            w.write(token)
        case let .joinChannel(channel), let .leaveChannel(channel), let .listMembers(channel),
             let .leaveRoom(channel), let .roomLeft(channel):
            w.write(channel)
        case let .joinRoom(channel, transport, purpose, maxLayer):
            w.write(channel); w.write(transport.rawValue); w.write(purpose.rawValue); w.write(maxLayer)
        case let .roomJoined(channel, token, streamID, expiresAt, mediaPort):
            w.write(channel); w.write(token); w.write(streamID); w.write(expiresAt); w.write(mediaPort)
        case let .mediaDatagram(datagram):
            w.write(UInt16(clamping: datagram.count)); w.write(bytes: datagram.prefix(Int(UInt16.max)))
        case let .channelJoined(channel, visibility, role, joinedAfter, metadata):
            w.write(channel); w.write(visibility.rawValue); w.write(role.rawValue); w.write(joinedAfter)
            Self.writeBlob(&w, metadata)
        case let .kickMember(channel, member):
            w.write(channel); w.write(member)
        case let .setRole(channel, member, role):
            w.write(channel); w.write(member); w.write(role.rawValue)
        case let .members(channel, list):
            w.write(channel); w.write(UInt16(clamping: list.count))
            for m in list.prefix(Int(UInt16.max)) { w.write(m.identity); w.write(m.role.rawValue) }
        case let .sendChannel(channel, blob):
            w.write(channel); Self.writeBlob(&w, blob)
        case let .channelDelivery(channel, sequence, receivedAt, blob):
            w.write(channel); w.write(sequence); w.write(receivedAt); Self.writeBlob(&w, blob)
        case let .acknowledgeChannel(channel, through):
            w.write(channel); w.write(through)
        case let .fetchHistory(channel, after, limit):
            w.write(channel); w.write(after); w.write(limit)
        case let .membershipChanged(channel, member, change, role):
            w.write(channel); w.write(member); w.write(change.rawValue); w.write(role.rawValue)
        case let .openPipe(pipe), let .closePipe(pipe):
            w.write(pipe)
        case let .pipeReady(pipe, rate):
            w.write(pipe); w.write(rate)
        case let .pipeData(pipe, data):
            w.write(pipe); w.write(UInt32(clamping: data.count)); w.write(bytes: data)
        case let .pipeAck(pipe, bytes):
            w.write(pipe); w.write(bytes)
        case let .pipeClosed(pipe, code):
            w.write(pipe); w.write(code.rawValue)
        }
    }

    private static func writeBlob(_ w: inout ByteWriter, _ blob: [UInt8]) {
        w.write(UInt32(clamping: blob.count)); w.write(bytes: blob)
    }

    /// Writes at most `limit` bytes, cut at a character boundary, so a long text still yields a
    /// frame that parses.
    private static func writeShortText(_ w: inout ByteWriter, _ text: String, limit: Int) {
        let bytes = truncatedUTF8(text, limit: limit)
        w.write(UInt8(bytes.count)); w.write(bytes: bytes)
    }

    /// The UTF-8 bytes of `text`, cut to at most `limit` bytes at a character boundary.
    static func truncatedUTF8(_ text: String, limit: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        for scalar in text.unicodeScalars {
            let encoded = Array(String(scalar).utf8)
            if bytes.count + encoded.count > limit { break }
            bytes += encoded
        }
        return bytes
    }

    private static func writeSignedPrekey(_ w: inout ByteWriter, _ key: SignedPrekey) {
        w.write(key.id); w.write(key.key); w.write(key.signature)
    }
}

/// The bytes a client signs to answer a challenge. Binding the relay's nonce, the relay's own
/// URL or identity and the deadline means a signature is good for one connection to one relay:
/// another relay that relays the challenge cannot reuse it, since its binding differs.
///
/// ```
/// "shroud-relay-auth-v1" ‖ 0x00 ‖ nonce (32) ‖ deadline (u64) ‖ binding length (u8) ‖ binding ‖ identity key (32)
/// ```
public enum AuthenticationTranscript {
    public static let domainLabel = "shroud-relay-auth-v1"

    public static func bytes(nonce: ChallengeNonce, deadline: UInt64, relayBinding: String, identity: IdentityKey) -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.write(bytes: Array(domainLabel.utf8)); w.write(UInt8(0))
        w.write(nonce); w.write(deadline)
        let binding = RelayMessage.truncatedUTF8(relayBinding, limit: SessionLimits.maximumRelayBindingSize)
        w.write(UInt8(binding.count)); w.write(bytes: binding)
        w.write(identity)
        return w.bytes
    }
}
