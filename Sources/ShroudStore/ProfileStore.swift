import Foundation
import GRDB

/// Failures of the client profile, each a one-line reason.
public enum ProfileError: Error, Equatable, Sendable, CustomStringConvertible {
    case noIdentity(home: String)
    case identityExists(home: String)
    case unreadable(String)
    case corrupt(String)
    /// An encrypted row did not authenticate: altered, or copied from another row.
    case rowAuthenticationFailed(table: String, row: String)

    public var description: String {
        switch self {
        case let .noIdentity(home): return "no identity in \(home): run 'shroud id new' or 'shroud id restore' first"
        case let .identityExists(home): return "an identity already exists in \(home); use another --home to create a second one"
        case let .unreadable(reason): return "cannot open the profile: \(reason)"
        case let .corrupt(reason): return "the profile is damaged: \(reason)"
        case let .rowAuthenticationFailed(table, row):
            return "the profile is damaged: row \(row) of table \(table) failed authentication (altered, or moved from another row)"
        }
    }
}

/// The public part of the profile's identity, stored in clear (it is public by nature).
public struct StoredIdentity: Equatable, Sendable {
    public var signingKey: [UInt8]
    public var agreementKey: [UInt8]
    public var agreementSignature: [UInt8]
    public var createdAt: Date

    public init(signingKey: [UInt8], agreementKey: [UInt8], agreementSignature: [UInt8], createdAt: Date) {
        self.signingKey = signingKey
        self.agreementKey = agreementKey
        self.agreementSignature = agreementSignature
        self.createdAt = createdAt
    }
}

/// The client's profile: one SQLite database (`profile.sqlite`, WAL) under the profile directory.
/// Secrets are stored only as records sealed by the keystore (Argon2id + AES-256-GCM); this type
/// never sees them in clear. The directory and files are private to the user (0700/0600).
public final class ProfileStore: Sendable {
    public static let fileName = "profile.sqlite"
    public let home: String
    let database: DatabasePool

    /// Opens the profile in `home`, creating the directory and database when `create` is true.
    public init(home: String, create: Bool) throws {
        self.home = home
        let path = home + "/" + Self.fileName
        let files = FileManager.default
        if !files.fileExists(atPath: path) {
            guard create else { throw ProfileError.noIdentity(home: home) }
            do {
                try files.createDirectory(atPath: home, withIntermediateDirectories: true,
                                          attributes: [.posixPermissions: 0o700])
            } catch {
                throw ProfileError.unreadable("cannot create \(home): \(Self.reason(error))")
            }
            // Create the file private before SQLite opens it; the -wal and -shm files SQLite adds
            // later take the same permissions.
            guard files.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw ProfileError.unreadable("cannot create \(path)")
            }
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch let error as DatabaseError {
            throw ProfileError.corrupt("\(path): \(error.message ?? "\(error.resultCode)")")
        } catch {
            throw ProfileError.unreadable("\(path): \(Self.reason(error))")
        }
    }

    /// Schema history. Migrations are append-only: a profile written by any earlier version opens.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-identity") { db in
            try db.create(table: "identity") { t in
                t.primaryKey("slot", .integer).check { $0 == 1 }
                t.column("signing_key", .blob).notNull()
                t.column("agreement_key", .blob).notNull()
                t.column("agreement_signature", .blob).notNull()
                t.column("created_at", .datetime).notNull()
            }
            try db.create(table: "sealed_secret") { t in
                t.primaryKey("name", .text)
                t.column("record", .blob).notNull()
            }
            try db.create(table: "setting") { t in
                t.primaryKey("key", .text)
                t.column("value", .text).notNull()
            }
        }
        migrator.registerMigration("v2-session-stores-and-contacts", migrate: SessionStoreSchema.create)
        migrator.registerMigration("v3-channels", migrate: ChannelBook.createSchema)
        return migrator
    }

    // MARK: Identity

    public func identity() throws -> StoredIdentity? {
        try wrap {
            try read { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM identity WHERE slot = 1") else { return nil }
                return StoredIdentity(
                    signingKey: [UInt8](row["signing_key"] as Data), agreementKey: [UInt8](row["agreement_key"] as Data),
                    agreementSignature: [UInt8](row["agreement_signature"] as Data), createdAt: row["created_at"])
            }
        }
    }

    /// Stores a new identity with its sealed secret in one transaction; refuses to replace one.
    public func createIdentity(_ identity: StoredIdentity, sealedSecretName: String, sealedSecret: [UInt8]) throws {
        try wrap {
            try write { db in
                if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM identity") ?? 0 > 0 {
                    throw ProfileError.identityExists(home: home)
                }
                try db.execute(sql: """
                    INSERT INTO identity (slot, signing_key, agreement_key, agreement_signature, created_at)
                    VALUES (1, ?, ?, ?, ?)
                    """, arguments: [Data(identity.signingKey), Data(identity.agreementKey),
                                     Data(identity.agreementSignature), identity.createdAt])
                try db.execute(sql: "INSERT INTO sealed_secret (name, record) VALUES (?, ?)",
                               arguments: [sealedSecretName, Data(sealedSecret)])
            }
        }
    }

    // MARK: Sealed secrets

    public func sealedSecret(named name: String) throws -> [UInt8]? {
        try wrap {
            try read { db in
                try Data.fetchOne(db, sql: "SELECT record FROM sealed_secret WHERE name = ?", arguments: [name]).map { [UInt8]($0) }
            }
        }
    }

    public func storeSealedSecret(_ record: [UInt8], named name: String) throws {
        try wrap {
            try write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO sealed_secret (name, record) VALUES (?, ?)",
                               arguments: [name, Data(record)])
            }
        }
    }

    /// Replaces the sealed secret `name` by `record` under `newName`, in one transaction.
    public func replaceSealedSecret(named name: String, with record: [UInt8], newName: String) throws {
        try wrap {
            try write { db in
                try db.execute(sql: "DELETE FROM sealed_secret WHERE name = ?", arguments: [name])
                try db.execute(sql: "INSERT OR REPLACE INTO sealed_secret (name, record) VALUES (?, ?)",
                               arguments: [newName, Data(record)])
            }
        }
    }

    // MARK: Settings

    public func setting(_ key: String) throws -> String? {
        try wrap { try read { db in try String.fetchOne(db, sql: "SELECT value FROM setting WHERE key = ?", arguments: [key]) } }
    }

    public func setSetting(_ key: String, _ value: String) throws {
        try wrap {
            try write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO setting (key, value) VALUES (?, ?)", arguments: [key, value])
            }
        }
    }

    // MARK: Transactions

    /// Runs `body` in one write transaction: every store write it makes on this profile (from this
    /// thread) commits together or not at all — e.g. a ratchet step and the message it decrypted.
    public func atomically<T>(_ body: () throws -> T) throws -> T {
        if batchDatabase != nil { return try body() }
        return try wrap {
            try database.write { db in
                let key = batchKey
                Thread.current.threadDictionary[key] = db
                defer { Thread.current.threadDictionary.removeObject(forKey: key) }
                return try body()
            }
        }
    }

    private var batchKey: String { "shroud.profile.transaction.\(ObjectIdentifier(self).hashValue)" }

    /// The open `atomically` transaction on this thread, if any.
    private var batchDatabase: Database? { Thread.current.threadDictionary[batchKey] as? Database }

    /// A write: inside `atomically`, part of its transaction; else a transaction of its own.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        if let db = batchDatabase { return try body(db) }
        return try database.write(body)
    }

    /// A read: inside `atomically`, seeing its uncommitted writes; else a snapshot of its own.
    func read<T>(_ body: (Database) throws -> T) throws -> T {
        if let db = batchDatabase { return try body(db) }
        return try database.read(body)
    }

    /// Deletes a sealed secret (no-op if absent).
    public func removeSealedSecret(named name: String) throws {
        try wrap { try write { db in try db.execute(sql: "DELETE FROM sealed_secret WHERE name = ?", arguments: [name]) } }
    }

    func wrap<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as ProfileError {
            throw error
        } catch let error as DatabaseError {
            throw ProfileError.corrupt(error.message ?? "\(error.resultCode)")
        } catch is RowDecodingError {
            // GRDB's own text lists the whole row and statement; one line is enough here.
            throw ProfileError.corrupt("a column holds a value of the wrong type")
        }
    }

    private static func reason(_ error: Error) -> String {
        (error as NSError).localizedDescription
    }
}
