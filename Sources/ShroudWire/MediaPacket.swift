/// The media-plane datagrams (DESIGN.md §3, docs/PROTOCOL.md §4): one UDP datagram (or one
/// WebSocket binary message when UDP is blocked) carries exactly one of these.
///
/// Every datagram starts with the same first byte:
///
///      0 1 2 3 4 5 6 7
///     +-+-+-+-+-+-+-+-+
///     |V=1|T  | flags |
///     +-+-+-+-+-+-+-+-+
///
/// V is the version (1), T the kind (0 media, 1 NACK, 2 receiver report, 3 keyframe request) and
/// the four flag bits belong to the kind. Everything the relay reads is in this cleartext header;
/// the media payload is a fragment of an SFrame-encrypted frame that the relay only copies.
public enum MediaPlane {
    /// The only version this code writes and accepts.
    public static let version: UInt8 = 1
    /// The largest datagram Shroud sends or accepts: fits a 1280-byte IPv6 minimum MTU with room for
    /// IP/UDP headers and a tunnel, so media never relies on IP fragmentation.
    public static let maxDatagramBytes = 1_200
}

/// What a datagram is, from bits 2–3 of its first byte.
public enum MediaDatagramKind: UInt8, Sendable, CaseIterable {
    case media = 0
    case nack = 1
    case receiverReport = 2
    case keyframeRequest = 3
}

/// Simulcast/SVC layer of a stream: 0 is the base (lowest) layer.
public typealias MediaLayer = UInt8

/// One fragment of one encrypted frame.
///
///      0                   1                   2                   3
///      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |V=1|T=0|K|Layer| fragment index| fragment count|  reserved = 0 |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                           stream id                           |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                        sequence number                        |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                          frame number                         |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |         payload: fragment of the SFrame-encrypted frame       |
///     |                     (1 ... maxPayloadBytes)                   |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
/// K: the frame is a keyframe (every fragment repeats it). Layer: 0…7. The sequence number counts
/// packets of the stream (one per packet, retransmissions reuse it); the frame number counts frames.
/// Both are 32 bits and do not wrap in practice (50 packets/s: 2.7 years; 1,000/s: 49 days); a
/// sender starts a new stream id rather than wrap.
public struct MediaPacket: Hashable, Sendable {
    public static let headerBytes = 16
    public static let maxPayloadBytes = MediaPlane.maxDatagramBytes - headerBytes
    /// Fragments per frame: the count is one byte, so 255 × 1,184 bytes ≈ 295 KiB per frame, enough
    /// for a screen-share keyframe at 1080p.
    public static let maxFragmentsPerFrame = 255
    public static let maxFrameBytes = maxFragmentsPerFrame * maxPayloadBytes
    public static let maxLayer: MediaLayer = 7

    public var streamID: UInt32
    public var sequence: UInt32
    public var frameNumber: UInt32
    public var fragmentIndex: Int
    public var fragmentCount: Int
    public var isKeyframe: Bool
    public var layer: MediaLayer
    public var payload: [UInt8]

    /// Checks every field against the limits, so only valid packets exist.
    public init(streamID: UInt32, sequence: UInt32, frameNumber: UInt32, fragmentIndex: Int = 0,
                fragmentCount: Int = 1, isKeyframe: Bool = false, layer: MediaLayer = 0, payload: [UInt8]) throws {
        guard (1 ... Self.maxFragmentsPerFrame).contains(fragmentCount) else {
            throw WireError.invalid(field: "fragment count", reason: "\(fragmentCount) is outside 1...\(Self.maxFragmentsPerFrame)")
        }
        guard (0 ..< fragmentCount).contains(fragmentIndex) else {
            throw WireError.invalid(field: "fragment index", reason: "\(fragmentIndex) is not below the count \(fragmentCount)")
        }
        guard layer <= Self.maxLayer else {
            throw WireError.invalid(field: "layer", reason: "\(layer) is above \(Self.maxLayer)")
        }
        guard !payload.isEmpty else { throw WireError.invalid(field: "media payload", reason: "empty") }
        guard payload.count <= Self.maxPayloadBytes else {
            throw WireError.tooLarge(field: "media payload", size: payload.count, limit: Self.maxPayloadBytes)
        }
        self.streamID = streamID
        self.sequence = sequence
        self.frameNumber = frameNumber
        self.fragmentIndex = fragmentIndex
        self.fragmentCount = fragmentCount
        self.isKeyframe = isKeyframe
        self.layer = layer
        self.payload = payload
    }

    public var isFirstFragment: Bool { fragmentIndex == 0 }
    public var isLastFragment: Bool { fragmentIndex == fragmentCount - 1 }

    public init(parsing bytes: [UInt8]) throws {
        try MediaPlane.checkDatagramSize(bytes)
        var reader = ByteReader(bytes)
        let first = try MediaPlane.readFirstByte(&reader, expecting: .media)
        let index = Int(try reader.readUInt8("fragment index"))
        let count = Int(try reader.readUInt8("fragment count"))
        guard try reader.readUInt8("reserved") == 0 else {
            throw WireError.invalid(field: "reserved", reason: "must be zero")
        }
        let stream = try reader.readUInt32("stream id")
        let sequence = try reader.readUInt32("sequence number")
        let frame = try reader.readUInt32("frame number")
        try self.init(streamID: stream, sequence: sequence, frameNumber: frame, fragmentIndex: index,
                      fragmentCount: count, isKeyframe: first & 0b1000 != 0, layer: first & 0b0111,
                      payload: reader.readRest())
    }

    public func serialize(into writer: inout ByteWriter) {
        writer.write(MediaPlane.firstByte(.media, flags: (isKeyframe ? 0b1000 : 0) | layer))
        writer.write(UInt8(fragmentIndex))
        writer.write(UInt8(fragmentCount))
        writer.write(UInt8(0))
        writer.write(streamID)
        writer.write(sequence)
        writer.write(frameNumber)
        writer.write(bytes: payload)
    }

    public func serialized() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.headerBytes + payload.count)
        serialize(into: &writer)
        return writer.bytes
    }
}

/// The routing fields of a media packet, read in place without copying the payload: what the
/// relay needs per datagram on its hot path (stream, sequence, frame boundaries, keyframe, layer).
/// It accepts exactly the datagrams `MediaPacket(parsing:)` accepts.
public struct MediaRoutingHeader: Hashable, Sendable {
    public var streamID: UInt32
    public var sequence: UInt32
    public var frameNumber: UInt32
    public var fragmentIndex: Int
    public var fragmentCount: Int
    public var isKeyframe: Bool
    public var layer: MediaLayer
    public var payloadLength: Int

    public var isFirstFragment: Bool { fragmentIndex == 0 }
    public var isLastFragment: Bool { fragmentIndex == fragmentCount - 1 }

    public init(parsing datagram: UnsafeRawBufferPointer) throws {
        guard datagram.count <= MediaPlane.maxDatagramBytes else {
            throw WireError.tooLarge(field: "media datagram", size: datagram.count, limit: MediaPlane.maxDatagramBytes)
        }
        guard datagram.count >= 1 else { throw WireError.truncated(field: "media header", offset: 0, needed: 1) }
        let first = datagram[0]
        guard first >> 6 == MediaPlane.version else {
            throw WireError.invalid(field: "media version", reason: "\(first >> 6), expected \(MediaPlane.version)")
        }
        guard (first >> 4) & 0b11 == MediaDatagramKind.media.rawValue else {
            throw WireError.invalid(field: "media kind", reason: "\((first >> 4) & 0b11), expected 0")
        }
        guard datagram.count >= MediaPacket.headerBytes else {
            throw WireError.truncated(field: "media header", offset: datagram.count, needed: MediaPacket.headerBytes - datagram.count)
        }
        func word(_ at: Int) -> UInt32 {
            UInt32(datagram[at]) << 24 | UInt32(datagram[at + 1]) << 16 | UInt32(datagram[at + 2]) << 8 | UInt32(datagram[at + 3])
        }
        let index = Int(datagram[1]), count = Int(datagram[2])
        guard count >= 1 else { throw WireError.invalid(field: "fragment count", reason: "0 is outside 1...\(MediaPacket.maxFragmentsPerFrame)") }
        guard index < count else { throw WireError.invalid(field: "fragment index", reason: "\(index) is not below the count \(count)") }
        guard datagram[3] == 0 else { throw WireError.invalid(field: "reserved", reason: "must be zero") }
        guard datagram.count > MediaPacket.headerBytes else { throw WireError.invalid(field: "media payload", reason: "empty") }
        streamID = word(4)
        sequence = word(8)
        frameNumber = word(12)
        fragmentIndex = index
        fragmentCount = count
        isKeyframe = first & 0b1000 != 0
        layer = first & 0b0111
        payloadLength = datagram.count - MediaPacket.headerBytes
    }

    public init(parsing bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try MediaRoutingHeader(parsing: $0) }
    }
}

/// A receiver asks for packets it has not received (what the relay's retransmission cache answers).
///
///      0                   1                   2                   3
///      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |V=1|T=1|  0    |  entry count  |         reserved = 0          |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                           stream id                           |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                  first missing sequence number                | \
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  > entry, 1…maxEntries
///     |   bitmap of the 16 following sequence numbers (bit 0 = +1)    | /
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
/// Each entry is 6 bytes (the diagram shows the bitmap 16 bits wide in a 32-bit row for clarity; it
/// is 2 bytes on the wire), like RTCP's generic NACK (RFC 4585 §6.2.1) with 32-bit sequences.
/// `serialize` writes entries in ascending order with the fewest entries; parsing accepts any
/// order and `missing` is the sorted set.
public struct NackPacket: Hashable, Sendable {
    public static let headerBytes = 8
    public static let entryBytes = 6
    /// Entries per NACK: up to 17 × 32 = 544 sequence numbers, in 200 bytes.
    public static let maxEntries = 32

    public var streamID: UInt32
    /// The missing sequence numbers, ascending, no duplicates.
    public private(set) var missing: [UInt32]

    public init(streamID: UInt32, missing: [UInt32]) throws {
        let sorted = Array(Set(missing)).sorted()
        guard !sorted.isEmpty else { throw WireError.invalid(field: "NACK", reason: "no sequence numbers") }
        let entries = Self.entries(for: sorted)
        guard entries.count <= Self.maxEntries else {
            throw WireError.tooLarge(field: "NACK entries", size: entries.count, limit: Self.maxEntries)
        }
        self.streamID = streamID
        self.missing = sorted
    }

    private static func entries(for sorted: [UInt32]) -> [(first: UInt32, bitmap: UInt16)] {
        var entries: [(first: UInt32, bitmap: UInt16)] = []
        for sequence in sorted {
            if let last = entries.last, sequence > last.first, sequence - last.first <= 16 {
                entries[entries.count - 1].bitmap |= 1 << (sequence - last.first - 1)
            } else {
                entries.append((sequence, 0))
            }
        }
        return entries
    }

    public init(parsing bytes: [UInt8]) throws {
        try MediaPlane.checkDatagramSize(bytes)
        var reader = ByteReader(bytes)
        let first = try MediaPlane.readFirstByte(&reader, expecting: .nack)
        guard first & 0x0F == 0 else { throw WireError.invalid(field: "NACK flags", reason: "must be zero") }
        let count = Int(try reader.readUInt8("NACK entry count"))
        guard count >= 1 else { throw WireError.invalid(field: "NACK entry count", reason: "zero") }
        guard count <= Self.maxEntries else {
            throw WireError.tooLarge(field: "NACK entries", size: count, limit: Self.maxEntries)
        }
        guard try reader.readUInt16("reserved") == 0 else {
            throw WireError.invalid(field: "reserved", reason: "must be zero")
        }
        let stream = try reader.readUInt32("stream id")
        var missing: [UInt32] = []
        for _ in 0 ..< count {
            let base = try reader.readUInt32("NACK sequence number")
            let bitmap = try reader.readUInt16("NACK bitmap")
            missing.append(base)
            for bit in 0 ..< 16 where bitmap & (1 << bit) != 0 {
                let (value, overflow) = base.addingReportingOverflow(UInt32(bit + 1))
                guard !overflow else { throw WireError.invalid(field: "NACK bitmap", reason: "runs past the largest sequence number") }
                missing.append(value)
            }
        }
        guard reader.isAtEnd else {
            throw WireError.invalid(field: "NACK", reason: "\(reader.remaining) bytes after the last entry")
        }
        try self.init(streamID: stream, missing: missing)
    }

    public func serialize(into writer: inout ByteWriter) {
        let entries = Self.entries(for: missing)
        writer.write(MediaPlane.firstByte(.nack, flags: 0))
        writer.write(UInt8(entries.count))
        writer.write(UInt16(0))
        writer.write(streamID)
        for entry in entries {
            writer.write(entry.first)
            writer.write(entry.bitmap)
        }
    }

    public func serialized() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.headerBytes + Self.maxEntries * Self.entryBytes)
        serialize(into: &writer)
        return writer.bytes
    }
}

/// A receiver tells the sender how the stream arrives (the sender adapts bitrate and FEC).
///
///      0                   1                   2                   3
///      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |V=1|T=2|  0    | fraction lost |         reserved = 0          |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                           stream id                           |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                 highest sequence number received              |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                  cumulative packets lost                      |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |              inter-arrival jitter, microseconds               |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
/// Fraction lost: lost/expected since the previous report, in 1/256 (as RTCP, RFC 3550 §6.4.1).
public struct ReceiverReport: Hashable, Sendable {
    public static let encodedBytes = 20

    public var streamID: UInt32
    public var fractionLost: UInt8
    public var highestSequence: UInt32
    public var cumulativeLost: UInt32
    public var jitterMicroseconds: UInt32

    public init(streamID: UInt32, fractionLost: UInt8, highestSequence: UInt32, cumulativeLost: UInt32, jitterMicroseconds: UInt32) {
        self.streamID = streamID
        self.fractionLost = fractionLost
        self.highestSequence = highestSequence
        self.cumulativeLost = cumulativeLost
        self.jitterMicroseconds = jitterMicroseconds
    }

    public init(parsing bytes: [UInt8]) throws {
        try MediaPlane.checkExactSize(bytes, Self.encodedBytes, "receiver report")
        var reader = ByteReader(bytes)
        let first = try MediaPlane.readFirstByte(&reader, expecting: .receiverReport)
        guard first & 0x0F == 0 else { throw WireError.invalid(field: "receiver report flags", reason: "must be zero") }
        let fraction = try reader.readUInt8("fraction lost")
        guard try reader.readUInt16("reserved") == 0 else {
            throw WireError.invalid(field: "reserved", reason: "must be zero")
        }
        self.init(streamID: try reader.readUInt32("stream id"), fractionLost: fraction,
                  highestSequence: try reader.readUInt32("highest sequence number"),
                  cumulativeLost: try reader.readUInt32("cumulative lost"),
                  jitterMicroseconds: try reader.readUInt32("jitter"))
    }

    public func serialize(into writer: inout ByteWriter) {
        writer.write(MediaPlane.firstByte(.receiverReport, flags: 0))
        writer.write(fractionLost)
        writer.write(UInt16(0))
        writer.write(streamID)
        writer.write(highestSequence)
        writer.write(cumulativeLost)
        writer.write(jitterMicroseconds)
    }

    public func serialized() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.encodedBytes)
        serialize(into: &writer)
        return writer.bytes
    }
}

/// A receiver asks for a keyframe on one layer of a video stream (after loss it cannot repair, or
/// on joining).
///
///      0                   1                   2                   3
///      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |V=1|T=3|0|Layer|                 reserved = 0                  |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |                           stream id                           |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
public struct KeyframeRequest: Hashable, Sendable {
    public static let encodedBytes = 8

    public var streamID: UInt32
    public var layer: MediaLayer

    public init(streamID: UInt32, layer: MediaLayer = 0) throws {
        guard layer <= MediaPacket.maxLayer else {
            throw WireError.invalid(field: "layer", reason: "\(layer) is above \(MediaPacket.maxLayer)")
        }
        self.streamID = streamID
        self.layer = layer
    }

    public init(parsing bytes: [UInt8]) throws {
        try MediaPlane.checkExactSize(bytes, Self.encodedBytes, "keyframe request")
        var reader = ByteReader(bytes)
        let first = try MediaPlane.readFirstByte(&reader, expecting: .keyframeRequest)
        guard first & 0b1000 == 0 else { throw WireError.invalid(field: "keyframe request flags", reason: "bit 4 must be zero") }
        guard try reader.readBigEndian(3, "reserved") == 0 else {
            throw WireError.invalid(field: "reserved", reason: "must be zero")
        }
        try self.init(streamID: try reader.readUInt32("stream id"), layer: first & 0b0111)
    }

    public func serialize(into writer: inout ByteWriter) {
        writer.write(MediaPlane.firstByte(.keyframeRequest, flags: layer))
        writer.writeBigEndian(0, width: 3)
        writer.write(streamID)
    }

    public func serialized() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.encodedBytes)
        serialize(into: &writer)
        return writer.bytes
    }
}

/// Any media-plane datagram, dispatched on its kind.
public enum MediaDatagram: Hashable, Sendable {
    case media(MediaPacket)
    case nack(NackPacket)
    case receiverReport(ReceiverReport)
    case keyframeRequest(KeyframeRequest)

    /// Reads only the first byte: what the relay needs to route without parsing the rest.
    public static func kind(of bytes: [UInt8]) throws -> MediaDatagramKind {
        guard let first = bytes.first else { throw WireError.truncated(field: "media header", offset: 0, needed: 1) }
        guard first >> 6 == MediaPlane.version else {
            throw WireError.invalid(field: "media version", reason: "\(first >> 6), expected \(MediaPlane.version)")
        }
        // Two bits: every value is a kind.
        return MediaDatagramKind(rawValue: (first >> 4) & 0b11) ?? .media
    }

    public init(parsing bytes: [UInt8]) throws {
        switch try Self.kind(of: bytes) {
        case .media: self = .media(try MediaPacket(parsing: bytes))
        case .nack: self = .nack(try NackPacket(parsing: bytes))
        case .receiverReport: self = .receiverReport(try ReceiverReport(parsing: bytes))
        case .keyframeRequest: self = .keyframeRequest(try KeyframeRequest(parsing: bytes))
        }
    }

    public func serialized() -> [UInt8] {
        switch self {
        case let .media(p): return p.serialized()
        case let .nack(p): return p.serialized()
        case let .receiverReport(p): return p.serialized()
        case let .keyframeRequest(p): return p.serialized()
        }
    }
}

extension MediaPlane {
    static func firstByte(_ kind: MediaDatagramKind, flags: UInt8) -> UInt8 {
        version << 6 | kind.rawValue << 4 | (flags & 0x0F)
    }

    static func checkDatagramSize(_ bytes: [UInt8]) throws {
        guard bytes.count <= maxDatagramBytes else {
            throw WireError.tooLarge(field: "media datagram", size: bytes.count, limit: maxDatagramBytes)
        }
    }

    static func checkExactSize(_ bytes: [UInt8], _ size: Int, _ field: String) throws {
        if bytes.count < size { throw WireError.truncated(field: field, offset: bytes.count, needed: size - bytes.count) }
        if bytes.count > size { throw WireError.invalid(field: field, reason: "\(bytes.count) bytes, expected \(size)") }
    }

    /// Reads the first byte, checks version and kind, returns the byte (flags in the low 4 bits).
    static func readFirstByte(_ reader: inout ByteReader, expecting kind: MediaDatagramKind) throws -> UInt8 {
        let first = try reader.readUInt8("media header")
        guard first >> 6 == version else {
            throw WireError.invalid(field: "media version", reason: "\(first >> 6), expected \(version)")
        }
        guard (first >> 4) & 0b11 == kind.rawValue else {
            throw WireError.invalid(field: "media kind", reason: "\((first >> 4) & 0b11), expected \(kind.rawValue)")
        }
        return first
    }
}

/// A client binds its UDP address to its room participant by sending the media token from it; the
/// relay answers a valid bind with the same datagram marked `bound`, so the client learns that UDP
/// gets through (and can fall back to the WebSocket when it does not). The client repeats the bind
/// every few seconds to keep the binding (and any NAT mapping) fresh.
///
///      0                   1                   2                   3
///      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///     |1 1 0 0 0 0 0 A|       media token (16 bytes) ...              |
///     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
/// The first two bits are 3, a value media datagrams (V = 1) never have, so the relay tells the two
/// apart from the first byte. A = 0: bind (client → relay); A = 1: bound (relay → client).
/// Exactly 17 bytes: the answer is never larger than the request, so a forged source address
/// cannot turn the relay into an amplifier.
public struct MediaBind: Hashable, Sendable {
    public static let bindByte: UInt8 = 0xC0
    public static let boundByte: UInt8 = 0xC1
    public static let encodedBytes = 1 + MediaToken.size

    public var token: MediaToken
    /// False for the client's bind, true for the relay's answer.
    public var isAcknowledgement: Bool

    public init(token: MediaToken, isAcknowledgement: Bool = false) {
        self.token = token
        self.isAcknowledgement = isAcknowledgement
    }

    /// Whether the first byte says this is a bind or bound datagram (not a media-plane datagram).
    public static func isBind(firstByte: UInt8) -> Bool { firstByte >> 6 == 0b11 }

    public init(parsing datagram: UnsafeRawBufferPointer) throws {
        guard datagram.count == Self.encodedBytes else {
            throw WireError.invalid(field: "media bind", reason: "\(datagram.count) bytes, expected \(Self.encodedBytes)")
        }
        switch datagram[0] {
        case Self.bindByte: isAcknowledgement = false
        case Self.boundByte: isAcknowledgement = true
        case let other: throw WireError.invalid(field: "media bind", reason: "first byte 0x\(String(other, radix: 16))")
        }
        token = MediaToken(validated: Array(datagram[1...]))
    }

    public init(parsing bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try MediaBind(parsing: $0) }
    }

    public func serialized() -> [UInt8] {
        [isAcknowledgement ? Self.boundByte : Self.bindByte] + token.bytes
    }
}
