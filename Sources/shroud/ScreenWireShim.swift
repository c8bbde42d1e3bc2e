import ShroudWire

// TEMPORARY until screen-relay's WIRE commit is merged (then this file is deleted).
enum RoomPurpose: UInt8 { case voice = 0, screenShare = 1, screenWatch = 2 }
extension RelayMessage {
    static func joinRoom(channel: ChannelID, transport: MediaTransport, purpose: RoomPurpose, maxLayer: UInt8) -> RelayMessage {
        .joinRoom(channel: channel, transport: transport)
    }
}
