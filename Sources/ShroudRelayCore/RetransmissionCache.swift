import ShroudWire

/// The relay's memory of the last packets of one media stream, so it can answer a receiver's NACK
/// itself instead of asking the sender (issue 5, item 4). The relay stores the datagram bytes as
/// they came, still encrypted; it never looks past the routing header.
///
/// A fixed ring of `capacity` slots, each with a buffer of `MediaPlane.maxDatagramBytes` allocated
/// once at creation: storing a packet copies its bytes into the slot for sequence % capacity and
/// allocates nothing. A slot answers only for the exact sequence number it holds, so an old packet
/// overwritten by a newer one is reported as gone, never returned in its place.
public struct RetransmissionCache: Sendable {
    /// Default slots: 512 packets = 10 s of 20 ms voice, or about half a second of 1,000-packet/s
    /// screen video; a NACK older than that is past any playout deadline anyway.
    public static let defaultCapacity = 512
    /// Largest capacity accepted (memory: capacity × 1,200 bytes per stream = 4.7 MiB at the limit).
    public static let maxCapacity = 4_096

    public let capacity: Int
    private var storage: [UInt8]
    private var lengths: [Int]
    private var sequences: [UInt32]
    /// Packets stored since creation.
    public private(set) var stored = 0

    public init(capacity: Int = RetransmissionCache.defaultCapacity) throws {
        guard (1 ... Self.maxCapacity).contains(capacity) else {
            throw WireError.invalid(field: "retransmission cache capacity", reason: "\(capacity) is outside 1...\(Self.maxCapacity)")
        }
        self.capacity = capacity
        storage = [UInt8](repeating: 0, count: capacity * MediaPlane.maxDatagramBytes)
        lengths = [Int](repeating: 0, count: capacity)
        sequences = [UInt32](repeating: 0, count: capacity)
    }

    /// Keeps a copy of a media datagram (its routing header already parsed by the caller).
    /// Throws only for a datagram above the size limit, which the relay has rejected before.
    public mutating func store(sequence: UInt32, datagram: some Collection<UInt8>) throws {
        guard datagram.count <= MediaPlane.maxDatagramBytes else {
            throw WireError.tooLarge(field: "media datagram", size: datagram.count, limit: MediaPlane.maxDatagramBytes)
        }
        let slot = Int(sequence % UInt32(capacity))
        let start = slot * MediaPlane.maxDatagramBytes
        storage.withUnsafeMutableBufferPointer { buffer in
            _ = UnsafeMutableBufferPointer(rebasing: buffer[start ..< start + datagram.count]).initialize(from: datagram)
        }
        lengths[slot] = datagram.count
        sequences[slot] = sequence
        stored += 1
    }

    /// Whether the packet with this sequence number is still held.
    public func contains(_ sequence: UInt32) -> Bool {
        let slot = Int(sequence % UInt32(capacity))
        return lengths[slot] > 0 && sequences[slot] == sequence
    }

    /// The bytes of one held packet, or nil when it was never stored or has been overwritten.
    public func packet(_ sequence: UInt32) -> ArraySlice<UInt8>? {
        guard contains(sequence) else { return nil }
        let slot = Int(sequence % UInt32(capacity))
        let start = slot * MediaPlane.maxDatagramBytes
        return storage[start ..< start + lengths[slot]]
    }

    /// Answers a NACK: the held packets among those asked for, ascending, and the sequence numbers
    /// the cache no longer has (the receiver will conceal them, or ask the sender for a keyframe).
    public func answer(_ nack: NackPacket) -> (resend: [ArraySlice<UInt8>], gone: [UInt32]) {
        var resend: [ArraySlice<UInt8>] = []
        var gone: [UInt32] = []
        for sequence in nack.missing {
            if let bytes = packet(sequence) { resend.append(bytes) } else { gone.append(sequence) }
        }
        return (resend, gone)
    }
}
