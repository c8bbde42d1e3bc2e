import ShroudTestSupport
import Testing
@testable import ShroudWire

@Suite("Media packets")
struct MediaPacketTests {
    @Test func mediaPacketHasTheDocumentedLayout() throws {
        let packet = try MediaPacket(streamID: 0x0102_0304, sequence: 0x0A0B_0C0D, frameNumber: 0x1122_3344, fragmentIndex: 2,
                                     fragmentCount: 5, isKeyframe: true, layer: 3, payload: [0xAA, 0xBB])
        let bytes = packet.serialized()
        #expect(bytes == [0b01_00_1_011, 2, 5, 0, 1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D, 0x11, 0x22, 0x33, 0x44, 0xAA, 0xBB])
        #expect(try MediaPacket(parsing: bytes) == packet)
        #expect(try MediaDatagram(parsing: bytes) == .media(packet))
        #expect(!packet.isFirstFragment && !packet.isLastFragment)
        let header = try MediaRoutingHeader(parsing: bytes)
        #expect(header.streamID == 0x0102_0304 && header.sequence == 0x0A0B_0C0D && header.frameNumber == 0x1122_3344)
        #expect(header.fragmentIndex == 2 && header.fragmentCount == 5 && header.isKeyframe && header.layer == 3 && header.payloadLength == 2)
        for length in 0 ..< bytes.count - 2 {
            #expect(throws: WireError.self) { try MediaRoutingHeader(parsing: Array(bytes[0 ..< length])) }
        }
        #expect(throws: WireError.self) { try MediaRoutingHeader(parsing: bytes + [UInt8](repeating: 0, count: MediaPlane.maxDatagramBytes)) }
    }

    @Test func feedbackPacketsHaveTheDocumentedLayout() throws {
        let nack = try NackPacket(streamID: 7, missing: [100, 101, 117, 118, 200])
        // 100 + bitmap{101 (bit 0), 117 (bit 16 → no: 117-100 = 17 > 16)}: entries 100{+1}, 117{+1}, 200.
        #expect(nack.serialized() == [0x50, 3, 0, 0, 0, 0, 0, 7,
                                      0, 0, 0, 100, 0x00, 0x01,
                                      0, 0, 0, 117, 0x00, 0x01,
                                      0, 0, 0, 200, 0x00, 0x00])
        #expect(try NackPacket(parsing: nack.serialized()) == nack)
        let report = ReceiverReport(streamID: 9, fractionLost: 25, highestSequence: 1000, cumulativeLost: 12, jitterMicroseconds: 15_000)
        #expect(report.serialized() == [0x60, 25, 0, 0, 0, 0, 0, 9, 0, 0, 0x03, 0xE8, 0, 0, 0, 12, 0, 0, 0x3A, 0x98])
        #expect(try ReceiverReport(parsing: report.serialized()) == report)
        let request = try KeyframeRequest(streamID: 5, layer: 2)
        #expect(request.serialized() == [0x72, 0, 0, 0, 0, 0, 0, 5])
        #expect(try KeyframeRequest(parsing: request.serialized()) == request)
        for datagram in [MediaDatagram.nack(nack), .receiverReport(report), .keyframeRequest(request)] {
            #expect(try MediaDatagram(parsing: datagram.serialized()) == datagram)
        }
    }

    @Test func nackBitmapCoversSixteenFollowers() throws {
        let run = (UInt32(50) ... 66).map { $0 }
        let nack = try NackPacket(streamID: 1, missing: run)
        #expect(nack.serialized().count == NackPacket.headerBytes + NackPacket.entryBytes)
        #expect(try NackPacket(parsing: nack.serialized()).missing == run)
        let longer = try NackPacket(streamID: 1, missing: run + [67])
        #expect(longer.serialized().count == NackPacket.headerBytes + 2 * NackPacket.entryBytes)
        // The largest sequence number with its bitmap running past it is refused, not wrapped.
        var bytes = try NackPacket(streamID: 1, missing: [UInt32.max]).serialized()
        bytes[13] = 1
        #expect(throws: WireError.self) { try NackPacket(parsing: bytes) }
    }

    @Test func nackEntryLimit() throws {
        let atLimit = (0 ..< UInt32(NackPacket.maxEntries)).map { $0 * 100 }
        let nack = try NackPacket(streamID: 1, missing: atLimit)
        #expect(try NackPacket(parsing: nack.serialized()).missing == atLimit)
        #expect(throws: WireError.tooLarge(field: "NACK entries", size: NackPacket.maxEntries + 1, limit: NackPacket.maxEntries)) {
            try NackPacket(streamID: 1, missing: atLimit + [999_999])
        }
        var bytes = nack.serialized()
        bytes[1] = UInt8(NackPacket.maxEntries + 1)
        bytes += [0, 1, 0, 0, 0, 0]
        #expect(throws: WireError.self) { try NackPacket(parsing: bytes) }
        #expect(throws: WireError.self) { try NackPacket(streamID: 1, missing: []) }
    }

    @Test func payloadAndDatagramSizeLimits() throws {
        let full = try MediaPacket(streamID: 1, sequence: 1, frameNumber: 1, payload: [UInt8](repeating: 7, count: MediaPacket.maxPayloadBytes))
        let bytes = full.serialized()
        #expect(bytes.count == MediaPlane.maxDatagramBytes)
        #expect(try MediaPacket(parsing: bytes) == full)
        #expect(throws: WireError.tooLarge(field: "media payload", size: MediaPacket.maxPayloadBytes + 1, limit: MediaPacket.maxPayloadBytes)) {
            try MediaPacket(streamID: 1, sequence: 1, frameNumber: 1, payload: [UInt8](repeating: 7, count: MediaPacket.maxPayloadBytes + 1))
        }
        #expect(throws: WireError.tooLarge(field: "media datagram", size: MediaPlane.maxDatagramBytes + 1, limit: MediaPlane.maxDatagramBytes)) {
            try MediaPacket(parsing: bytes + [0])
        }
        #expect(throws: WireError.self) { try MediaPacket(streamID: 1, sequence: 1, frameNumber: 1, payload: []) }
    }

    @Test func fragmentAndLayerFieldsAreChecked() throws {
        let good = try MediaPacket(streamID: 1, sequence: 1, frameNumber: 1, fragmentIndex: 254, fragmentCount: 255, layer: 7, payload: [1])
        #expect(try MediaPacket(parsing: good.serialized()) == good)
        #expect(throws: WireError.self) { try MediaPacket(streamID: 1, sequence: 1, frameNumber: 1, fragmentCount: 256, payload: [1]) }
        #expect(throws: WireError.self) { try MediaPacket(streamID: 1, sequence: 1, frameNumber: 1, fragmentIndex: 1, fragmentCount: 1, payload: [1]) }
        #expect(throws: WireError.self) { try MediaPacket(streamID: 1, sequence: 1, frameNumber: 1, layer: 8, payload: [1]) }
        #expect(throws: WireError.self) { try KeyframeRequest(streamID: 1, layer: 8) }
        var bytes = good.serialized()
        bytes[2] = 0 // fragment count zero
        #expect(throws: WireError.self) { try MediaPacket(parsing: bytes) }
        bytes = good.serialized()
        bytes[1] = 255 // index not below count
        #expect(throws: WireError.self) { try MediaPacket(parsing: bytes) }
        bytes = good.serialized()
        bytes[3] = 1 // reserved
        #expect(throws: WireError.self) { try MediaPacket(parsing: bytes) }
        bytes = good.serialized()
        bytes[0] = 0b10_00_0000 // version 2
        #expect(throws: WireError.self) { try MediaPacket(parsing: bytes) }
        #expect(throws: WireError.self) { try MediaDatagram(parsing: bytes) }
        bytes[0] = 0b01_01_0000 // a NACK kind given to the media parser
        #expect(throws: WireError.self) { try MediaPacket(parsing: bytes) }
    }

    @Test func everyTruncationThrows() throws {
        let samples: [[UInt8]] = [
            try MediaPacket(streamID: 1, sequence: 2, frameNumber: 3, payload: [9]).serialized(),
            try NackPacket(streamID: 1, missing: [5, 9, 40]).serialized(),
            ReceiverReport(streamID: 1, fractionLost: 1, highestSequence: 2, cumulativeLost: 3, jitterMicroseconds: 4).serialized(),
            try KeyframeRequest(streamID: 1).serialized(),
        ]
        for bytes in samples {
            #expect(try MediaDatagram(parsing: bytes).serialized() == bytes)
            for length in 0 ..< bytes.count {
                #expect(throws: WireError.self) { try MediaDatagram(parsing: Array(bytes[0 ..< length])) }
            }
        }
        // Fixed-size feedback refuses trailing bytes too.
        #expect(throws: WireError.self) { try MediaDatagram(parsing: samples[2] + [0]) }
        #expect(throws: WireError.self) { try MediaDatagram(parsing: samples[3] + [0]) }
        #expect(throws: WireError.self) { try MediaDatagram(parsing: samples[1] + [0]) }
    }

    /// Seeded fuzz: random bytes and mutations of valid datagrams never trap; whatever parses
    /// serializes to bytes that parse to the same value (media, report and keyframe request: to the
    /// same bytes).
    @Test func fuzzedDatagramsNeverTrap() throws {
        var random = SplitMix64(seed: 0x5EED_3EDA)
        let seeds: [[UInt8]] = [
            try MediaPacket(streamID: 1, sequence: 2, frameNumber: 3, fragmentIndex: 1, fragmentCount: 3, payload: [1, 2, 3]).serialized(),
            try NackPacket(streamID: 4, missing: [1, 2, 3, 30, 31, 1000]).serialized(),
            ReceiverReport(streamID: 1, fractionLost: 1, highestSequence: 2, cumulativeLost: 3, jitterMicroseconds: 4).serialized(),
            try KeyframeRequest(streamID: 1, layer: 1).serialized(),
        ]
        var parsed = 0
        for round in 0 ..< 20_000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                bytes = (0 ..< Int.random(in: 0 ... 40, using: &random)).map { _ in UInt8.random(in: 0 ... 255, using: &random) }
                if !bytes.isEmpty { bytes[0] = 0x40 | (bytes[0] & 0x3F) }
            } else {
                bytes = seeds[round % seeds.count]
                for _ in 0 ..< Int.random(in: 1 ... 3, using: &random) where !bytes.isEmpty {
                    bytes[Int.random(in: 0 ..< bytes.count, using: &random)] ^= UInt8.random(in: 1 ... 255, using: &random)
                }
                if Bool.random(using: &random) { bytes = Array(bytes.prefix(Int.random(in: 0 ... bytes.count, using: &random))) }
            }
            // The in-place routing header accepts exactly what the full media parser accepts.
            let full = try? MediaPacket(parsing: bytes)
            let header = try? MediaRoutingHeader(parsing: bytes)
            #expect((full == nil) == (header == nil), "\(bytes)")
            if let full, let header {
                #expect(header.streamID == full.streamID && header.sequence == full.sequence && header.frameNumber == full.frameNumber
                        && header.fragmentIndex == full.fragmentIndex && header.fragmentCount == full.fragmentCount
                        && header.isKeyframe == full.isKeyframe && header.layer == full.layer && header.payloadLength == full.payload.count)
            }
            guard let datagram = try? MediaDatagram(parsing: bytes) else { continue }
            parsed += 1
            let again = try MediaDatagram(parsing: datagram.serialized())
            #expect(again == datagram)
            if case .nack = datagram { continue }
            #expect(datagram.serialized() == bytes)
        }
        #expect(parsed > 1_000, "the fuzz loop exercised only \(parsed) valid datagrams")
    }
}
