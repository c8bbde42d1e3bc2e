import ShroudWire
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A UDP peer address as fixed-size integers, so the relay's hot path hashes and compares it
/// without allocating. IPv4: `family` 4, the address in the low 32 bits of `low`, `high` 0.
/// IPv6: `family` 6, the 16 address bytes big-endian in `high` ‖ `low`.
public struct MediaAddress: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public var port: UInt16
    public var family: UInt8

    public init(high: UInt64 = 0, low: UInt64, port: UInt16, family: UInt8) {
        self.high = high; self.low = low; self.port = port; self.family = family
    }

    /// An IPv4 address from its four bytes in network order, packed into `a.b.c.d` order.
    public static func ipv4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8, port: UInt16) -> MediaAddress {
        MediaAddress(low: UInt64(a) << 24 | UInt64(b) << 16 | UInt64(c) << 8 | UInt64(d), port: port, family: 4)
    }

    public var description: String {
        if family == 4 { return "\(low >> 24 & 255).\(low >> 16 & 255).\(low >> 8 & 255).\(low & 255):\(port)" }
        return "[\(String(high, radix: 16)):\(String(low, radix: 16))]:\(port)"
    }
}

/// Limits of the media plane (docs/PROTOCOL.md §4, "Relay media plane").
public enum MediaLimits {
    /// Participants in one voice room. Equal to the channel member limit: every member may be in
    /// the call; the benchmark measures how many listeners one core serves.
    public static let maximumRoomSize = SessionLimits.maximumMembersPerChannel
    /// Datagrams per second one participant may send (media, NACKs, binds together), sustained, and
    /// the burst allowed above it. Voice sends 50 per second; a screen share's keyframe is up to 255
    /// packets at once; anything beyond is a misbehaving or hostile sender and is dropped.
    public static let maximumPacketsPerSecond = 1_000
    public static let packetBurst = 1_000
    /// A token is good for binding for this long after the join or the last bind; a binding with no
    /// bind datagram for this long is removed with its participant (who must join again).
    public static let bindingLifetimeMilliseconds: UInt64 = 30_000
    /// How often a client should repeat its bind (a sixth of the lifetime: five binds may be lost).
    public static let bindRefreshMilliseconds: UInt64 = 5_000
}

/// Per-reason counts of the media plane, merged into `RelayStatistics`.
public struct MediaStatistics: Sendable, Equatable {
    public var rooms = 0
    public var participants = 0
    public var bindings = 0
    public var packetsReceived = 0
    public var packetsForwarded = 0
    public var bindsAccepted = 0
    public var droppedUnbound = 0
    public var droppedMalformed = 0
    public var droppedOversized = 0
    public var droppedRateLimited = 0
    /// A media packet whose stream id is not the one the relay assigned to its sender.
    public var droppedForeignStream = 0
    /// NACK, receiver report or keyframe request for a stream not in the sender's room.
    public var droppedUnknownStream = 0
    public var nacksAnswered = 0
    public var retransmissionsSent = 0
    /// Sequence numbers asked for that the retransmission cache no longer held.
    public var retransmissionsGone = 0
    public init() {}
}

/// Where the router sends datagrams. The adapter implements it: the UDP adapter batches into
/// `sendmmsg`, the session core turns them into `mediaDatagram` frames. `forwardReceived` means
/// "send the datagram being handled, unchanged" (the adapter still holds it, so nothing is copied);
/// `send(copying:)` carries bytes valid only during the call (cache answers, bind answers).
public protocol MediaSink {
    mutating func forwardReceived(to address: MediaAddress)
    mutating func forwardReceived(toSession connection: ConnectionID)
    mutating func send(copying datagram: UnsafeRawBufferPointer, to address: MediaAddress)
    mutating func send(copying datagram: UnsafeRawBufferPointer, toSession connection: ConnectionID)
}

/// What a `join` gives the participant.
public struct MediaGrant: Equatable, Sendable {
    public var token: MediaToken
    public var streamID: UInt32
    public var tokenExpiresAt: UInt64
}

/// The voice rooms, sans-IO (docs/PROTOCOL.md §4): one room per channel, its participants, their
/// bound UDP addresses and one retransmission cache per sending stream. Forwarding is blind: only
/// the routing header is read; the rest is copied. Membership is checked by the caller (`Relay`)
/// before `join`; the router trusts it. Time is milliseconds since the Unix epoch, a parameter.
public struct MediaRoomCore {
    public enum JoinRefusal: Error, Equatable { case roomFull }

    private struct Participant {
        let connection: ConnectionID
        let room: UInt32
        let streamID: UInt32
        let token: MediaToken
        let transport: MediaTransport
        var address: MediaAddress?
        var lastRefresh: UInt64
        var bucket: TokenBucket
    }

    /// Who gets a room's packets: kept as a flat array, rebuilt on joins, leaves and binds, so a
    /// fan-out is one pass over contiguous memory.
    private struct Member {
        var connection: ConnectionID
        var address: MediaAddress?
        var transport: MediaTransport
    }

    private struct Room {
        let channel: ChannelID
        var members: [Member] = []
    }

    public let maximumRoomSize: Int
    private var participants: [ConnectionID: Participant] = [:]
    private var rooms: [UInt32: Room] = [:]
    private var roomOfChannel: [ChannelID: UInt32] = [:]
    private var connectionOfAddress: [MediaAddress: ConnectionID] = [:]
    private var connectionOfToken: [MediaToken: ConnectionID] = [:]
    private var connectionOfStream: [UInt32: ConnectionID] = [:]
    /// Created at a participant's first media packet: listeners cost no cache memory.
    private var caches: [UInt32: RetransmissionCache] = [:]
    private var nextRoom: UInt32 = 1
    private var nextStream: UInt32 = MediaLayers.streamBlockSize
    public private(set) var counters = MediaStatistics()

    public init(maximumRoomSize: Int = MediaLimits.maximumRoomSize) {
        self.maximumRoomSize = maximumRoomSize
    }

    public var statistics: MediaStatistics {
        var snapshot = counters
        snapshot.rooms = rooms.count
        snapshot.participants = participants.count
        snapshot.bindings = connectionOfAddress.count
        return snapshot
    }

    /// The channel whose room the connection is in.
    public func room(of connection: ConnectionID) -> ChannelID? {
        participants[connection].flatMap { rooms[$0.room]?.channel }
    }

    /// The connections in a channel's room, in join order.
    public func participants(in channel: ChannelID) -> [ConnectionID] {
        roomOfChannel[channel].flatMap { rooms[$0]?.members.map(\.connection) } ?? []
    }

    // MARK: Control (from the session core)

    /// Adds the connection to the channel's room (leaving any other room first). `token` is fresh
    /// randomness from the caller. Joining the same room again replaces the participant (new token
    /// and stream id), as after a reconnect.
    public mutating func join(channel: ChannelID, connection: ConnectionID, transport: MediaTransport,
                              token: MediaToken, now: UInt64) throws(JoinRefusal) -> MediaGrant {
        leave(connection: connection)
        let roomID = roomOfChannel[channel] ?? nextRoomID()
        var room = rooms[roomID] ?? Room(channel: channel)
        guard room.members.count < maximumRoomSize else {
            if room.members.isEmpty { rooms[roomID] = nil }
            throw .roomFull
        }
        roomOfChannel[channel] = roomID
        let streamID = nextStreamID()
        participants[connection] = Participant(
            connection: connection, room: roomID, streamID: streamID, token: token, transport: transport, address: nil,
            lastRefresh: now, bucket: TokenBucket(capacity: MediaLimits.packetBurst, perSecond: MediaLimits.maximumPacketsPerSecond, now: now))
        room.members.append(Member(connection: connection, address: nil, transport: transport))
        rooms[roomID] = room
        connectionOfToken[token] = connection
        connectionOfStream[streamID] = connection
        return MediaGrant(token: token, streamID: streamID, tokenExpiresAt: now + MediaLimits.bindingLifetimeMilliseconds)
    }

    /// Removes the connection from its room, if any; returns the channel it was in.
    @discardableResult
    public mutating func leave(connection: ConnectionID) -> ChannelID? {
        guard let participant = participants.removeValue(forKey: connection) else { return nil }
        if let address = participant.address { connectionOfAddress[address] = nil }
        connectionOfToken[participant.token] = nil
        connectionOfStream[participant.streamID] = nil
        for layer in 0 ..< MediaLayers.streamBlockSize { caches[participant.streamID + layer] = nil }
        guard var room = rooms[participant.room] else { return nil }
        room.members.removeAll { $0.connection == connection }
        if room.members.isEmpty {
            rooms[participant.room] = nil
            roomOfChannel[room.channel] = nil
        } else {
            rooms[participant.room] = room
        }
        return room.channel
    }

    /// Removes datagram participants whose token (unused) or binding (no bind for the lifetime)
    /// has lapsed; returns them, so the session core can tell them with `roomLeft`.
    public mutating func expire(now: UInt64) -> [(ConnectionID, ChannelID)] {
        let stale = participants.values.filter {
            $0.transport == .datagram && now > $0.lastRefresh + MediaLimits.bindingLifetimeMilliseconds
        }.map(\.connection).sorted()
        return stale.compactMap { connection in leave(connection: connection).map { (connection, $0) } }
    }

    // MARK: Datagrams

    /// One UDP datagram from `address`. Anything from an address no participant bound is dropped
    /// before any other work, except a bind.
    public mutating func receive(datagram: UnsafeRawBufferPointer, from address: MediaAddress, now: UInt64,
                                 into sink: inout some MediaSink) {
        counters.packetsReceived += 1
        guard let connection = connectionOfAddress[address] else {
            if datagram.count == MediaBind.encodedBytes, datagram[0] == MediaBind.bindByte {
                bind(datagram, from: address, now: now, into: &sink)
            } else {
                counters.droppedUnbound += 1
            }
            return
        }
        route(datagram, from: connection, now: now, into: &sink)
    }

    /// One `mediaDatagram` frame from a session connection (the WebSocket fallback).
    public mutating func receive(sessionDatagram datagram: UnsafeRawBufferPointer, from connection: ConnectionID, now: UInt64,
                                 into sink: inout some MediaSink) {
        counters.packetsReceived += 1
        guard let participant = participants[connection], participant.transport == .session else {
            counters.droppedUnbound += 1
            return
        }
        route(datagram, from: connection, now: now, into: &sink)
    }

    private mutating func route(_ datagram: UnsafeRawBufferPointer, from connection: ConnectionID, now: UInt64,
                                into sink: inout some MediaSink) {
        guard datagram.count <= MediaPlane.maxDatagramBytes else { counters.droppedOversized += 1; return }
        guard datagram.count >= 1 else { counters.droppedMalformed += 1; return }
        guard participants[connection]?.bucket.take(now: now) == true,
              let participant = participants[connection] else {
            counters.droppedRateLimited += 1
            return
        }
        if MediaBind.isBind(firstByte: datagram[0]) {
            if datagram.count == MediaBind.encodedBytes, datagram[0] == MediaBind.bindByte {
                bind(datagram, from: participant.address, now: now, into: &sink)
            } else {
                counters.droppedMalformed += 1
            }
            return
        }
        guard datagram[0] >> 6 == MediaPlane.version, let kind = MediaDatagramKind(rawValue: (datagram[0] >> 4) & 0b11) else {
            counters.droppedMalformed += 1
            return
        }
        switch kind {
        case .media:
            guard let header = try? MediaRoutingHeader(parsing: datagram) else { counters.droppedMalformed += 1; return }
            // A participant sends layer L on stream base + L (voice: layer 0, the base).
            guard header.streamID == participant.streamID &+ UInt32(header.layer) else { counters.droppedForeignStream += 1; return }
            if caches[header.streamID] == nil { caches[header.streamID] = try? RetransmissionCache() }
            // Cannot throw: the size was checked above.
            try? caches[header.streamID]?.store(sequence: header.sequence, datagram: datagram)
            fanOut(room: participant.room, except: connection, into: &sink)
        case .nack:
            guard let nack = try? NackPacket(parsing: Array(datagram)) else { counters.droppedMalformed += 1; return }
            guard let owner = connectionOfStream[Self.blockBase(nack.streamID)], participants[owner]?.room == participant.room,
                  let cache = caches[nack.streamID] else {
                counters.droppedUnknownStream += 1
                return
            }
            counters.nacksAnswered += 1
            for sequence in nack.missing {
                guard let bytes = cache.packet(sequence) else { counters.retransmissionsGone += 1; continue }
                bytes.withUnsafeBytes { sendCopy($0, to: participant, into: &sink) }
                counters.retransmissionsSent += 1
            }
        case .receiverReport, .keyframeRequest:
            // Feedback for the stream's sender; the relay reads only the stream id.
            let valid = kind == .receiverReport ? (try? ReceiverReport(parsing: Array(datagram))) != nil
                                                : (try? KeyframeRequest(parsing: Array(datagram))) != nil
            guard valid, datagram.count >= 8 else { counters.droppedMalformed += 1; return }
            let stream = UInt32(datagram[4]) << 24 | UInt32(datagram[5]) << 16 | UInt32(datagram[6]) << 8 | UInt32(datagram[7])
            guard let owner = connectionOfStream[Self.blockBase(stream)], owner != connection,
                  let target = participants[owner], target.room == participant.room else {
                counters.droppedUnknownStream += 1
                return
            }
            if target.transport == .session {
                sink.forwardReceived(toSession: owner); counters.packetsForwarded += 1
            } else if let address = target.address {
                sink.forwardReceived(to: address); counters.packetsForwarded += 1
            }
        }
    }

    private mutating func fanOut(room roomID: UInt32, except sender: ConnectionID, into sink: inout some MediaSink) {
        guard let room = rooms[roomID] else { return }
        var forwarded = 0
        for member in room.members where member.connection != sender {
            switch member.transport {
            case .datagram:
                guard let address = member.address else { continue }
                sink.forwardReceived(to: address)
            case .session:
                sink.forwardReceived(toSession: member.connection)
            }
            forwarded += 1
        }
        counters.packetsForwarded += forwarded
    }

    private mutating func sendCopy(_ bytes: UnsafeRawBufferPointer, to participant: Participant, into sink: inout some MediaSink) {
        switch participant.transport {
        case .datagram: if let address = participant.address { sink.send(copying: bytes, to: address) }
        case .session: sink.send(copying: bytes, toSession: participant.connection)
        }
    }

    /// A bind: the token names the participant; the source address becomes its binding (a new
    /// address, e.g. after a NAT rebinding, replaces the old one); the lifetime restarts; the
    /// relay answers with a bound datagram of the same size.
    private mutating func bind(_ datagram: UnsafeRawBufferPointer, from address: MediaAddress?, now: UInt64, into sink: inout some MediaSink) {
        guard let address, let bind = try? MediaBind(parsing: datagram),
              let connection = connectionOfToken[bind.token], var participant = participants[connection],
              participant.transport == .datagram, now <= participant.lastRefresh + MediaLimits.bindingLifetimeMilliseconds else {
            counters.droppedUnbound += 1
            return
        }
        if participant.address != address {
            if let old = participant.address { connectionOfAddress[old] = nil }
            // Another participant bound from this address before: the newer bind wins.
            if let previous = connectionOfAddress[address], previous != connection {
                participants[previous]?.address = nil
                setMemberAddress(previous, nil)
            }
            participant.address = address
            connectionOfAddress[address] = connection
            setMemberAddress(connection, address)
        }
        participant.lastRefresh = now
        participants[connection] = participant
        counters.bindsAccepted += 1
        let answer = MediaBind(token: bind.token, isAcknowledgement: true).serialized()
        answer.withUnsafeBytes { sink.send(copying: $0, to: address) }
    }

    private mutating func setMemberAddress(_ connection: ConnectionID, _ address: MediaAddress?) {
        guard let roomID = participants[connection]?.room,
              let index = rooms[roomID]?.members.firstIndex(where: { $0.connection == connection }) else { return }
        rooms[roomID]?.members[index].address = address
    }

    private mutating func nextRoomID() -> UInt32 {
        defer { nextRoom &+= 1 }
        return nextRoom
    }

    /// The base of a fresh block of `MediaLayers.streamBlockSize` stream ids (a multiple of the
    /// block size, never 0).
    private mutating func nextStreamID() -> UInt32 {
        // Skip blocks still in use after the counter wraps (after 500 million joins).
        while connectionOfStream[nextStream] != nil || nextStream == 0 { nextStream &+= MediaLayers.streamBlockSize }
        defer { nextStream &+= MediaLayers.streamBlockSize }
        return nextStream
    }

    /// The base of the stream-id block `stream` lies in.
    private static func blockBase(_ stream: UInt32) -> UInt32 { stream & ~(MediaLayers.streamBlockSize - 1) }
}

/// The room core shared by the session core (joins, leaves, WebSocket media) and the UDP adapter
/// (datagrams, on its own thread): every call takes the lock once; the UDP adapter holds it for a
/// whole `recvmmsg` batch. (A pthread mutex rather than `Synchronization.Mutex`, whose `sending`
/// closure cannot hand out `inout` access to a non-Sendable core.)
public final class MediaRouter: @unchecked Sendable {
    // `core` is touched only with `mutex` held.
    private var core: MediaRoomCore
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init(maximumRoomSize: Int = MediaLimits.maximumRoomSize) {
        core = MediaRoomCore(maximumRoomSize: maximumRoomSize)
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withCore<R, E: Error>(_ body: (inout MediaRoomCore) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&core)
    }

    public var statistics: MediaStatistics { withCore { $0.statistics } }
}
