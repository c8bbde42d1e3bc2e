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
    /// Watchers in one screen room: the selector's viewer limit (each watcher costs a pass in the
    /// per-packet loop, so this bounds a sharer's fan-out).
    public static let maximumWatchers = LayerSelector.maxViewers
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
    public var screenRooms = 0
    public var screenWatchers = 0
    /// Watchers switched to another layer at a keyframe (including their first layer).
    public var layerSwitches = 0
    public var layerDownshifts = 0
    public var layerUpshifts = 0
    /// Keyframe requests the relay sent to sharers (its selectors' coalesced requests).
    public var keyframeRequestsSent = 0
    /// Keyframe requests watchers sent (fed to the selector, never forwarded).
    public var keyframeRequestsFromWatchers = 0
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

/// A channel has at most one room of each kind.
public enum RoomKind: UInt8, Sendable, CaseIterable {
    case voice
    case screen
}

extension RoomPurpose {
    public var roomKind: RoomKind { self == .voice ? .voice : .screen }
}

/// The media rooms, sans-IO (docs/PROTOCOL.md §4.7): one room per (channel, kind), its
/// participants, their bound UDP addresses and one retransmission cache per sending stream.
/// A voice room sends every member's media to every other member. A screen room has at most one
/// sharer and up to `MediaLimits.maximumWatchers` watchers; the sharer's media goes through the
/// room's `LayerSelector`, so each watcher receives one layer. Forwarding is blind: only the
/// routing header is read; the rest is copied. Membership is checked by the caller (`Relay`)
/// before `join`; the router trusts it. Time is milliseconds since the Unix epoch, a parameter.
///
/// Contract for screen rooms: after `join`, call `poll(now:into:)` (a session-transport watcher's
/// join asks the sharer for a keyframe); call it again at `nextDeadline` (held-back keyframe
/// requests). `receive` drains the selector itself (media, feedback, a UDP watcher's first bind).
public struct MediaRoomCore {
    public enum JoinRefusal: Error, Equatable {
        /// The voice room is at `maximumRoomSize`, or the screen room at its watcher limit.
        case roomFull
        /// Another connection is the screen room's sharer.
        case sharerPresent
    }

    private struct Participant {
        let connection: ConnectionID
        let room: UInt32
        let purpose: RoomPurpose
        let streamID: UInt32
        let token: MediaToken
        let transport: MediaTransport
        var address: MediaAddress?
        var lastRefresh: UInt64
        var bucket: TokenBucket
        /// A screen watcher's handle in the room's selector (nil until it can receive: at its
        /// first bind on UDP, at once on the session transport).
        var viewer: LayerSelector.Viewer?
    }

    /// Who gets a room's packets: kept as a flat array, rebuilt on joins, leaves and binds, so a
    /// fan-out is one pass over contiguous memory. A watcher's selector handle lives here too, so
    /// a screen packet's forwarding decision needs no lookup.
    private struct Member {
        var connection: ConnectionID
        var address: MediaAddress?
        var transport: MediaTransport
        var viewer: LayerSelector.Viewer?
        var maximumLayer: MediaLayer
    }

    private struct Room {
        let channel: ChannelID
        let kind: RoomKind
        var members: [Member] = []
        /// Screen rooms: the one sharer, its selector, and how many watchers joined.
        var sharer: ConnectionID?
        var selector: LayerSelector?
        var watchers = 0
    }

    private struct RoomKey: Hashable {
        let channel: ChannelID
        let kind: RoomKind
    }

    public let maximumRoomSize: Int
    public let maximumWatchers: Int
    private var participants: [ConnectionID: Participant] = [:]
    private var rooms: [UInt32: Room] = [:]
    private var roomOfChannel: [RoomKey: UInt32] = [:]
    /// Screen rooms, for `poll` and `nextDeadline` (voice rooms have nothing to poll).
    private var screenRooms: Set<UInt32> = []
    private var connectionOfAddress: [MediaAddress: ConnectionID] = [:]
    private var connectionOfToken: [MediaToken: ConnectionID] = [:]
    /// Keyed by the base of each participant's stream-id block.
    private var connectionOfStream: [UInt32: ConnectionID] = [:]
    /// Created at a stream's first media packet: listeners and watchers cost no cache memory.
    private var caches: [UInt32: RetransmissionCache] = [:]
    private var nextRoom: UInt32 = 1
    private var nextStream: UInt32 = MediaLayers.streamBlockSize
    public private(set) var counters = MediaStatistics()

    public init(maximumRoomSize: Int = MediaLimits.maximumRoomSize, maximumWatchers: Int = MediaLimits.maximumWatchers) {
        self.maximumRoomSize = maximumRoomSize
        self.maximumWatchers = min(maximumWatchers, LayerSelector.maxViewers)
    }

    public var statistics: MediaStatistics {
        var snapshot = counters
        snapshot.rooms = rooms.count
        snapshot.participants = participants.count
        snapshot.bindings = connectionOfAddress.count
        snapshot.screenRooms = screenRooms.count
        snapshot.screenWatchers = screenRooms.reduce(0) { $0 + (rooms[$1]?.watchers ?? 0) }
        return snapshot
    }

    /// The channel whose room the connection is in.
    public func room(of connection: ConnectionID) -> ChannelID? {
        participants[connection].flatMap { rooms[$0.room]?.channel }
    }

    /// Why the connection is in its room.
    public func purpose(of connection: ConnectionID) -> RoomPurpose? {
        participants[connection]?.purpose
    }

    /// The connections in a channel's room of that kind, in join order.
    public func participants(in channel: ChannelID, kind: RoomKind = .voice) -> [ConnectionID] {
        roomOfChannel[RoomKey(channel: channel, kind: kind)].flatMap { rooms[$0]?.members.map(\.connection) } ?? []
    }

    /// The layer a screen watcher receives now (nil before its first keyframe, or not a watcher).
    public func currentLayer(of connection: ConnectionID) -> MediaLayer? {
        guard let participant = participants[connection], let viewer = participant.viewer else { return nil }
        return rooms[participant.room]?.selector?.currentLayer(of: viewer)
    }

    // MARK: Control (from the session core)

    /// Adds the connection to the channel's room for `purpose` (leaving any other room first).
    /// `token` is fresh randomness from the caller. Joining the same room again replaces the
    /// participant (new token and stream block), as after a reconnect. A refused join leaves the
    /// connection where it was. `maximumLayer` is a watcher's cap (0…7); others ignore it.
    public mutating func join(channel: ChannelID, purpose: RoomPurpose = .voice, maximumLayer: MediaLayer = MediaLayers.noCap,
                              connection: ConnectionID, transport: MediaTransport,
                              token: MediaToken, now: UInt64) throws(JoinRefusal) -> MediaGrant {
        let key = RoomKey(channel: channel, kind: purpose.roomKind)
        if let existing = roomOfChannel[key], let room = rooms[existing] {
            let inside = participants[connection]?.room == existing
            switch purpose {
            case .voice:
                if room.members.count - (inside ? 1 : 0) >= maximumRoomSize { throw .roomFull }
            case .screenShare:
                if let sharer = room.sharer, sharer != connection { throw .sharerPresent }
            case .screenWatch:
                let watching = inside && participants[connection]?.purpose == .screenWatch
                if room.watchers - (watching ? 1 : 0) >= maximumWatchers { throw .roomFull }
            }
        } else if (purpose == .screenWatch ? maximumWatchers : maximumRoomSize) < 1 {
            throw .roomFull
        }
        leave(connection: connection)
        let roomID = roomOfChannel[key] ?? nextRoomID()
        var room = rooms[roomID] ?? Room(channel: channel, kind: key.kind, selector: key.kind == .screen ? LayerSelector() : nil)
        roomOfChannel[key] = roomID
        if key.kind == .screen { screenRooms.insert(roomID) }
        let streamID = nextStreamID()
        let layer = min(maximumLayer, MediaLayers.noCap)
        var participant = Participant(
            connection: connection, room: roomID, purpose: purpose, streamID: streamID, token: token, transport: transport,
            address: nil, lastRefresh: now,
            bucket: TokenBucket(capacity: MediaLimits.packetBurst, perSecond: MediaLimits.maximumPacketsPerSecond, now: now))
        var member = Member(connection: connection, address: nil, transport: transport, viewer: nil, maximumLayer: layer)
        switch purpose {
        case .voice:
            break
        case .screenShare:
            room.sharer = connection
            // A new sharer starts a new selector: layers and stream ids are learned afresh, and
            // every watcher that can receive waits for the new sharer's first keyframe.
            var selector = LayerSelector()
            for index in room.members.indices where room.members[index].viewer != nil {
                let viewer = try? selector.addViewer(maximumLayer: room.members[index].maximumLayer, now: Self.time(now))
                room.members[index].viewer = viewer
                participants[room.members[index].connection]?.viewer = viewer
            }
            room.selector = selector
        case .screenWatch:
            room.watchers += 1
            // Over UDP the watcher becomes a viewer at its first bind: a keyframe asked for before
            // it can receive would be wasted.
            if transport == .session {
                // Cannot fail: watchers ≤ maximumWatchers ≤ the selector's limit, layer ≤ 7.
                let viewer = try? room.selector?.addViewer(maximumLayer: layer, now: Self.time(now))
                member.viewer = viewer
                participant.viewer = viewer
            }
        }
        participants[connection] = participant
        room.members.append(member)
        rooms[roomID] = room
        connectionOfToken[token] = connection
        connectionOfStream[streamID] = connection
        return MediaGrant(token: token, streamID: streamID, tokenExpiresAt: now + MediaLimits.bindingLifetimeMilliseconds)
    }

    /// Removes the connection from its room, if any; returns the channel it was in. A sharer
    /// leaving leaves its watchers in the room, waiting for the next sharer.
    @discardableResult
    public mutating func leave(connection: ConnectionID) -> ChannelID? {
        guard let participant = participants.removeValue(forKey: connection) else { return nil }
        if let address = participant.address { connectionOfAddress[address] = nil }
        connectionOfToken[participant.token] = nil
        connectionOfStream[participant.streamID] = nil
        for layer in 0 ..< MediaLayers.streamBlockSize { caches[participant.streamID + layer] = nil }
        guard var room = rooms[participant.room] else { return nil }
        room.members.removeAll { $0.connection == connection }
        if let viewer = participant.viewer { room.selector?.removeViewer(viewer) }
        if participant.purpose == .screenWatch { room.watchers -= 1 }
        if room.sharer == connection { room.sharer = nil }
        if room.members.isEmpty {
            rooms[participant.room] = nil
            roomOfChannel[RoomKey(channel: room.channel, kind: room.kind)] = nil
            screenRooms.remove(participant.room)
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

    // MARK: Periodic work (screen rooms)

    /// Sends what the screen rooms' selectors have due: keyframe requests to sharers.
    public mutating func poll(now: UInt64, into sink: inout some MediaSink) {
        for roomID in screenRooms { drainSelector(roomID, now: now, into: &sink) }
    }

    /// When `poll` next has something to send, if a held-back keyframe request is waiting
    /// (milliseconds, rounded up).
    public var nextDeadline: UInt64? {
        var earliest: UInt64?
        for roomID in screenRooms {
            guard let due = rooms[roomID]?.selector?.nextDeadline else { continue }
            let (seconds, attoseconds) = due.components
            let milliseconds = UInt64(max(0, seconds)) * 1000 + UInt64(max(0, attoseconds) + 999_999_999_999_999) / 1_000_000_000_000_000
            earliest = min(earliest ?? .max, milliseconds)
        }
        return earliest
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
            // A watcher has nothing to send: its media is someone else's stream in this room.
            guard header.streamID == participant.streamID &+ UInt32(header.layer), participant.purpose != .screenWatch else {
                counters.droppedForeignStream += 1
                return
            }
            if caches[header.streamID] == nil { caches[header.streamID] = try? RetransmissionCache() }
            // Cannot throw: the size was checked above.
            try? caches[header.streamID]?.store(sequence: header.sequence, datagram: datagram)
            if participant.purpose == .screenShare {
                forwardShare(header, room: participant.room, now: now, into: &sink)
            } else {
                fanOut(room: participant.room, except: connection, into: &sink)
            }
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
            // Feedback for the stream's sender; the relay reads only the stream id (and, in a
            // screen room, the loss fraction, which drives the watcher's layer).
            let report = kind == .receiverReport ? try? ReceiverReport(parsing: Array(datagram)) : nil
            let valid = kind == .receiverReport ? report != nil : (try? KeyframeRequest(parsing: Array(datagram))) != nil
            guard valid, datagram.count >= 8 else { counters.droppedMalformed += 1; return }
            let stream = UInt32(datagram[4]) << 24 | UInt32(datagram[5]) << 16 | UInt32(datagram[6]) << 8 | UInt32(datagram[7])
            guard let owner = connectionOfStream[Self.blockBase(stream)], owner != connection,
                  let target = participants[owner], target.room == participant.room else {
                counters.droppedUnknownStream += 1
                return
            }
            if participant.purpose != .voice {
                // Screen room: only watchers give feedback, and only about the sharer's streams.
                guard participant.purpose == .screenWatch, target.purpose == .screenShare else {
                    counters.droppedUnknownStream += 1
                    return
                }
                screenFeedback(report: report, from: participant, now: now, into: &sink)
                // Keyframe requests go to the sharer only as the selector's coalesced requests.
                guard report != nil else { return }
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

    /// A sharer's packet: the selector learns from its header (and switches watchers at
    /// keyframes), then each watcher whose current layer it is gets it. The loop reads the flat
    /// member array and the selector's fixed arrays: no allocation per packet.
    private mutating func forwardShare(_ header: MediaRoutingHeader, room roomID: UInt32, now: UInt64, into sink: inout some MediaSink) {
        rooms[roomID]?.selector?.observe(header, now: Self.time(now))
        do {
            // Scoped, so the copy is released before the selector is mutated again (no COW copy).
            guard let room = rooms[roomID], let selector = room.selector else { return }
            var forwarded = 0
            for member in room.members {
                guard let viewer = member.viewer, selector.forwards(header, to: viewer) else { continue }
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
        drainSelector(roomID, now: now, into: &sink)
    }

    /// A watcher's receiver report or keyframe request, for the room's selector.
    private mutating func screenFeedback(report: ReceiverReport?, from watcher: Participant, now: UInt64, into sink: inout some MediaSink) {
        guard let viewer = watcher.viewer, let before = rooms[watcher.room]?.selector?.statistics else { return }
        if let report {
            rooms[watcher.room]?.selector?.receiverReport(fractionLost: report.fractionLost, from: viewer, now: Self.time(now))
        } else {
            counters.keyframeRequestsFromWatchers += 1
            rooms[watcher.room]?.selector?.keyframeWanted(by: viewer)
        }
        if let after = rooms[watcher.room]?.selector?.statistics {
            counters.layerDownshifts += after.downshifts - before.downshifts
            counters.layerUpshifts += after.upshifts - before.upshifts
        }
        drainSelector(watcher.room, now: now, into: &sink)
    }

    /// Carries out a screen room's selector outputs: keyframe requests go to the sharer (if it is
    /// there and reachable), switches are counted.
    private mutating func drainSelector(_ roomID: UInt32, now: UInt64, into sink: inout some MediaSink) {
        while let output = rooms[roomID]?.selector?.pollOutput(now: Self.time(now)) {
            switch output {
            case let .keyframeRequest(request):
                guard let sharer = rooms[roomID]?.sharer, let target = participants[sharer] else { continue }
                counters.keyframeRequestsSent += 1
                request.serialized().withUnsafeBytes { sendCopy($0, to: target, into: &sink) }
            case .switched:
                counters.layerSwitches += 1
            }
        }
    }

    private static func time(_ milliseconds: UInt64) -> Duration {
        .milliseconds(Int64(clamping: milliseconds))
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
            if participant.purpose == .screenWatch, participant.viewer == nil {
                // The watcher can receive now: the selector picks its layer and asks the sharer
                // for a keyframe (coalesced with other joiners').
                let viewer = addViewer(connection, room: participant.room, now: now)
                participant.viewer = viewer
            }
        }
        participant.lastRefresh = now
        participants[connection] = participant
        counters.bindsAccepted += 1
        let answer = MediaBind(token: bind.token, isAcknowledgement: true).serialized()
        answer.withUnsafeBytes { sink.send(copying: $0, to: address) }
        if participant.purpose == .screenWatch { drainSelector(participant.room, now: now, into: &sink) }
    }

    /// Adds a watcher to its room's selector and stores the handle in the member array.
    private mutating func addViewer(_ connection: ConnectionID, room roomID: UInt32, now: UInt64) -> LayerSelector.Viewer? {
        guard let index = rooms[roomID]?.members.firstIndex(where: { $0.connection == connection }),
              let layer = rooms[roomID]?.members[index].maximumLayer else { return nil }
        // Cannot fail: watchers ≤ maximumWatchers ≤ the selector's limit, and layer ≤ 7.
        let viewer = try? rooms[roomID]?.selector?.addViewer(maximumLayer: layer, now: Self.time(now))
        rooms[roomID]?.members[index].viewer = viewer
        return viewer
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

    public init(maximumRoomSize: Int = MediaLimits.maximumRoomSize, maximumWatchers: Int = MediaLimits.maximumWatchers) {
        core = MediaRoomCore(maximumRoomSize: maximumRoomSize, maximumWatchers: maximumWatchers)
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
