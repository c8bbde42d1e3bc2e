import Foundation
import GRDB
import ShroudCrypto
import ShroudWire

/// A channel this profile knows: its id, secret and local name, and which members our current
/// sender key was given to (for the rotation rule, `SenderKeyAudience`).
public struct LocalChannel: Equatable, Sendable {
    public var id: ChannelID
    public var secret: ChannelSecret
    public var name: String
    public var visibility: ChannelVisibility
    /// The key id of our own sender key that `keyHolders` refers to (0: none given out yet).
    public var keyHoldersKeyID: UInt32
    public var keyHolders: Set<[UInt8]>
    /// False once we left or were removed; the entry stays so history already stored can be read.
    public var isMember: Bool

    public init(id: ChannelID, secret: ChannelSecret, name: String, visibility: ChannelVisibility,
                keyHoldersKeyID: UInt32 = 0, keyHolders: Set<[UInt8]> = [], isMember: Bool = true) {
        self.id = id; self.secret = secret; self.name = name; self.visibility = visibility
        self.keyHoldersKeyID = keyHoldersKeyID; self.keyHolders = keyHolders; self.isMember = isMember
    }

    /// Storage form (sealed by the row cipher): version u8 = 1 ‖ secret 32 ‖ visibility u8 ‖
    /// member u8 ‖ name length u8 ‖ name ‖ key id u32 ‖ holder count u16 ‖ holders (32 each).
    func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 128 + keyHolders.count * 32)
        w.write(UInt8(1)); w.write(bytes: secret.bytes); w.write(visibility.rawValue); w.write(UInt8(isMember ? 1 : 0))
        let name = Array(name.utf8.prefix(255))
        w.write(UInt8(name.count)); w.write(bytes: name)
        w.write(keyHoldersKeyID)
        w.write(UInt16(clamping: keyHolders.count))
        for holder in keyHolders.sorted(by: { $0.lexicographicallyPrecedes($1) }).prefix(Int(UInt16.max)) { w.write(bytes: holder) }
        return w.bytes
    }

    init(id: ChannelID, parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        guard try r.readUInt8("version") == 1 else { throw ProfileError.corrupt("unknown channel record version") }
        self.id = id
        secret = try ChannelSecret(try r.readBytes(ChannelSecret.length, "secret"))
        guard let visibility = ChannelVisibility(rawValue: try r.readUInt8("visibility")) else { throw ProfileError.corrupt("bad visibility") }
        self.visibility = visibility
        isMember = try r.readUInt8("member") == 1
        name = String(decoding: try r.readBytes(Int(try r.readUInt8("name length")), "name"), as: UTF8.self)
        keyHoldersKeyID = try r.readUInt32("key id")
        let count = Int(try r.readUInt16("holder count"))
        keyHolders = Set(try (0..<count).map { _ in try r.readBytes(32, "holder") })
        guard r.isAtEnd else { throw ProfileError.corrupt("trailing bytes in a channel record") }
    }
}

/// A channel message kept in the profile between its delivery (when it is acknowledged to the
/// relay) and its display (when it is deleted): still wrapped (`waiting` for its sender key) or
/// decrypted (sender Ed25519 key ‖ `ChannelPayload`, sealed by the row cipher).
public struct StoredChannelEntry: Sendable {
    public var sequence: UInt64
    public var receivedAt: UInt64
    public var state: ChannelMessageOrder.State
    /// `waiting`: the relay's blob. `decrypted`: sender (32) ‖ ChannelPayload.
    public var content: [UInt8]
}

/// The profile's channels and channel inbox (tables `channel` and `channel_message`, migration
/// v3). Secrets, names and decrypted messages are sealed by the row cipher; the still-wrapped
/// blobs are already encrypted under the channel secret.
public final class ChannelBook {
    private let profile: ProfileStore
    private let cipher: RowCipher

    public init(profile: ProfileStore, secrets: ProfileSecrets) {
        self.profile = profile
        cipher = RowCipher(secrets: secrets)
    }

    static func createSchema(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE channel (
                id BLOB PRIMARY KEY NOT NULL, sealed_record BLOB NOT NULL, stored_through INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE channel_message (
                channel BLOB NOT NULL REFERENCES channel (id) ON DELETE CASCADE, sequence INTEGER NOT NULL,
                received_at INTEGER NOT NULL, decrypted INTEGER NOT NULL, record BLOB NOT NULL,
                PRIMARY KEY (channel, sequence));
            """)
    }

    // MARK: Channels

    public func all() throws -> [LocalChannel] {
        let rows = try profile.wrap {
            try profile.read { db in try Row.fetchAll(db, sql: "SELECT id, sealed_record FROM channel ORDER BY rowid") }
        }
        return try rows.map { try open(id: [UInt8]($0["id"] as Data), sealed: [UInt8]($0["sealed_record"] as Data)) }
    }

    public func channel(_ id: ChannelID) throws -> LocalChannel? {
        guard let sealed = try profile.wrap({
            try profile.read { db in try Data.fetchOne(db, sql: "SELECT sealed_record FROM channel WHERE id = ?", arguments: [Data(id.bytes)]) }
        }) else { return nil }
        return try open(id: id.bytes, sealed: [UInt8](sealed))
    }

    /// A channel by local name or by id (32 hex digits). A name shared by several channels is refused.
    public func find(_ nameOrID: String) throws -> LocalChannel? {
        if nameOrID.count == 2 * ChannelID.size, let bytes = Hex.decode(nameOrID), let id = try? ChannelID(bytes),
           let channel = try channel(id) {
            return channel
        }
        let matches = try all().filter { $0.name == nameOrID }
        guard matches.count <= 1 else {
            throw ProfileError.corrupt("several channels are named \"\(nameOrID)\": use the channel id")
        }
        return matches.first
    }

    /// Inserts or replaces the channel's record (its `stored_through` is kept).
    public func save(_ channel: LocalChannel) throws {
        let sealed = try cipher.seal(channel.serialize(), table: "channel", row: [channel.id.bytes])
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: """
                    INSERT INTO channel (id, sealed_record) VALUES (?, ?)
                    ON CONFLICT (id) DO UPDATE SET sealed_record = excluded.sealed_record
                    """, arguments: [Data(channel.id.bytes), Data(sealed)])
            }
        }
    }

    private func open(id: [UInt8], sealed: [UInt8]) throws -> LocalChannel {
        let channelID = try ChannelID(id)
        let plain = try cipher.open(sealed, table: "channel", row: [id], rowName: Hex.encode(id))
        return try LocalChannel(id: channelID, parsing: plain)
    }

    // MARK: Inbox

    /// The highest sequence stored (and so acknowledged) for the channel.
    public func storedThrough(_ id: ChannelID) throws -> UInt64 {
        try profile.wrap {
            try profile.read { db in
                UInt64(try Int64.fetchOne(db, sql: "SELECT stored_through FROM channel WHERE id = ?", arguments: [Data(id.bytes)]) ?? 0)
            }
        }
    }

    /// Stores a delivered, still-wrapped message and moves `stored_through`, in one transaction.
    /// Returns false (and stores nothing) if the channel is unknown or the sequence already stored.
    public func storeDelivery(channel id: ChannelID, sequence: UInt64, receivedAt: UInt64, blob: [UInt8]) throws -> Bool {
        try profile.wrap {
            try profile.write { db in
                guard let through = try Int64.fetchOne(db, sql: "SELECT stored_through FROM channel WHERE id = ?", arguments: [Data(id.bytes)]),
                      sequence > UInt64(through) else { return false }
                try db.execute(sql: "INSERT OR REPLACE INTO channel_message (channel, sequence, received_at, decrypted, record) VALUES (?, ?, ?, 0, ?)",
                               arguments: [Data(id.bytes), Int64(sequence), Int64(clamping: receivedAt), Data(blob)])
                try db.execute(sql: "UPDATE channel SET stored_through = ? WHERE id = ?", arguments: [Int64(sequence), Data(id.bytes)])
                return true
            }
        }
    }

    /// Every stored message of the channel, oldest first; decrypted ones opened.
    public func entries(channel id: ChannelID) throws -> [StoredChannelEntry] {
        let rows = try profile.wrap {
            try profile.read { db in
                try Row.fetchAll(db, sql: "SELECT sequence, received_at, decrypted, record FROM channel_message WHERE channel = ? ORDER BY sequence",
                                 arguments: [Data(id.bytes)])
            }
        }
        return try rows.map { row in
            let sequence = UInt64(row["sequence"] as Int64)
            let decrypted = (row["decrypted"] as Int64) == 1
            var content = [UInt8](row["record"] as Data)
            if decrypted {
                content = try cipher.open(content, table: "channel_message", row: [id.bytes, sequenceKey(sequence)],
                                          rowName: "\(Hex.encode(id.bytes))/\(sequence)")
            }
            return StoredChannelEntry(sequence: sequence, receivedAt: UInt64(row["received_at"] as Int64),
                                      state: decrypted ? .decrypted : .waiting, content: content)
        }
    }

    /// Replaces a waiting message by its decrypted form (sender ‖ payload).
    public func markDecrypted(channel id: ChannelID, sequence: UInt64, sender: [UInt8], payload: ChannelPayload) throws {
        let sealed = try cipher.seal(sender + payload.serialize(), table: "channel_message", row: [id.bytes, sequenceKey(sequence)])
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "UPDATE channel_message SET decrypted = 1, record = ? WHERE channel = ? AND sequence = ?",
                               arguments: [Data(sealed), Data(id.bytes), Int64(sequence)])
            }
        }
    }

    /// Deletes a message once shown (or given up on).
    public func remove(channel id: ChannelID, sequence: UInt64) throws {
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "DELETE FROM channel_message WHERE channel = ? AND sequence = ?", arguments: [Data(id.bytes), Int64(sequence)])
            }
        }
    }

    private func sequenceKey(_ sequence: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 8)
        w.write(sequence)
        return w.bytes
    }
}
