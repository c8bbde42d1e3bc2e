import Testing
@testable import ShroudWire

/// The voice-room session messages (0x40–0x44) and the bind datagram (docs/PROTOCOL.md §1, §4).
@Suite struct MediaRoomWireTests {
    let channel = ChannelID(validated: [UInt8](repeating: 0xC3, count: 16))
    let token = MediaToken(validated: (0..<16).map { UInt8($0) })

    @Test func joinRoomHasTheDocumentedLayout() throws {
        let bytes = SessionFrame(requestID: 7, .joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7)).serialize()
        #expect(bytes == [1, 0x40, 0, 0, 0, 7] + channel.bytes + [0, 0, 7])
        let watch = SessionFrame(requestID: 2, .joinRoom(channel: channel, transport: .session, purpose: .screenWatch, maxLayer: 0)).serialize()
        #expect(watch == [1, 0x40, 0, 0, 0, 2] + channel.bytes + [1, 2, 0])
        let share = SessionFrame(requestID: 3, .joinRoom(channel: channel, transport: .datagram, purpose: .screenShare, maxLayer: 7)).serialize()
        #expect(share == [1, 0x40, 0, 0, 0, 3] + channel.bytes + [0, 1, 7])
    }

    @Test func joinRoomRoundTripsEveryPurposeAndLayer() throws {
        for transport in MediaTransport.allCases {
            for purpose in RoomPurpose.allCases {
                for maxLayer in UInt8(0)...MediaLayers.noCap {
                    let frame = SessionFrame(requestID: 9, .joinRoom(channel: channel, transport: transport, purpose: purpose, maxLayer: maxLayer))
                    #expect(try SessionFrame(parsing: frame.serialize()) == frame)
                }
            }
        }
    }

    @Test func malformedJoinRoomIsRefused() throws {
        let good = SessionFrame(requestID: 7, .joinRoom(channel: channel, transport: .datagram, purpose: .screenWatch, maxLayer: 2)).serialize()
        let transportAt = good.count - 3, purposeAt = good.count - 2, layerAt = good.count - 1
        var unknownTransport = good
        unknownTransport[transportAt] = 2
        #expect(throws: WireError.self) { try SessionFrame(parsing: unknownTransport) }
        var unknownPurpose = good
        unknownPurpose[purposeAt] = 3
        #expect(throws: WireError.self) { try SessionFrame(parsing: unknownPurpose) }
        // maxLayer 7 is the limit ("no cap"); 8 is one past it.
        var atLimit = good
        atLimit[layerAt] = MediaLayers.noCap
        #expect(try SessionFrame(parsing: atLimit).message == .joinRoom(channel: channel, transport: .datagram, purpose: .screenWatch, maxLayer: 7))
        var pastLimit = good
        pastLimit[layerAt] = MediaLayers.noCap + 1
        #expect(throws: WireError.self) { try SessionFrame(parsing: pastLimit) }
        // The old 23-byte form (no purpose, no layer) and every other truncation are refused.
        for length in 6..<good.count {
            #expect(throws: WireError.self) { try SessionFrame(parsing: Array(good.prefix(length))) }
        }
        #expect(throws: WireError.self) { try SessionFrame(parsing: good + [0]) }
    }

    @Test func roomJoinedHasTheDocumentedLayout() throws {
        let message = RelayMessage.roomJoined(channel: channel, token: token, streamID: 0xA0B0_C0D0, tokenExpiresAt: 0x0102_0304_0506_0708, mediaPort: 0x20FB)
        let bytes = SessionFrame(requestID: 1, message).serialize()
        #expect(bytes == [1, 0x41, 0, 0, 0, 1] + channel.bytes + token.bytes + [0xA0, 0xB0, 0xC0, 0xD0, 1, 2, 3, 4, 5, 6, 7, 8, 0x20, 0xFB])
        #expect(try SessionFrame(parsing: bytes).message == message)
    }

    @Test func mediaDatagramSizeLimits() throws {
        for size in [1, MediaPlane.maxDatagramBytes] {
            let frame = SessionFrame(.mediaDatagram([UInt8](repeating: 0x41, count: size)))
            #expect(try SessionFrame(parsing: frame.serialize()) == frame)
        }
        // One byte past the limit, and empty, are refused.
        var past = ByteWriter(capacity: 1300)
        past.write(UInt8(1)); past.write(UInt8(0x43)); past.write(UInt32(0))
        past.write(UInt16(MediaPlane.maxDatagramBytes + 1)); past.write(bytes: [UInt8](repeating: 0, count: MediaPlane.maxDatagramBytes + 1))
        #expect(throws: WireError.self) { try SessionFrame(parsing: past.bytes) }
        #expect(throws: WireError.self) { try SessionFrame(parsing: [1, 0x43, 0, 0, 0, 0, 0, 0]) }
    }

    @Test func roomMessagesDirections() {
        #expect(!RelayMessage.joinRoom(channel: channel, transport: .datagram, purpose: .voice, maxLayer: 7).isRelayToClient)
        #expect(!RelayMessage.leaveRoom(channel: channel).isRelayToClient)
        #expect(!RelayMessage.mediaDatagram([0x40]).isRelayToClient)
        #expect(RelayMessage.roomLeft(channel: channel).isRelayToClient)
        #expect(RelayMessage.roomJoined(channel: channel, token: token, streamID: 1, tokenExpiresAt: 1, mediaPort: 1).isRelayToClient)
    }

    @Test func bindRoundTripsAndIsToldApartFromMedia() throws {
        let bind = MediaBind(token: token)
        let bytes = bind.serialized()
        #expect(bytes == [0xC0] + token.bytes)
        #expect(try MediaBind(parsing: bytes) == bind)
        let bound = MediaBind(token: token, isAcknowledgement: true)
        #expect(try MediaBind(parsing: bound.serialized()) == bound)
        #expect(MediaBind.isBind(firstByte: 0xC0))
        #expect(MediaBind.isBind(firstByte: 0xC1))
        // Every media-plane datagram has V = 1 in the top bits, so never looks like a bind.
        for first in UInt8(0x40)...UInt8(0x7F) { #expect(!MediaBind.isBind(firstByte: first)) }
    }

    @Test func malformedBindsAreRefused() {
        let good = MediaBind(token: token).serialized()
        for length in 0..<good.count {
            #expect(throws: WireError.self) { try MediaBind(parsing: Array(good.prefix(length))) }
        }
        #expect(throws: WireError.self) { try MediaBind(parsing: good + [0]) }
        var wrongFirst = good
        wrongFirst[0] = 0xC2
        #expect(throws: WireError.self) { try MediaBind(parsing: wrongFirst) }
    }
}
