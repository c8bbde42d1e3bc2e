import Crypto
import ShroudWire

/// Identifies one client connection inside the relay core. Assigned by `Relay.connect`.
public struct ConnectionID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt64
    /// Assigned by `Relay.connect`; public so that room-core tests and load generators can name
    /// participants without a session.
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: ConnectionID, b: ConnectionID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "#\(rawValue)" }
}

/// What the network adapter must do, in order, after each call into the core.
public enum RelayAction: Equatable, Sendable {
    /// Write one binary WebSocket frame. When the write completes, call `Relay.written`.
    case send(ConnectionID, [UInt8])
    /// Close the connection (after the frames sent before it). The core has already forgotten it.
    case close(ConnectionID)
    /// Send one media-plane datagram from the relay's UDP socket (WebSocket media for a UDP peer).
    case sendDatagram(MediaAddress, [UInt8])
}

/// The blind relay's session layer, sans-IO (docs/PROTOCOL.md §2). The adapter feeds it connection
/// events and frames with the current time (milliseconds since the Unix epoch) and carries out the
/// returned actions; `tick` must be called at or after `nextDeadline`.
///
/// Per connection: connected → (challenge sent) awaiting answer → authenticated → closed. Anything
/// but a valid `authenticate` before the deadline closes the connection with an error code.
///
/// The core is a class used from one thread (the adapter serialises calls); it holds the store.
public final class Relay {
    private enum Phase {
        case awaitingAnswer(nonce: ChallengeNonce, deadline: UInt64)
        case authenticated(IdentityKey)
    }

    private struct Connection {
        var address: String
        var phase: Phase
        var requests: TokenBucket
        var outboundFrames = 0
        var outboundBytes = 0
        /// Direct messages delivered and not yet acknowledged, and the highest sequence delivered.
        var directInFlight: Set<MessageID> = []
        var directCursor: UInt64 = 0
        /// For each channel the identity belongs to: the highest sequence delivered on this
        /// connection, and the delivered sequences not yet acknowledged.
        var channelCursor: [ChannelID: UInt64] = [:]
        var channelInFlight: [ChannelID: [UInt64]] = [:]
        /// Set when `pump` stopped because the outbound queue was half full; `written` resumes it.
        var deliveriesHeldBack = false

        /// Deliveries use at most half the outbound queue, leaving the rest for replies and
        /// notices; a connection with an empty queue may always take one (even a 4 MiB blob).
        func hasRoomForDelivery(of size: Int, limits: RelayLimits) -> Bool {
            outboundFrames == 0 || (outboundFrames < limits.maximumOutboundFrames / 2 && outboundBytes + size <= limits.maximumOutboundBytes / 2)
        }

        var identity: IdentityKey? {
            if case let .authenticated(key) = phase { return key }
            return nil
        }
        var inFlightCount: Int { directInFlight.count + channelInFlight.values.reduce(0) { $0 + $1.count } }
    }

    public let store: any RelayStore
    public let relayBinding: String
    public let limits: RelayLimits
    /// The voice rooms; shared with the UDP adapter, which forwards datagrams on its own thread.
    public let media: MediaRouter
    /// The UDP port announced in `roomJoined`; the relay executable sets it once the socket is bound.
    public var mediaPort: UInt16 = 0
    private var random: any RandomNumberGenerator
    private var connections: [ConnectionID: Connection] = [:]
    private var connectionsByAddress: [String: Int] = [:]
    private var connectionBuckets: [String: TokenBucket] = [:]
    private var connectionsByIdentity: [IdentityKey: Set<ConnectionID>] = [:]
    private var nextConnection: UInt64 = 1
    private var nextExpirySweep: UInt64 = 0
    private var actions: [RelayAction] = []
    private var counters = RelayStatistics()
    private var pipes: RelayPipes

    /// `relayBinding` is what clients sign to prove they meant this relay: its public URL (e.g.
    /// `wss://relay.example:8443/ws`) or identity, at most 255 bytes of UTF-8.
    public init(store: any RelayStore, relayBinding: String, limits: RelayLimits, random: some RandomNumberGenerator,
                media: MediaRouter = MediaRouter()) {
        self.media = media
        self.store = store
        self.relayBinding = relayBinding
        self.limits = limits
        self.random = random
        pipes = RelayPipes(limits: limits.pipes)
    }

    /// Relay pipes in the table (waiting for their second end or open).
    public var pipeCount: Int { pipes.count }

    public var connectionCount: Int { connections.count }

    /// Counts for `/admin/stats` and `/metrics`: totals since start and current gauges. Nothing in
    /// them identifies a user, a channel or a pair of correspondents.
    public var statistics: RelayStatistics {
        var snapshot = counters
        snapshot.connections = connections.count
        snapshot.authenticatedConnections = authenticatedCount
        snapshot.include(media.statistics)
        return snapshot
    }
    public var authenticatedCount: Int { connections.values.filter { $0.identity != nil }.count }

    /// The identity a connection authenticated as, if it has.
    public func identity(of connection: ConnectionID) -> IdentityKey? { connections[connection]?.identity }

    /// The earliest time `tick` has work to do: an authentication deadline or the expiry sweep.
    public var nextDeadline: UInt64 {
        var earliest = nextExpirySweep
        for connection in connections.values {
            if case let .awaitingAnswer(_, deadline) = connection.phase { earliest = min(earliest, deadline) }
        }
        return earliest
    }

    // MARK: Inputs

    /// A client connected from `address` (an IP address without port). Returns its id and the
    /// actions: the challenge, or an error and a close when a limit refuses it.
    public func connect(address: String, now: UInt64) -> (ConnectionID, [RelayAction]) {
        let id = ConnectionID(rawValue: nextConnection)
        nextConnection += 1
        var bucket = connectionBuckets[address]
            ?? TokenBucket(capacity: limits.connectionBurstPerIP, perSecond: limits.connectionsPerSecondPerIP, now: now)
        let allowed = bucket.take(now: now)
        connectionBuckets[address] = bucket
        if connections.count >= limits.maximumConnections || connectionsByAddress[address, default: 0] >= limits.maximumConnectionsPerIP {
            counters.connectionsRefused += 1
            return (id, refusal(id, .tooManyConnections, "connection limit reached"))
        }
        if !allowed {
            counters.connectionsRefused += 1
            return (id, refusal(id, .rateLimited, "too many new connections from this address"))
        }
        counters.connectionsAccepted += 1
        let nonce = ChallengeNonce(validated: randomBytes(ChallengeNonce.size))
        let deadline = now + limits.authenticationTimeoutMilliseconds
        connections[id] = Connection(address: address, phase: .awaitingAnswer(nonce: nonce, deadline: deadline),
                                     requests: TokenBucket(capacity: limits.requestBurst, perSecond: limits.requestsPerSecond, now: now))
        connectionsByAddress[address, default: 0] += 1
        send(id, SessionFrame(.challenge(nonce: nonce, deadline: deadline, relayBinding: relayBinding)))
        return (id, drain())
    }

    /// One binary frame from a client.
    public func receive(_ bytes: [UInt8], from id: ConnectionID, now: UInt64) -> [RelayAction] {
        guard let connection = connections[id] else { return [] }
        counters.framesReceived += 1
        let frame: SessionFrame
        do {
            frame = try SessionFrame(parsing: bytes)
        } catch {
            let wrongVersion = !bytes.isEmpty && bytes[0] != SessionLimits.protocolVersion
            let code: SessionErrorCode = wrongVersion ? .unsupportedVersion : .malformed
            fail(id, requestID: 0, code, "\(error)")
            return drain()
        }
        switch connection.phase {
        case let .awaitingAnswer(nonce, deadline):
            authenticate(id, frame, nonce: nonce, deadline: deadline, now: now)
        case let .authenticated(identity):
            if frame.message.isRelayToClient || frame.message.type == .authenticate {
                fail(id, requestID: frame.requestID, .unexpectedMessage, "\(frame.message.type) is not a client request")
            } else if case let .pipeData(pipe, data) = frame.message {
                // Stream data is limited per pipe in bytes, not by the request bucket.
                forwardInPipe(pipe, frame: frame, raw: bytes, dataBytes: data.count, from: id, rateLimited: true, now: now)
            } else if case let .pipeAck(pipe, _) = frame.message {
                forwardInPipe(pipe, frame: frame, raw: bytes, dataBytes: 0, from: id, rateLimited: false, now: now)
            } else if case let .mediaDatagram(datagram) = frame.message {
                // Media has its own per-sender rate limit in the room core, not the request bucket.
                forwardSessionMedia(datagram, from: id, now: now)
            } else if !connections[id, default: connection].requests.take(now: now) {
                counters.requestsRateLimited += 1
                send(id, SessionFrame(requestID: frame.requestID, .error(code: .rateLimited, text: "too many requests")))
            } else {
                do {
                    try handle(frame, from: id, identity: identity, now: now)
                } catch {
                    // A storage failure leaves the request without effect (each store call is atomic).
                    send(id, SessionFrame(requestID: frame.requestID, .error(code: .internalError, text: "storage failure")))
                }
            }
        }
        return drain()
    }

    /// Several frames, from any connections, in arrival order, under one store transaction (group
    /// commit, `RelayStore.batch`): the returned actions, the `ok`s included, exist only once that
    /// transaction committed. If the commit fails nothing of the batch is acknowledged: every
    /// connection that sent a frame in it or would have been written to is closed (and forgotten),
    /// so that no client and no cursor in memory believes in what the store does not hold; clients
    /// reconnect and resend what was not acknowledged.
    public func receive(batch frames: [(ConnectionID, [UInt8])], now: UInt64) -> [RelayAction] {
        var batchActions: [RelayAction] = []
        do {
            try store.batch {
                for (id, bytes) in frames { batchActions += receive(bytes, from: id, now: now) }
            }
            return batchActions
        } catch {
            var affected = Set(frames.map(\.0))
            // Media datagrams do not depend on the store: they still go out.
            var datagrams: [RelayAction] = []
            for action in batchActions {
                switch action {
                case let .send(id, _), let .close(id): affected.insert(id)
                case .sendDatagram: datagrams.append(action)
                }
            }
            // Connections the batch had already closed are closed here too: their own close was
            // among the discarded actions.
            return datagrams + affected.sorted().map { id in
                forget(id)
                return .close(id)
            }
        }
    }

    /// The adapter finished writing `bytes` (one frame) to the connection. Returns deliveries that
    /// were held back while the connection's outbound queue was half full.
    public func written(_ id: ConnectionID, bytes: Int) -> [RelayAction] {
        guard var connection = connections[id] else { return [] }
        connection.outboundFrames = max(0, connection.outboundFrames - 1)
        connection.outboundBytes = max(0, connection.outboundBytes - bytes)
        connections[id] = connection
        if connection.deliveriesHeldBack && connection.outboundFrames == 0 {
            connections[id]?.deliveriesHeldBack = false
            do { try pump(id) } catch { send(id, SessionFrame(.error(code: .internalError, text: "storage failure"))) }
        }
        return drain()
    }

    /// The connection closed (by the client or the network). Returns the notices to the other
    /// ends of its pipes.
    @discardableResult
    public func disconnected(_ id: ConnectionID) -> [RelayAction] {
        forget(id)
        return drain()
    }

    /// Closes connections whose authentication deadline passed and, every sweep interval, deletes
    /// expired messages and invites.
    public func tick(now: UInt64) -> [RelayAction] {
        for (id, connection) in connections.sorted(by: { $0.key < $1.key }) {
            if case let .awaitingAnswer(_, deadline) = connection.phase, now > deadline {
                fail(id, requestID: 0, .authenticationExpired, "no answer before the deadline")
            }
        }
        for (connection, channel) in media.withCore({ $0.expire(now: now) }) {
            send(connection, SessionFrame(.roomLeft(channel: channel)))
        }
        // Held-back keyframe requests of screen rooms (the UDP thread polls too; whichever comes
        // first sends them, once).
        var sink = SessionMediaSink(datagram: [])
        media.withCore { $0.poll(now: now, into: &sink) }
        carryOut(sink)
        if now >= nextExpirySweep {
            nextExpirySweep = now + limits.expirySweepIntervalMilliseconds
            _ = try? store.expire(now: now)
            connectionBuckets = connectionBuckets.filter { connectionsByAddress[$0.key] != nil }
        }
        return drain()
    }

    // MARK: Authentication

    private func authenticate(_ id: ConnectionID, _ frame: SessionFrame, nonce: ChallengeNonce, deadline: UInt64, now: UInt64) {
        guard case let .authenticate(identity, signature) = frame.message else {
            fail(id, requestID: frame.requestID, .notAuthenticated, "answer the challenge first")
            return
        }
        guard now <= deadline else {
            fail(id, requestID: frame.requestID, .authenticationExpired, "the challenge deadline passed")
            return
        }
        let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: relayBinding, identity: identity)
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: identity.bytes),
              key.isValidSignature(signature.bytes, for: transcript) else {
            fail(id, requestID: frame.requestID, .authenticationFailed, "signature does not verify")
            return
        }
        connections[id]?.phase = .authenticated(identity)
        connectionsByIdentity[identity, default: []].insert(id)
        send(id, SessionFrame(requestID: frame.requestID, .ok))
        do {
            for membership in try store.memberships(of: identity) {
                connections[id]?.channelCursor[membership.channel] = membership.acknowledgedThrough
            }
            try pump(id)
        } catch {
            send(id, SessionFrame(.error(code: .internalError, text: "storage failure")))
        }
    }

    // MARK: Requests

    private func handle(_ frame: SessionFrame, from id: ConnectionID, identity: IdentityKey, now: UInt64) throws {
        let request = frame.requestID
        func reply(_ message: RelayMessage) { send(id, SessionFrame(requestID: request, message)) }
        func refuse(_ code: SessionErrorCode, _ text: String) { reply(.error(code: code, text: text)) }

        switch frame.message {
        case let .publishPrekeys(agreement, signed, oneTime):
            // Checked here so that no bundle the relay hands out carries a key its identity did not
            // sign; the fetching client checks again against the key it pinned.
            guard let verifier = try? Curve25519.Signing.PublicKey(rawRepresentation: identity.bytes),
                  verifier.isValidSignature(agreement.signature.bytes, for: agreement.signedBytes) else {
                refuse(.invalidSignature, "the agreement key is not signed by the identity key")
                return
            }
            if try store.publishPrekeys(owner: identity, agreement: agreement, signed: signed, oneTime: oneTime,
                                        maximumOneTime: limits.maximumOneTimePrekeys) {
                reply(.ok)
            } else {
                refuse(.limitExceeded, "at most \(limits.maximumOneTimePrekeys) one-time prekeys")
            }
        case let .fetchBundle(owner):
            if let bundle = try store.takeBundle(owner: owner) { reply(.bundle(bundle)) } else { refuse(.notFound, "no prekeys published") }
        case .countPrekeys:
            reply(.prekeyCount(UInt32(clamping: try store.oneTimePrekeyCount(owner: identity))))

        case let .sendDirect(recipient, blob):
            let messageID = MessageID(validated: randomBytes(MessageID.size))
            // The store commits before the sender hears `ok`: an acknowledged message survives a crash.
            guard try store.enqueueDirect(id: messageID, recipient: recipient, receivedAt: now,
                                          expiresAt: now + limits.messageTTLMilliseconds, blob: blob,
                                          maximumQueued: limits.maximumQueuedPerRecipient) != nil else {
                refuse(.limitExceeded, "the recipient's queue is full")
                return
            }
            counters.directMessagesAccepted += 1
            reply(.ok)
            for connection in sortedConnections(of: recipient) { try pump(connection) }
        case let .acknowledgeDirect(ids):
            _ = try store.deleteDirect(recipient: identity, ids: ids)
            for connection in sortedConnections(of: identity) {
                for messageID in ids { connections[connection]?.directInFlight.remove(messageID) }
            }
            reply(.ok)
            for connection in sortedConnections(of: identity) { try pump(connection) }

        case let .createChannel(channel, visibility, metadata):
            guard let membership = try store.createChannel(id: channel, visibility: visibility, metadata: metadata, owner: identity) else {
                refuse(.alreadyExists, "channel id taken")
                return
            }
            reply(.channelJoined(channel: channel, visibility: visibility, role: .owner, joinedAfter: 0, metadata: metadata))
            for connection in sortedConnections(of: identity) { connections[connection]?.channelCursor[channel] = membership.acknowledgedThrough }
        case let .createInvite(channel, uses, ttl):
            guard let membership = try member(channel, identity, refuse) else { return }
            guard membership.role <= .admin else { refuse(.forbidden, "only an owner or admin can invite"); return }
            let token = InviteToken(validated: randomBytes(InviteToken.size))
            let expiresAt = now + UInt64(ttl) * 1000
            try store.createInvite(token: token, channel: channel, uses: Int(uses), expiresAt: expiresAt)
            reply(.invite(token: token, expiresAt: expiresAt))
        case let .redeemInvite(token):
            let outcome = try store.redeemInvite(token: token, member: identity, now: now, maximumMembers: limits.maximumMembersPerChannel)
            try finishJoin(outcome, identity: identity, reply: reply, refuse: refuse)
        case let .joinChannel(channel):
            guard let record = try store.channel(channel) else { refuse(.notFound, "no such channel"); return }
            guard record.visibility == .open else { refuse(.forbidden, "the channel needs an invite"); return }
            let outcome = try store.addMember(channel: channel, member: identity, role: .member, maximumMembers: limits.maximumMembersPerChannel)
            try finishJoin(outcome, identity: identity, reply: reply, refuse: refuse)
        case let .leaveChannel(channel):
            guard let membership = try member(channel, identity, refuse) else { return }
            if membership.role == .owner, try store.members(channel: channel).count > 1 {
                refuse(.forbidden, "the owner can leave only as the last member")
                return
            }
            try removeMember(channel, identity, change: .left, role: membership.role)
            reply(.ok)
        case let .kickMember(channel, target):
            guard let membership = try member(channel, identity, refuse) else { return }
            guard let targetMembership = try store.membership(channel: channel, member: target) else {
                refuse(.notFound, "not a member"); return
            }
            guard membership.role <= .admin, membership.role < targetMembership.role else {
                refuse(.forbidden, "only a higher role can kick"); return
            }
            try removeMember(channel, target, change: .kicked, role: targetMembership.role)
            reply(.ok)
        case let .setRole(channel, target, role):
            guard let membership = try member(channel, identity, refuse) else { return }
            guard membership.role == .owner, role != .owner, target != identity else {
                refuse(.forbidden, "only the owner sets roles, and not to owner"); return
            }
            guard try store.setRole(channel: channel, member: target, role: role) else { refuse(.notFound, "not a member"); return }
            reply(.ok)
            try announce(channel, .membershipChanged(channel: channel, member: target, change: .roleChanged, role: role))
        case let .listMembers(channel):
            guard try member(channel, identity, refuse) != nil else { return }
            reply(.members(channel: channel, try store.members(channel: channel)))
        case let .sendChannel(channel, blob):
            guard try member(channel, identity, refuse) != nil else { return }
            // Committed before `ok`, and stored without its sender.
            _ = try store.appendChannelMessage(channel: channel, receivedAt: now, expiresAt: now + limits.messageTTLMilliseconds, blob: blob)
            counters.channelMessagesAccepted += 1
            reply(.ok)
            for member in try store.members(channel: channel) {
                for connection in sortedConnections(of: member.identity) { try pump(connection) }
            }
        case let .acknowledgeChannel(channel, through):
            guard try member(channel, identity, refuse) != nil else { return }
            try store.acknowledgeChannel(channel: channel, member: identity, through: through)
            for connection in sortedConnections(of: identity) {
                connections[connection]?.channelInFlight[channel]?.removeAll { $0 <= through }
            }
            reply(.ok)
            for connection in sortedConnections(of: identity) { try pump(connection) }
        case let .fetchHistory(channel, after, limit):
            guard let membership = try member(channel, identity, refuse) else { return }
            // Never before the join: a member cannot read what was said before they were in.
            let messages = try store.channelMessages(channel: channel, afterSequence: max(after, membership.joinedAfter), limit: Int(limit))
            for message in messages {
                reply(.channelDelivery(channel: channel, sequence: message.sequence, receivedAt: message.receivedAt, blob: message.blob))
            }
            reply(.ok)
        case let .openPipe(pipe):
            switch pipes.open(pipe, by: id, now: now) {
            case .waiting:
                reply(.ok)
            case let .ready(other):
                reply(.ok)
                let ready = SessionFrame(.pipeReady(pipe: pipe, bytesPerSecond: limits.pipes.bytesPerSecond))
                send(other, ready)
                send(id, ready)
            case let .refused(code, text):
                refuse(code, text)
            }
        case let .closePipe(pipe):
            let (member, other) = pipes.close(pipe, by: id)
            guard member else { refuse(.notFound, "not in this pipe"); return }
            reply(.ok)
            if let other { send(other, SessionFrame(.pipeClosed(pipe: pipe, code: .pipeEnded))) }
        case .pipeData, .pipeAck:
            // Handled in `receive`, outside the request bucket.
            break
        case let .joinRoom(channel, transport, purpose, maxLayer):
            guard try member(channel, identity, refuse) != nil else { return }
            let token = MediaToken(validated: randomBytes(MediaToken.size))
            // A watcher joining on the session may make the selector ask the sharer for a keyframe.
            var sink = SessionMediaSink(datagram: [])
            do {
                let grant = try media.withCore { core throws(MediaRoomCore.JoinRefusal) in
                    let grant = try core.join(channel: channel, purpose: purpose, maximumLayer: maxLayer, connection: id,
                                              transport: transport, token: token, now: now)
                    core.poll(now: now, into: &sink)
                    return grant
                }
                reply(.roomJoined(channel: channel, token: grant.token, streamID: grant.streamID,
                                  tokenExpiresAt: grant.tokenExpiresAt, mediaPort: mediaPort))
                carryOut(sink)
            } catch .sharerPresent {
                refuse(.screenAlreadyShared, "another member is sharing a screen in this channel")
            } catch .roomFull {
                if purpose == .screenWatch {
                    refuse(.limitExceeded, "the screen room has \(media.withCore { $0.maximumWatchers }) watchers")
                } else {
                    refuse(.limitExceeded, "the voice room has \(media.withCore { $0.maximumRoomSize }) participants")
                }
            }
        case let .leaveRoom(channel):
            guard media.withCore({ $0.room(of: id) }) == channel else { refuse(.notMember, "not in a room of this channel"); return }
            media.withCore { _ = $0.leave(connection: id) }
            reply(.ok)
        case .mediaDatagram:
            // Handled in `receive`, outside the request rate limit.
            break
        case .challenge, .authenticate, .ok, .error, .bundle, .prekeyCount, .directDelivery, .invite, .channelJoined,
             .members, .channelDelivery, .membershipChanged, .pipeReady, .pipeClosed, .roomJoined, .roomLeft:
            // Filtered out by `receive` before reaching here.
            refuse(.unexpectedMessage, "not a client request")
        }
    }

    /// The caller's membership, or an error reply (`notFound` for an unknown channel, `notMember`).
    private func member(_ channel: ChannelID, _ identity: IdentityKey, _ refuse: (SessionErrorCode, String) -> Void) throws -> Membership? {
        if let membership = try store.membership(channel: channel, member: identity) { return membership }
        if try store.channel(channel) == nil { refuse(.notFound, "no such channel") } else { refuse(.notMember, "not a member of the channel") }
        return nil
    }

    private func finishJoin(_ outcome: JoinOutcome, identity: IdentityKey,
                            reply: (RelayMessage) -> Void, refuse: (SessionErrorCode, String) -> Void) throws {
        switch outcome {
        case let .joined(membership), let .alreadyMember(membership):
            guard let record = try store.channel(membership.channel) else { refuse(.notFound, "no such channel"); return }
            reply(.channelJoined(channel: record.id, visibility: record.visibility, role: membership.role,
                                 joinedAfter: membership.joinedAfter, metadata: record.metadata))
            guard case .joined = outcome else { return }
            for connection in sortedConnections(of: identity) {
                connections[connection]?.channelCursor[record.id] = membership.acknowledgedThrough
            }
            try announce(record.id, .membershipChanged(channel: record.id, member: identity, change: .joined, role: membership.role))
        case .channelNotFound: refuse(.notFound, "no such channel")
        case .inviteNotFound: refuse(.notFound, "no such invite")
        case .inviteExhausted: refuse(.inviteExhausted, "the invite has expired or has no uses left")
        case .channelFull: refuse(.limitExceeded, "the channel has \(limits.maximumMembersPerChannel) members")
        }
    }

    /// Removes a member, stops deliveries to their connections and tells everyone, the removed
    /// member included, so clients rotate their sender keys.
    private func removeMember(_ channel: ChannelID, _ target: IdentityKey, change: MembershipChange, role: ChannelRole) throws {
        let notice = RelayMessage.membershipChanged(channel: channel, member: target, change: change, role: role)
        guard try store.removeMember(channel: channel, member: target) else { return }
        for connection in sortedConnections(of: target) {
            connections[connection]?.channelCursor[channel] = nil
            connections[connection]?.channelInFlight[channel] = nil
            send(connection, SessionFrame(notice))
            // A former member leaves the voice room at once: no more media reaches them.
            if media.withCore({ $0.room(of: connection) }) == channel {
                media.withCore { _ = $0.leave(connection: connection) }
                send(connection, SessionFrame(.roomLeft(channel: channel)))
            }
        }
        try announce(channel, notice)
        for connection in sortedConnections(of: target) { try pump(connection) }
    }

    /// Pushes a message to every connected member of the channel.
    private func announce(_ channel: ChannelID, _ message: RelayMessage) throws {
        for member in try store.members(channel: channel) {
            for connection in sortedConnections(of: member.identity) { send(connection, SessionFrame(message)) }
        }
    }

    // MARK: Delivery

    /// Sends queued direct and channel messages to the connection until its delivery window is
    /// full. Called on authentication, on new messages and on acknowledgements.
    private func pump(_ id: ConnectionID) throws {
        guard let connection = connections[id], let identity = connection.identity, !connection.deliveriesHeldBack else { return }
        var room = limits.deliveryWindow - connection.inFlightCount
        guard room > 0 else { return }
        /// Sends one delivery if the outbound queue has room; otherwise marks the connection held back.
        func deliver(_ frame: SessionFrame) -> Bool {
            let bytes = frame.serialize()
            guard let current = connections[id], current.hasRoomForDelivery(of: bytes.count, limits: limits) else {
                connections[id]?.deliveriesHeldBack = true
                return false
            }
            sendSerialized(id, bytes)
            counters.deliveriesSent += 1
            room -= 1
            return true
        }
        for message in try store.pendingDirect(recipient: identity, afterSequence: connection.directCursor, limit: room) {
            guard deliver(SessionFrame(.directDelivery(id: message.id, receivedAt: message.receivedAt, blob: message.blob))) else { return }
            connections[id]?.directInFlight.insert(message.id)
            connections[id]?.directCursor = message.sequence
        }
        for (channel, cursor) in connection.channelCursor.sorted(by: { $0.key.bytes.lexicographicallyPrecedes($1.key.bytes) }) where room > 0 {
            for message in try store.channelMessages(channel: channel, afterSequence: cursor, limit: room) {
                guard deliver(SessionFrame(.channelDelivery(channel: channel, sequence: message.sequence,
                                                            receivedAt: message.receivedAt, blob: message.blob))) else { return }
                connections[id]?.channelCursor[channel] = message.sequence
                connections[id]?.channelInFlight[channel, default: []].append(message.sequence)
            }
        }
    }

    // MARK: Pipes

    /// Passes `pipeData` or `pipeAck` to the pipe's other end, unchanged when it came with request
    /// id 0 (as clients send it). A frame outside an open pipe gets an error; one past the
    /// pipe's byte rate closes the pipe for both ends.
    private func forwardInPipe(_ pipe: PipeID, frame: SessionFrame, raw: [UInt8], dataBytes: Int, from id: ConnectionID,
                               rateLimited: Bool, now: UInt64) {
        switch pipes.forward(pipe, bytes: dataBytes, from: id, rateLimited: rateLimited, now: now) {
        case let .forward(other):
            sendSerialized(other, frame.requestID == 0 ? raw : SessionFrame(frame.message).serialize())
        case let .refused(code, text):
            send(id, SessionFrame(requestID: frame.requestID, .error(code: code, text: text)))
        case let .closed(ends):
            for end in ends { send(end, SessionFrame(.pipeClosed(pipe: pipe, code: .rateLimited))) }
        }
    }

    // MARK: Media over the session (WebSocket fallback)

    /// A `mediaDatagram` frame from a participant that joined with transport `session`.
    private func forwardSessionMedia(_ datagram: [UInt8], from id: ConnectionID, now: UInt64) {
        var sink = SessionMediaSink(datagram: datagram)
        datagram.withUnsafeBytes { bytes in
            media.withCore { $0.receive(sessionDatagram: bytes, from: id, now: now, into: &sink) }
        }
        carryOut(sink)
    }

    /// Sends what the room core produced: session datagrams as frames, UDP ones as actions.
    private func carryOut(_ sink: SessionMediaSink) {
        for (connection, bytes) in sink.sessions { sendMedia(bytes, to: connection) }
        for (address, bytes) in sink.datagrams { actions.append(.sendDatagram(address, bytes)) }
    }

    /// A datagram from the UDP socket for a participant on the session transport. Like any frame,
    /// it counts against the connection's outbound queue (a slow reader is closed, not buffered).
    public func deliverMedia(_ datagram: [UInt8], to id: ConnectionID) -> [RelayAction] {
        sendMedia(datagram, to: id)
        return drain()
    }

    private func sendMedia(_ datagram: [UInt8], to id: ConnectionID) {
        send(id, SessionFrame(.mediaDatagram(datagram)))
    }

    // MARK: Plumbing

    private func sortedConnections(of identity: IdentityKey) -> [ConnectionID] {
        (connectionsByIdentity[identity] ?? []).sorted()
    }

    /// Queues a frame, or closes the connection when its outbound queue is past a limit: one slow
    /// reader is dropped rather than held in memory or waited on.
    private func send(_ id: ConnectionID, _ frame: SessionFrame) {
        sendSerialized(id, frame.serialize())
    }

    private func sendSerialized(_ id: ConnectionID, _ bytes: [UInt8]) {
        guard var connection = connections[id] else { return }
        if connection.outboundFrames + 1 > limits.maximumOutboundFrames || connection.outboundBytes + bytes.count > limits.maximumOutboundBytes {
            counters.slowConsumersClosed += 1
            forget(id)
            actions.append(.close(id))
            return
        }
        connection.outboundFrames += 1
        connection.outboundBytes += bytes.count
        connections[id] = connection
        actions.append(.send(id, bytes))
    }

    private func fail(_ id: ConnectionID, requestID: UInt32, _ code: SessionErrorCode, _ text: String) {
        actions.append(.send(id, SessionFrame(requestID: requestID, .error(code: code, text: text)).serialize()))
        actions.append(.close(id))
        forget(id)
    }

    private func refusal(_ id: ConnectionID, _ code: SessionErrorCode, _ text: String) -> [RelayAction] {
        [.send(id, SessionFrame(.error(code: code, text: text)).serialize()), .close(id)]
    }

    private func forget(_ id: ConnectionID) {
        guard let connection = connections.removeValue(forKey: id) else { return }
        for (pipe, other) in pipes.disconnected(id) { send(other, SessionFrame(.pipeClosed(pipe: pipe, code: .pipeEnded))) }
        media.withCore { _ = $0.leave(connection: id) }
        let remaining = connectionsByAddress[connection.address, default: 1] - 1
        connectionsByAddress[connection.address] = remaining > 0 ? remaining : nil
        if let identity = connection.identity {
            connectionsByIdentity[identity]?.remove(id)
            if connectionsByIdentity[identity]?.isEmpty == true { connectionsByIdentity[identity] = nil }
        }
    }

    private func drain() -> [RelayAction] {
        defer { actions.removeAll(keepingCapacity: true) }
        return actions
    }

    /// Eight bytes per call to the generator: with the system generator each call is a
    /// `getrandom` system call, which per byte cost more than the rest of a message's handling.
    private func randomBytes(_ count: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count + 7)
        while bytes.count < count {
            withUnsafeBytes(of: random.next()) { bytes.append(contentsOf: $0) }
        }
        return Array(bytes.prefix(count))
    }
}

/// Collects what the room core sends for one session datagram; the session path is the fallback,
/// so it may allocate.
struct SessionMediaSink: MediaSink {
    let datagram: [UInt8]
    var sessions: [(ConnectionID, [UInt8])] = []
    var datagrams: [(MediaAddress, [UInt8])] = []

    mutating func forwardReceived(to address: MediaAddress) { datagrams.append((address, datagram)) }
    mutating func forwardReceived(toSession connection: ConnectionID) { sessions.append((connection, datagram)) }
    mutating func send(copying datagram: UnsafeRawBufferPointer, to address: MediaAddress) { datagrams.append((address, Array(datagram))) }
    mutating func send(copying datagram: UnsafeRawBufferPointer, toSession connection: ConnectionID) {
        sessions.append((connection, Array(datagram)))
    }
}
