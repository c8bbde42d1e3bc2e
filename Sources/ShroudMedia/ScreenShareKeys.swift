import ShroudCrypto

/// The channel payloads of screen sharing (kinds 0x20–0x2F, docs/PROTOCOL.md "Screen keys"). They
/// travel under the channel's sender keys like every channel message, so only the channel's
/// current members read them; a member removed from the channel never holds the rotated sender key
/// and so never gets a screen key made after the removal.
///
/// - 0x20 `announcement`: the sharer's SFrame key, body exactly as `MediaKeyAnnouncement`'s
///   (flags u8 ‖ key id u64 ‖ base key 32); the joining flag must be clear.
/// - 0x21 `request`: a watcher asks the sharers in the channel for their current key; empty body.
///   A sharer answers with its announcement, at most once per `ScreenKeyMessage.answerInterval`.
/// Other kinds of the range are ignored by today's clients (reserved).
public enum ScreenKeyMessage: Equatable, Sendable {
    case announcement(MediaKeyAnnouncement)
    case request

    public static let announcementKind: UInt8 = 0x20
    public static let requestKind: UInt8 = 0x21
    /// A sharer re-announces its key at most this often however many requests arrive, so a
    /// crowd of joining watchers (or a hostile member) costs it one channel message per second.
    public static let answerInterval: Duration = .seconds(1)

    /// The payload of kind `kind` in the screen range: nil for other kinds (and reserved screen
    /// kinds); throws when a screen-key payload is malformed.
    public init?(_ payload: ChannelPayload) throws {
        switch payload.kind.rawValue {
        case Self.announcementKind:
            let announcement = try MediaKeyAnnouncement(parsing: payload.body)
            guard !announcement.joining else { throw MediaError.codec("a screen key announcement has no joining flag") }
            self = .announcement(announcement)
        case Self.requestKind:
            guard payload.body.isEmpty else { throw MediaError.codec("a screen key request has an empty body, not \(payload.body.count) bytes") }
            self = .request
        default:
            return nil
        }
    }

    public func payload(sentAt: UInt64) throws -> ChannelPayload {
        switch self {
        case let .announcement(announcement):
            guard let kind = ChannelPayload.Kind(rawValue: Self.announcementKind) else { throw MediaError.codec("screen key kind") }
            let body = try MediaKeyAnnouncement(keyID: announcement.keyID, baseKey: announcement.baseKey, joining: false).serialize()
            return try ChannelPayload(kind: kind, sentAt: sentAt, body: body)
        case .request:
            guard let kind = ChannelPayload.Kind(rawValue: Self.requestKind) else { throw MediaError.codec("screen key kind") }
            return try ChannelPayload(kind: kind, sentAt: sentAt, body: [])
        }
    }
}

/// Whether a sharer should answer a key request now: at most once per `answerInterval`. Pure.
public struct KeyAnswerLimiter: Sendable {
    public private(set) var lastAnswer: Duration?
    public init() {}
    public mutating func shouldAnswer(now: Duration) -> Bool {
        if let last = lastAnswer, now - last < ScreenKeyMessage.answerInterval { return false }
        lastAnswer = now
        return true
    }
}
