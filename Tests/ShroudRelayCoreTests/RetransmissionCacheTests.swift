import Testing
import ShroudWire
@testable import ShroudRelayCore

@Suite("Retransmission cache")
struct RetransmissionCacheTests {
    func datagram(_ sequence: UInt32, size: Int = 40) throws -> [UInt8] {
        try MediaPacket(streamID: 1, sequence: sequence, frameNumber: sequence,
                        payload: (0 ..< size - MediaPacket.headerBytes).map { UInt8(truncatingIfNeeded: Int(sequence) &+ $0) }).serialized()
    }

    @Test func answersWithWhatItStillHolds() throws {
        var cache = try RetransmissionCache(capacity: 8)
        for sequence in UInt32(0) ..< 12 { try cache.store(sequence: sequence, datagram: try datagram(sequence)) }
        // Capacity 8: 4...11 are held, 0...3 have been overwritten by 8...11.
        let nack = try NackPacket(streamID: 1, missing: [2, 3, 4, 9, 11, 12])
        let answer = cache.answer(nack)
        #expect(answer.resend.map(Array.init) == [try datagram(4), try datagram(9), try datagram(11)])
        #expect(answer.gone == [2, 3, 12])
        // Held bytes parse back to the packet that was stored.
        #expect(try MediaPacket(parsing: Array(answer.resend[1])).sequence == 9)
    }

    @Test func exactlyCapacityPacketsAreHeld() throws {
        let capacity = RetransmissionCache.defaultCapacity
        var cache = try RetransmissionCache()
        for sequence in UInt32(1000) ..< UInt32(1000 + capacity) { try cache.store(sequence: sequence, datagram: try datagram(sequence)) }
        #expect((UInt32(1000) ..< UInt32(1000 + capacity)).allSatisfy(cache.contains))
        try cache.store(sequence: UInt32(1000 + capacity), datagram: try datagram(UInt32(1000 + capacity)))
        #expect(!cache.contains(1000)) // one past the capacity pushes out the oldest
        #expect(cache.contains(1001) && cache.contains(UInt32(1000 + capacity)))
        #expect(cache.stored == capacity + 1)
    }

    @Test func capacityAndDatagramLimits() throws {
        #expect(try RetransmissionCache(capacity: RetransmissionCache.maxCapacity).capacity == RetransmissionCache.maxCapacity)
        #expect(throws: WireError.self) { try RetransmissionCache(capacity: RetransmissionCache.maxCapacity + 1) }
        #expect(throws: WireError.self) { try RetransmissionCache(capacity: 0) }
        var cache = try RetransmissionCache(capacity: 4)
        let largest = try datagram(7, size: MediaPlane.maxDatagramBytes)
        try cache.store(sequence: 7, datagram: largest)
        #expect(cache.packet(7).map(Array.init) == largest)
        #expect(throws: WireError.tooLarge(field: "media datagram", size: MediaPlane.maxDatagramBytes + 1, limit: MediaPlane.maxDatagramBytes)) {
            try cache.store(sequence: 8, datagram: largest + [0])
        }
        // A shorter packet in a slot that held a longer one returns only its own bytes.
        let short = try datagram(11, size: 20)
        try cache.store(sequence: 11, datagram: short)
        #expect(cache.packet(11).map(Array.init) == short)
        #expect(cache.packet(7) == nil && cache.packet(3) == nil)
    }

    @Test func emptyCacheHasNothing() throws {
        let cache = try RetransmissionCache(capacity: 4)
        // Slot sequence numbers start at zero: sequence 0 must not be mistaken for held.
        #expect(!cache.contains(0))
        #expect(cache.answer(try NackPacket(streamID: 1, missing: [0, 4])).gone == [0, 4])
    }
}
