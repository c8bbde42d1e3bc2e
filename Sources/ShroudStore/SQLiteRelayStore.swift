import Foundation
import GRDB
import ShroudRelayCore
import ShroudWire

/// The relay's `RelayStore` on SQLite through GRDB (docs/PROTOCOL.md §2, "Storage"): one database
/// file in WAL mode, schema by append-only migrations. Every method is one transaction, committed
/// before it returns, so the relay acknowledges only what is on disk: a `kill -9` of the relay
/// loses nothing it acknowledged (the WAL is written at commit; `synchronous=NORMAL` only risks the
/// last transactions on a power loss, not on a process crash).
///
/// The tables hold public keys, channel ids, roles, timestamps and padded ciphertext; no table has a
/// sender column, so the database cannot pair a direct message's sender with its recipient.
///
/// `batch` groups many calls into one transaction (group commit): one commit for all the frames
/// the relay received together, instead of one per call, each call inside under its own savepoint.
public final class SQLiteRelayStore: RelayStore {
    private let database: DatabasePool
    /// The writer connection while a `batch` is open; every call runs on it then. Touched only by
    /// the thread that calls the store (the relay's loop).
    private var batchDatabase: Database?

    /// Opens (creating if needed) the database at `path`; its directory is created 0700.
    public init(path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw RelayStoreError.storage("cannot create \(directory): \(error.localizedDescription)")
            }
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.foreignKeysEnabled = true
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch let error as DatabaseError {
            throw RelayStoreError.storage("\(path): \(error.message ?? "\(error.resultCode)")")
        }
    }

    /// `sqlite://PATH` (relative or absolute) → PATH; nil for other schemes.
    public static func path(fromDatabaseURL url: String) -> String? {
        guard url.hasPrefix("sqlite://") else { return nil }
        let path = String(url.dropFirst("sqlite://".count))
        return path.isEmpty ? nil : path
    }

    /// Schema history; append-only, so a database written by any earlier version opens.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-relay") { db in
            try db.execute(sql: """
                CREATE TABLE signed_prekey (
                    owner BLOB PRIMARY KEY NOT NULL, key_id INTEGER NOT NULL, key BLOB NOT NULL, signature BLOB NOT NULL);
                CREATE TABLE one_time_prekey (
                    rowid INTEGER PRIMARY KEY, owner BLOB NOT NULL, key_id INTEGER NOT NULL, key BLOB NOT NULL,
                    UNIQUE (owner, key_id));
                CREATE TABLE direct_message (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, recipient BLOB NOT NULL,
                    received_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, blob BLOB NOT NULL);
                CREATE INDEX direct_message_recipient ON direct_message (recipient, sequence);
                CREATE INDEX direct_message_expiry ON direct_message (expires_at);
                CREATE TABLE channel (
                    id BLOB PRIMARY KEY NOT NULL, visibility INTEGER NOT NULL, metadata BLOB NOT NULL,
                    last_sequence INTEGER NOT NULL);
                CREATE TABLE channel_member (
                    rowid INTEGER PRIMARY KEY, channel BLOB NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
                    member BLOB NOT NULL, role INTEGER NOT NULL, joined_after INTEGER NOT NULL,
                    acknowledged_through INTEGER NOT NULL, UNIQUE (channel, member));
                CREATE INDEX channel_member_member ON channel_member (member);
                CREATE TABLE channel_message (
                    channel BLOB NOT NULL REFERENCES channel (id) ON DELETE CASCADE, sequence INTEGER NOT NULL,
                    received_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, blob BLOB NOT NULL,
                    PRIMARY KEY (channel, sequence));
                CREATE INDEX channel_message_expiry ON channel_message (expires_at);
                CREATE TABLE invite (
                    token BLOB PRIMARY KEY NOT NULL, channel BLOB NOT NULL REFERENCES channel (id) ON DELETE CASCADE,
                    uses_left INTEGER NOT NULL, expires_at INTEGER NOT NULL);
                """)
        }
        // The identity's agreement key travels with the prekeys (docs/PROTOCOL.md §1). Rows
        // written before it existed have NULL here and yield no bundle until their owner publishes again.
        migrator.registerMigration("v2-agreement-key") { db in
            try db.execute(sql: """
                ALTER TABLE signed_prekey ADD COLUMN agreement_key BLOB;
                ALTER TABLE signed_prekey ADD COLUMN agreement_signature BLOB;
                """)
        }
        return migrator
    }

    // MARK: Prekeys

    public func publishPrekeys(owner: IdentityKey, agreement: IdentityAgreementKey, signed: SignedPrekey, oneTime: [OneTimePrekey],
                               maximumOneTime: Int) throws -> Bool {
        try write { db in
            let newIDs = Set(oneTime.map(\.id))
            let existing = try Int64.fetchAll(db, sql: "SELECT key_id FROM one_time_prekey WHERE owner = ?", arguments: [data(owner)])
            let kept = existing.filter { !newIDs.contains(UInt32(truncatingIfNeeded: $0)) }.count
            guard kept + oneTime.count <= maximumOneTime else { return false }
            try db.execute(sql: """
                INSERT OR REPLACE INTO signed_prekey (owner, key_id, key, signature, agreement_key, agreement_signature)
                VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [data(owner), Int64(signed.id), data(signed.key), data(signed.signature),
                                 data(agreement.key), data(agreement.signature)])
            for key in oneTime {
                try db.execute(sql: "INSERT OR REPLACE INTO one_time_prekey (owner, key_id, key) VALUES (?, ?, ?)",
                               arguments: [data(owner), Int64(key.id), data(key.key)])
            }
            return true
        }
    }

    public func takeBundle(owner: IdentityKey) throws -> PrekeyBundle? {
        try write { db in
            guard let row = try Row.fetchOne(db, sql: """
                    SELECT key_id, key, signature, agreement_key, agreement_signature FROM signed_prekey
                    WHERE owner = ? AND agreement_key IS NOT NULL AND agreement_signature IS NOT NULL
                    """, arguments: [data(owner)]) else { return nil }
            let agreement = IdentityAgreementKey(key: try PrekeyPublicKey(bytes(row, "agreement_key")),
                                                 signature: try Ed25519Signature(bytes(row, "agreement_signature")))
            let signed = SignedPrekey(id: try uint32(row, "key_id"), key: try PrekeyPublicKey(bytes(row, "key")),
                                      signature: try Ed25519Signature(bytes(row, "signature")))
            var oneTime: OneTimePrekey?
            // Select and delete in one write transaction: no other connection can take the same key.
            if let key = try Row.fetchOne(db, sql: "SELECT rowid, key_id, key FROM one_time_prekey WHERE owner = ? ORDER BY rowid LIMIT 1",
                                          arguments: [data(owner)]) {
                oneTime = OneTimePrekey(id: try uint32(key, "key_id"), key: try PrekeyPublicKey(bytes(key, "key")))
                try db.execute(sql: "DELETE FROM one_time_prekey WHERE rowid = ?", arguments: [try int64(key, "rowid")])
            }
            return PrekeyBundle(identity: owner, agreement: agreement, signedPrekey: signed, oneTimePrekey: oneTime)
        }
    }

    public func oneTimePrekeyCount(owner: IdentityKey) throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM one_time_prekey WHERE owner = ?", arguments: [data(owner)]) ?? 0 }
    }

    // MARK: Direct messages

    public func enqueueDirect(id: MessageID, recipient: IdentityKey, receivedAt: UInt64, expiresAt: UInt64,
                              blob: [UInt8], maximumQueued: Int) throws -> UInt64? {
        try write { db in
            // Cached statements on the hot path: parsing the SQL on every message cost more than running it.
            let count = try db.cachedStatement(sql: "SELECT COUNT(*) FROM direct_message WHERE recipient = ?")
            let queued = try Int.fetchOne(count, arguments: [data(recipient)]) ?? 0
            guard queued < maximumQueued else { return nil }
            try db.cachedStatement(sql: "INSERT INTO direct_message (id, recipient, received_at, expires_at, blob) VALUES (?, ?, ?, ?, ?)")
                .execute(arguments: [data(id), data(recipient), Int64(clamping: receivedAt), Int64(clamping: expiresAt), Data(blob)])
            return UInt64(db.lastInsertedRowID)
        }
    }

    public func pendingDirect(recipient: IdentityKey, afterSequence: UInt64, limit: Int) throws -> [QueuedDirectMessage] {
        try read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT sequence, id, received_at, blob FROM direct_message
                WHERE recipient = ? AND sequence > ? ORDER BY sequence LIMIT ?
                """), arguments: [data(recipient), Int64(clamping: afterSequence), limit]).map { row in
                QueuedDirectMessage(sequence: try uint64(row, "sequence"), id: try MessageID(bytes(row, "id")),
                                    receivedAt: try uint64(row, "received_at"), blob: bytes(row, "blob"))
            }
        }
    }

    public func deleteDirect(recipient: IdentityKey, ids: [MessageID]) throws -> Int {
        try write { db in
            var deleted = 0
            let delete = try db.cachedStatement(sql: "DELETE FROM direct_message WHERE recipient = ? AND id = ?")
            for id in ids {
                try delete.execute(arguments: [data(recipient), data(id)])
                deleted += db.changesCount
            }
            return deleted
        }
    }

    // MARK: Channels

    public func createChannel(id: ChannelID, visibility: ChannelVisibility, metadata: [UInt8], owner: IdentityKey) throws -> Membership? {
        try write { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM channel WHERE id = ?", arguments: [data(id)]) == nil else { return nil }
            try db.execute(sql: "INSERT INTO channel (id, visibility, metadata, last_sequence) VALUES (?, ?, ?, 0)",
                           arguments: [data(id), Int(visibility.rawValue), Data(metadata)])
            try db.execute(sql: """
                INSERT INTO channel_member (channel, member, role, joined_after, acknowledged_through) VALUES (?, ?, ?, 0, 0)
                """, arguments: [data(id), data(owner), Int(ChannelRole.owner.rawValue)])
            return Membership(channel: id, member: owner, role: .owner, joinedAfter: 0, acknowledgedThrough: 0)
        }
    }

    public func channel(_ id: ChannelID) throws -> ChannelRecord? {
        try read { db in try Self.channelRecord(db, id) }
    }

    public func membership(channel: ChannelID, member: IdentityKey) throws -> Membership? {
        try read { db in try Self.membership(db, channel, member) }
    }

    public func addMember(channel: ChannelID, member: IdentityKey, role: ChannelRole, maximumMembers: Int) throws -> JoinOutcome {
        try write { db in try Self.addMember(db, channel, member, role, maximumMembers) }
    }

    public func removeMember(channel: ChannelID, member: IdentityKey) throws -> Bool {
        try write { db in
            try db.execute(sql: "DELETE FROM channel_member WHERE channel = ? AND member = ?", arguments: [data(channel), data(member)])
            guard db.changesCount > 0 else { return false }
            if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM channel_member WHERE channel = ?", arguments: [data(channel)]) == 0 {
                // Cascades to the channel's messages and invites.
                try db.execute(sql: "DELETE FROM channel WHERE id = ?", arguments: [data(channel)])
            }
            return true
        }
    }

    public func setRole(channel: ChannelID, member: IdentityKey, role: ChannelRole) throws -> Bool {
        try write { db in
            try db.execute(sql: "UPDATE channel_member SET role = ? WHERE channel = ? AND member = ?",
                           arguments: [Int(role.rawValue), data(channel), data(member)])
            return db.changesCount > 0
        }
    }

    public func members(channel: ChannelID) throws -> [ChannelMember] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT member, role FROM channel_member WHERE channel = ? ORDER BY rowid",
                             arguments: [data(channel)]).map { row in
                ChannelMember(identity: try IdentityKey(bytes(row, "member")), role: try role(row))
            }
        }
    }

    public func memberships(of member: IdentityKey) throws -> [Membership] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT channel, member, role, joined_after, acknowledged_through FROM channel_member WHERE member = ? ORDER BY channel
                """, arguments: [data(member)]).map(Self.membership(from:))
        }
    }

    public func createInvite(token: InviteToken, channel: ChannelID, uses: Int, expiresAt: UInt64) throws {
        try write { db in
            try db.execute(sql: "INSERT INTO invite (token, channel, uses_left, expires_at) VALUES (?, ?, ?, ?)",
                           arguments: [data(token), data(channel), uses, Int64(clamping: expiresAt)])
        }
    }

    public func redeemInvite(token: InviteToken, member: IdentityKey, now: UInt64, maximumMembers: Int) throws -> JoinOutcome {
        try write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT channel, uses_left, expires_at FROM invite WHERE token = ?",
                                             arguments: [data(token)]) else { return .inviteNotFound }
            guard try uint64(row, "expires_at") > now, try int64(row, "uses_left") > 0 else { return .inviteExhausted }
            let outcome = try Self.addMember(db, try ChannelID(bytes(row, "channel")), member, .member, maximumMembers)
            if case .joined = outcome {
                try db.execute(sql: "UPDATE invite SET uses_left = uses_left - 1 WHERE token = ?", arguments: [data(token)])
            }
            return outcome
        }
    }

    public func appendChannelMessage(channel: ChannelID, receivedAt: UInt64, expiresAt: UInt64, blob: [UInt8]) throws -> UInt64 {
        try write { db in
            try db.execute(sql: "UPDATE channel SET last_sequence = last_sequence + 1 WHERE id = ?", arguments: [data(channel)])
            guard db.changesCount == 1,
                  let sequence = try Int64.fetchOne(db, sql: "SELECT last_sequence FROM channel WHERE id = ?", arguments: [data(channel)]) else {
                throw RelayStoreError.channelNotFound
            }
            try db.execute(sql: "INSERT INTO channel_message (channel, sequence, received_at, expires_at, blob) VALUES (?, ?, ?, ?, ?)",
                           arguments: [data(channel), sequence, Int64(clamping: receivedAt), Int64(clamping: expiresAt), Data(blob)])
            return UInt64(sequence)
        }
    }

    public func channelMessages(channel: ChannelID, afterSequence: UInt64, limit: Int) throws -> [StoredChannelMessage] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT sequence, received_at, blob FROM channel_message WHERE channel = ? AND sequence > ? ORDER BY sequence LIMIT ?
                """, arguments: [data(channel), Int64(clamping: afterSequence), limit]).map { row in
                StoredChannelMessage(sequence: try uint64(row, "sequence"), receivedAt: try uint64(row, "received_at"), blob: bytes(row, "blob"))
            }
        }
    }

    public func acknowledgeChannel(channel: ChannelID, member: IdentityKey, through sequence: UInt64) throws {
        try write { db in
            try db.execute(sql: """
                UPDATE channel_member SET acknowledged_through = MAX(acknowledged_through, ?) WHERE channel = ? AND member = ?
                """, arguments: [Int64(clamping: sequence), data(channel), data(member)])
        }
    }

    public func expire(now: UInt64) throws -> Int {
        try write { db in
            let cutoff = Int64(clamping: now)
            var deleted = 0
            for table in ["direct_message", "channel_message", "invite"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE expires_at <= ?", arguments: [cutoff])
                deleted += db.changesCount
            }
            return deleted
        }
    }

    /// SQLite's journal mode ("wal" once opened), for tests and the start-up log.
    func journalMode() throws -> String {
        try read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "" }
    }

    // MARK: Helpers

    private static func channelRecord(_ db: Database, _ id: ChannelID) throws -> ChannelRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT visibility, metadata, last_sequence FROM channel WHERE id = ?",
                                         arguments: [data(id)]) else { return nil }
        guard let visibility = ChannelVisibility(rawValue: UInt8(truncatingIfNeeded: try int64(row, "visibility"))) else {
            throw RelayStoreError.storage("channel has an unknown visibility")
        }
        return ChannelRecord(id: id, visibility: visibility, metadata: bytes(row, "metadata"), lastSequence: try uint64(row, "last_sequence"))
    }

    private static func membership(_ db: Database, _ channel: ChannelID, _ member: IdentityKey) throws -> Membership? {
        try Row.fetchOne(db, sql: """
            SELECT channel, member, role, joined_after, acknowledged_through FROM channel_member WHERE channel = ? AND member = ?
            """, arguments: [data(channel), data(member)]).map(membership(from:))
    }

    private static func membership(from row: Row) throws -> Membership {
        Membership(channel: try ChannelID(bytes(row, "channel")), member: try IdentityKey(bytes(row, "member")), role: try role(row),
                   joinedAfter: try uint64(row, "joined_after"), acknowledgedThrough: try uint64(row, "acknowledged_through"))
    }

    private static func addMember(_ db: Database, _ channel: ChannelID, _ member: IdentityKey, _ role: ChannelRole,
                                  _ maximumMembers: Int) throws -> JoinOutcome {
        guard let record = try channelRecord(db, channel) else { return .channelNotFound }
        if let existing = try membership(db, channel, member) { return .alreadyMember(existing) }
        let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM channel_member WHERE channel = ?", arguments: [data(channel)]) ?? 0
        guard count < maximumMembers else { return .channelFull }
        let last = Int64(clamping: record.lastSequence)
        try db.execute(sql: """
            INSERT INTO channel_member (channel, member, role, joined_after, acknowledged_through) VALUES (?, ?, ?, ?, ?)
            """, arguments: [data(channel), data(member), Int(role.rawValue), last, last])
        return .joined(Membership(channel: channel, member: member, role: role, joinedAfter: record.lastSequence,
                                  acknowledgedThrough: record.lastSequence))
    }

    public func batch<T>(_ body: () throws -> T) throws -> T {
        guard batchDatabase == nil else { throw RelayStoreError.storage("batch is not reentrant") }
        do {
            return try database.write { db in
                batchDatabase = db
                defer { batchDatabase = nil }
                return try body()
            }
        } catch let error as DatabaseError {
            throw RelayStoreError.storage(error.message ?? "\(error.resultCode)")
        }
    }

    private func write<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            guard let db = batchDatabase else { return try database.write(body) }
            // Inside a batch: a savepoint keeps this call all-or-nothing within the open transaction.
            var result: T?
            try db.inSavepoint {
                result = try body(db)
                return .commit
            }
            guard let result else { throw RelayStoreError.storage("savepoint returned no result") }
            return result
        } catch let error as DatabaseError {
            throw RelayStoreError.storage(error.message ?? "\(error.resultCode)")
        }
    }

    private func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            // Inside a batch, read on the writer so that the batch's own uncommitted changes show.
            if let db = batchDatabase { return try body(db) }
            return try database.read(body)
        } catch let error as DatabaseError {
            throw RelayStoreError.storage(error.message ?? "\(error.resultCode)")
        }
    }
}

private func data<T: FixedSizeBytes>(_ value: T) -> Data { Data(value.bytes) }

private func bytes(_ row: Row, _ column: String) -> [UInt8] {
    (row[column] as Data?).map { [UInt8]($0) } ?? []
}

/// Reads an integer column without trapping on a damaged file (GRDB's non-optional read would).
private func int64(_ row: Row, _ column: String) throws -> Int64 {
    guard let value = row[column] as Int64? else { throw RelayStoreError.storage("\(column) is missing or not an integer") }
    return value
}

private func uint64(_ row: Row, _ column: String) throws -> UInt64 {
    let value = try int64(row, column)
    guard value >= 0 else { throw RelayStoreError.storage("negative \(column)") }
    return UInt64(value)
}

private func uint32(_ row: Row, _ column: String) throws -> UInt32 {
    let value = try int64(row, column)
    guard let result = UInt32(exactly: value) else { throw RelayStoreError.storage("\(column) out of range") }
    return result
}

private func role(_ row: Row) throws -> ChannelRole {
    guard let role = ChannelRole(rawValue: UInt8(truncatingIfNeeded: try int64(row, "role"))) else {
        throw RelayStoreError.storage("unknown role")
    }
    return role
}
