import Foundation
import GRDB
import ShroudCrypto

/// Tables of the session layer and of the contact book (migration "v2-session-stores-and-contacts").
/// Public data (pinned identities, trust decisions, contacts, prekey public halves) is in clear;
/// every secret column is a `RowCipher` box whose associated data names the table and the row key.
enum SessionStoreSchema {
    static func create(_ db: Database) throws {
        try db.create(table: "pinned_identity") { t in
            t.primaryKey("signing_key", .blob)
            t.column("agreement_key", .blob).notNull()
            t.column("agreement_signature", .blob).notNull()
            t.column("decision", .integer).notNull()
        }
        try db.create(table: "one_time_prekey") { t in
            t.primaryKey("id", .integer)
            t.column("public_key", .blob).notNull()
            t.column("sealed_secret", .blob).notNull()
        }
        try db.create(table: "signed_prekey") { t in
            t.primaryKey("id", .integer)
            t.column("sealed_record", .blob).notNull()
        }
        try db.create(table: "session") { t in
            t.primaryKey("remote_signing_key", .blob)
            t.column("sealed_record", .blob).notNull()
        }
        try db.create(table: "own_sender_key") { t in
            t.primaryKey("channel", .blob)
            t.column("sealed_record", .blob).notNull()
        }
        try db.create(table: "sender_key") { t in
            t.column("channel", .blob).notNull()
            t.column("sender", .blob).notNull()
            t.column("sealed_record", .blob).notNull()
            t.primaryKey(["channel", "sender"])
        }
        try db.create(table: "contact") { t in
            t.primaryKey("name", .text)
            t.column("signing_key", .blob).notNull().unique()
            t.column("trust", .text).notNull()
            t.column("previous_signing_key", .blob)
            t.column("added_at", .datetime).notNull()
            t.column("changed_at", .datetime).notNull()
        }
    }
}

func rowKey(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
}

extension Row {
    /// A blob column; a value of another type is a decoding error (`ProfileStore.wrap` turns it
    /// into a one-line `ProfileError`), never a crash.
    func bytes(_ column: String) throws -> [UInt8] { [UInt8](try decode(Data.self, forColumn: column)) }
}

func hexPrefix(_ bytes: [UInt8]) -> String {
    bytes.prefix(8).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

/// Decodes a stored record, turning a format error into a one-line profile error.
func parseStored<T>(_ what: String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch {
        throw ProfileError.corrupt("stored \(what) does not parse: \(error)")
    }
}

// MARK: Identity

/// Pinned remote identities and trust decisions, in clear (they are public). The local identity's
/// private keys are not stored here: they derive from the sealed recovery entropy.
public final class SQLiteIdentityStore: IdentityStore {
    public let localIdentity: IdentityKeyPair
    private let profile: ProfileStore

    public init(profile: ProfileStore, localIdentity: IdentityKeyPair) {
        self.profile = profile
        self.localIdentity = localIdentity
    }

    public func pinnedIdentity(signingKey: [UInt8]) throws -> (identity: PublicIdentity, decision: TrustDecision)? {
        try profile.wrap {
            try profile.read { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM pinned_identity WHERE signing_key = ?",
                                                 arguments: [Data(signingKey)]) else { return nil }
                let raw = try row.decode(Int.self, forColumn: "decision")
                guard let decision = UInt8(exactly: raw).flatMap(TrustDecision.init(rawValue:)) else {
                    throw ProfileError.corrupt("pinned identity \(hexPrefix(signingKey)) has unknown trust decision \(raw)")
                }
                // The binding signature is checked again on every read, so an edited row cannot
                // slip in another agreement key.
                let identity = try parseStored("pinned identity \(hexPrefix(signingKey))") {
                    try PublicIdentity(signingKey: row.bytes("signing_key"), agreementKey: row.bytes("agreement_key"),
                                       agreementSignature: row.bytes("agreement_signature"))
                }
                return (identity, decision)
            }
        }
    }

    public func pin(_ identity: PublicIdentity, decision: TrustDecision) throws {
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: """
                    INSERT OR REPLACE INTO pinned_identity (signing_key, agreement_key, agreement_signature, decision)
                    VALUES (?, ?, ?, ?)
                    """, arguments: [Data(identity.signingKey), Data(identity.agreementKey),
                                     Data(identity.agreementSignature), Int(decision.rawValue)])
            }
        }
    }
}

// MARK: Prekeys

/// Our prekeys. One-time prekeys keep their public half in clear and the private half sealed;
/// signed prekeys are sealed whole (their storage form carries the private key).
public final class SQLitePreKeyStore: PreKeyStore, SignedPreKeyStore {
    private let profile: ProfileStore
    private let cipher: RowCipher

    public init(profile: ProfileStore, secrets: ProfileSecrets) {
        self.profile = profile
        cipher = RowCipher(secrets: secrets)
    }

    public func oneTimePreKey(id: UInt32) throws -> OneTimePreKey? {
        guard let (publicKey, sealed) = try profile.wrap({
            try profile.read { db in
                try Row.fetchOne(db, sql: "SELECT public_key, sealed_secret FROM one_time_prekey WHERE id = ?", arguments: [Int64(id)])
                    .map { (try $0.bytes("public_key"), try $0.bytes("sealed_secret")) }
            }
        }) else { return nil }
        var secret = try cipher.open(sealed, table: "one_time_prekey",
                                     row: [rowKey(id), publicKey], rowName: "\(id)")
        defer { secret.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        guard secret.count == 32, publicKey.count == 32 else {
            throw ProfileError.corrupt("one-time prekey \(id) has wrong key lengths")
        }
        return OneTimePreKey(id: id, publicKey: publicKey, secret: SecureBytes(copying: secret))
    }

    public func storeOneTimePreKey(_ key: OneTimePreKey) throws {
        let sealed = try cipher.seal(key.secret.bytes, table: "one_time_prekey", row: [rowKey(key.id), key.publicKey])
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO one_time_prekey (id, public_key, sealed_secret) VALUES (?, ?, ?)",
                               arguments: [Int64(key.id), Data(key.publicKey), Data(sealed)])
            }
        }
    }

    public func removeOneTimePreKey(id: UInt32) throws {
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "DELETE FROM one_time_prekey WHERE id = ?", arguments: [Int64(id)])
            }
        }
    }

    public var oneTimePreKeyCount: Int {
        get throws {
            try profile.wrap {
                try profile.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM one_time_prekey") ?? 0 }
            }
        }
    }

    public func signedPreKey(id: UInt32) throws -> SignedPreKey? {
        guard let sealed = try profile.wrap({
            try profile.read { db in
                try Data.fetchOne(db, sql: "SELECT sealed_record FROM signed_prekey WHERE id = ?", arguments: [Int64(id)])
            }
        }) else { return nil }
        return try openSignedPreKey([UInt8](sealed), id: id)
    }

    public func storeSignedPreKey(_ key: SignedPreKey) throws {
        let sealed = try cipher.seal(key.serialize(), table: "signed_prekey", row: [rowKey(key.id)])
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO signed_prekey (id, sealed_record) VALUES (?, ?)",
                               arguments: [Int64(key.id), Data(sealed)])
            }
        }
    }

    public func removeSignedPreKey(id: UInt32) throws {
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "DELETE FROM signed_prekey WHERE id = ?", arguments: [Int64(id)])
            }
        }
    }

    public func allSignedPreKeys() throws -> [SignedPreKey] {
        let rows = try profile.wrap {
            try profile.read { db in
                try Row.fetchAll(db, sql: "SELECT id, sealed_record FROM signed_prekey ORDER BY id")
                    .map { (try $0.decode(Int64.self, forColumn: "id"), try $0.bytes("sealed_record")) }
            }
        }
        return try rows.map { raw, sealed in
            guard let id = UInt32(exactly: raw) else { throw ProfileError.corrupt("signed prekey id \(raw) out of range") }
            return try openSignedPreKey(sealed, id: id)
        }
    }

    private func openSignedPreKey(_ sealed: [UInt8], id: UInt32) throws -> SignedPreKey {
        let plain = try cipher.open(sealed, table: "signed_prekey", row: [rowKey(id)], rowName: "\(id)")
        let key = try parseStored("signed prekey \(id)") { try SignedPreKey(parsing: plain) }
        guard key.id == id else { throw ProfileError.corrupt("signed prekey row \(id) holds key \(key.id)") }
        return key
    }
}

// MARK: Sessions

/// Pairwise session records, sealed, one row per remote identity (the row key is its signing key).
public final class SQLiteSessionStore: SessionStore {
    private let profile: ProfileStore
    private let cipher: RowCipher

    public init(profile: ProfileStore, secrets: ProfileSecrets) {
        self.profile = profile
        cipher = RowCipher(secrets: secrets)
    }

    public func sessionRecord(for remoteSigningKey: [UInt8]) throws -> SessionRecord? {
        guard let sealed = try profile.wrap({
            try profile.read { db in
                try Data.fetchOne(db, sql: "SELECT sealed_record FROM session WHERE remote_signing_key = ?",
                                  arguments: [Data(remoteSigningKey)])
            }
        }) else { return nil }
        let name = hexPrefix(remoteSigningKey)
        let plain = try cipher.open([UInt8](sealed), table: "session", row: [remoteSigningKey], rowName: name)
        return try parseStored("session with \(name)") { try SessionRecord(parsing: plain) }
    }

    public func storeSessionRecord(_ record: SessionRecord, for remoteSigningKey: [UInt8]) throws {
        let sealed = try cipher.seal(record.serialize(), table: "session", row: [remoteSigningKey])
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO session (remote_signing_key, sealed_record) VALUES (?, ?)",
                               arguments: [Data(remoteSigningKey), Data(sealed)])
            }
        }
    }

    public func removeSessionRecord(for remoteSigningKey: [UInt8]) throws {
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "DELETE FROM session WHERE remote_signing_key = ?", arguments: [Data(remoteSigningKey)])
            }
        }
    }
}

// MARK: Sender keys

/// Channel sender keys, sealed: our own per channel (row key: channel), and each member's
/// (row key: channel, member's signing key).
public final class SQLiteSenderKeyStore: SenderKeyStore {
    private let profile: ProfileStore
    private let cipher: RowCipher

    public init(profile: ProfileStore, secrets: ProfileSecrets) {
        self.profile = profile
        cipher = RowCipher(secrets: secrets)
    }

    public func ownSenderKey(channel: [UInt8]) throws -> OwnSenderKey? {
        guard let sealed = try profile.wrap({
            try profile.read { db in
                try Data.fetchOne(db, sql: "SELECT sealed_record FROM own_sender_key WHERE channel = ?", arguments: [Data(channel)])
            }
        }) else { return nil }
        let name = hexPrefix(channel)
        let plain = try cipher.open([UInt8](sealed), table: "own_sender_key", row: [channel], rowName: name)
        return try parseStored("own sender key in channel \(name)") { try OwnSenderKey(parsing: plain) }
    }

    public func storeOwnSenderKey(_ key: OwnSenderKey, channel: [UInt8]) throws {
        let sealed = try cipher.seal(key.serialize(), table: "own_sender_key", row: [channel])
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO own_sender_key (channel, sealed_record) VALUES (?, ?)",
                               arguments: [Data(channel), Data(sealed)])
            }
        }
    }

    public func senderKeyRecord(channel: [UInt8], sender: [UInt8]) throws -> SenderKeyRecord? {
        guard let sealed = try profile.wrap({
            try profile.read { db in
                try Data.fetchOne(db, sql: "SELECT sealed_record FROM sender_key WHERE channel = ? AND sender = ?",
                                  arguments: [Data(channel), Data(sender)])
            }
        }) else { return nil }
        let name = hexPrefix(channel) + "/" + hexPrefix(sender)
        let plain = try cipher.open([UInt8](sealed), table: "sender_key", row: [channel, sender], rowName: name)
        return try parseStored("sender key \(name)") { try SenderKeyRecord(parsing: plain) }
    }

    public func storeSenderKeyRecord(_ record: SenderKeyRecord, channel: [UInt8], sender: [UInt8]) throws {
        let sealed = try cipher.seal(record.serialize(), table: "sender_key", row: [channel, sender])
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO sender_key (channel, sender, sealed_record) VALUES (?, ?, ?)",
                               arguments: [Data(channel), Data(sender), Data(sealed)])
            }
        }
    }

    public func removeSender(channel: [UInt8], sender: [UInt8]) throws {
        try profile.wrap {
            try profile.write { db in
                try db.execute(sql: "DELETE FROM sender_key WHERE channel = ? AND sender = ?", arguments: [Data(channel), Data(sender)])
            }
        }
    }

    public func senders(channel: [UInt8]) throws -> [[UInt8]] {
        // SQLite orders blobs by memcmp, the same byte-wise order as the in-memory store.
        try profile.wrap {
            try profile.read { db in
                try Data.fetchAll(db, sql: "SELECT sender FROM sender_key WHERE channel = ? ORDER BY sender", arguments: [Data(channel)])
                    .map { [UInt8]($0) }
            }
        }
    }
}
