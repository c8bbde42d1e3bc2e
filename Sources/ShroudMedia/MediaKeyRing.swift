import Foundation
import ShroudCrypto
import ShroudWire

/// The SFrame keys of one call, as distributed in `MediaKeyAnnouncement` channel payloads
/// (docs/PROTOCOL.md §6): this member's current send key, and every other member's keys by id.
/// When a member replaces its key (a new id after a membership change), the previous one stays
/// usable for `retiredKeyLifetime`, so frames already in flight or in a jitter buffer still open;
/// then it is dropped and frames under it are refused. Time comes in as a parameter (the call's
/// monotonic clock); the lock makes it safe to share between the receive thread, the pacing loop
/// and the thread that handles channel deliveries.
public final class MediaKeyRing: MediaKeyProvider, @unchecked Sendable {
    /// How long a replaced key still opens frames: longer than any frame spends in flight and in
    /// the jitter buffer (at most `VoiceReceiver`'s largest playout delay, well under a second).
    public static let retiredKeyLifetime = Duration.seconds(2)
    /// Keys held at once (own excluded); an announcement past it is refused, so a member flooding
    /// announcements cannot grow the ring.
    public static let maximumKeys = 256

    public enum Outcome: Equatable, Sendable {
        case installed
        /// The same key again (a repeated announcement).
        case known
        /// The id is held with other key bytes (a collision, or someone claiming another's id).
        case conflict
        case full
    }

    private struct Held {
        let sender: [UInt8]
        let key: SecureBytes
        var retiresAt: Duration?
    }

    private let lock = NSLock()
    private var own: (keyID: UInt64, baseKey: SecureBytes)?
    private var held: [UInt64: Held] = [:]
    private var latestBySender: [[UInt8]: UInt64] = [:]

    public init() {}

    // MARK: MediaKeyProvider

    public func currentSendKey() -> (keyID: UInt64, baseKey: SecureBytes)? {
        lock.lock(); defer { lock.unlock() }
        return own
    }

    public func receiveKey(id: UInt64) -> SecureBytes? {
        lock.lock(); defer { lock.unlock() }
        return held[id]?.key
    }

    // MARK: Keys

    /// Makes `announcement` this member's send key (call once the channel accepted the message
    /// carrying it, so the others can have it).
    public func useOwnKey(_ announcement: MediaKeyAnnouncement) {
        lock.lock(); defer { lock.unlock() }
        own = (announcement.keyID, SecureBytes(copying: announcement.baseKey))
    }

    public var ownKeyID: UInt64? {
        lock.lock(); defer { lock.unlock() }
        return own?.keyID
    }

    /// Another member's key. Their previous key is retired (usable for `retiredKeyLifetime`).
    @discardableResult
    public func install(_ announcement: MediaKeyAnnouncement, from sender: [UInt8], now: Duration) -> Outcome {
        lock.lock(); defer { lock.unlock() }
        expireLocked(now: now)
        if let existing = held[announcement.keyID] {
            guard existing.sender == sender, constantTimeEquals(existing.key.bytes, announcement.baseKey) else { return .conflict }
            return .known
        }
        guard held.count < Self.maximumKeys else { return .full }
        if let previous = latestBySender[sender], held[previous]?.retiresAt == nil {
            held[previous]?.retiresAt = now + Self.retiredKeyLifetime
        }
        held[announcement.keyID] = Held(sender: sender, key: SecureBytes(copying: announcement.baseKey))
        latestBySender[sender] = announcement.keyID
        return .installed
    }

    /// A member left or was removed: all its keys retire.
    public func retire(sender: [UInt8], now: Duration) {
        lock.lock(); defer { lock.unlock() }
        for (id, entry) in held where entry.sender == sender && entry.retiresAt == nil {
            held[id]?.retiresAt = now + Self.retiredKeyLifetime
        }
        latestBySender[sender] = nil
    }

    /// Drops the keys whose time is up.
    public func expire(now: Duration) {
        lock.lock(); defer { lock.unlock() }
        expireLocked(now: now)
    }

    /// Who announced the key with this id (nil for an unknown or dropped key, and for our own).
    /// A picture's sharer is the sender of the key that opened it, never merely whoever
    /// announced a key last.
    public func sender(ofKey id: UInt64) -> [UInt8]? {
        lock.lock(); defer { lock.unlock() }
        return held[id]?.sender
    }

    /// The ids of the other members' keys held now (sorted).
    public var heldKeyIDs: [UInt64] {
        lock.lock(); defer { lock.unlock() }
        return held.keys.sorted()
    }

    private func expireLocked(now: Duration) {
        for (id, entry) in held {
            if let retiresAt = entry.retiresAt, retiresAt <= now { held[id] = nil }
        }
    }
}
