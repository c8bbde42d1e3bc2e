import Foundation
import GRDB
import ShroudCrypto

/// How far a contact's identity is trusted (DESIGN.md §1.2, §5).
public enum ContactTrust: String, Sendable, Equatable, CaseIterable {
    /// Pinned on first use: the key given to `contact add`, not yet checked out of band.
    case unverified
    /// The safety number was compared and confirmed with `contact verify`.
    case verified
    /// The name was re-pinned to another key (`contact add --replace`): nothing may be sent to it
    /// until the new key is verified.
    case changed
}

/// A contact: a local name pinned to an identity's Ed25519 key. The X25519 agreement key is not
/// stored here: it arrives later, signed by this key, and is pinned by the identity store.
public struct Contact: Equatable, Sendable {
    public var name: String
    public var id: IdentityID
    public var trust: ContactTrust
    /// The key the name was pinned to before the last `--replace`, while the change is unverified.
    public var previousID: IdentityID?
    public var addedAt: Date
    public var changedAt: Date

    public var isVerified: Bool { trust == .verified }
}

/// A refusal of the contact book, with a one-line reason the user can act on.
public enum ContactError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidName(String)
    case unknown(name: String)
    case pinnedToAnotherKey(name: String, pinned: IdentityID, offered: IdentityID)
    case identityHasAnotherName(id: IdentityID, name: String)
    case changedUnverified(name: String)
    case blocked(name: String)
    case keyChangedDuringVerification(name: String)

    public var description: String {
        switch self {
        case let .invalidName(reason): return "invalid contact name: \(reason)"
        case let .unknown(name): return "no contact named \"\(name)\""
        case let .pinnedToAnotherKey(name, pinned, offered):
            return "WARNING: contact \"\(name)\" is pinned to \(pinned.text), not \(offered.text); if \(name) really has a new identity, compare safety numbers and re-add with --replace"
        case let .identityHasAnotherName(id, name): return "identity \(id.text) is already the contact \"\(name)\""
        case let .changedUnverified(name):
            return "the identity of \"\(name)\" changed and is not verified: run 'shroud contact verify \(name)' before sending"
        case let .blocked(name): return "contact \"\(name)\" is blocked"
        case let .keyChangedDuringVerification(name): return "the key of \"\(name)\" changed while verifying; verify again"
        }
    }
}

/// What `ContactBook.add` did.
public enum ContactAddOutcome: Equatable, Sendable {
    case added
    /// Same name, same key: nothing to do.
    case alreadyPresent
    /// The name now points at a new key and is in the `changed` state.
    case replaced(previous: IdentityID)
}

/// The contacts of a profile, in the `contact` table (public data, in clear).
public final class ContactBook: Sendable {
    /// Longest contact name, in characters.
    public static let maximumNameLength = 64

    private let profile: ProfileStore

    public init(profile: ProfileStore) { self.profile = profile }

    /// A name is 1...`maximumNameLength` characters without control characters or surrounding
    /// whitespace (it is typed on the command line and printed in one column of `contact list`).
    public static func validate(name: String) throws {
        guard !name.isEmpty else { throw ContactError.invalidName("it is empty") }
        guard name.count <= maximumNameLength else {
            throw ContactError.invalidName("\(name.count) characters, at most \(maximumNameLength)")
        }
        guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format }) else {
            throw ContactError.invalidName("it contains control characters")
        }
        guard name.first?.isWhitespace == false, name.last?.isWhitespace == false else {
            throw ContactError.invalidName("it starts or ends with whitespace")
        }
    }

    /// Pins `name` to `id` on first use. A name already pinned to another key is refused unless
    /// `replace`; a replaced key leaves the contact `changed` until it is verified.
    @discardableResult
    public func add(name: String, id: IdentityID, replace: Bool = false, now: Date = Date()) throws -> ContactAddOutcome {
        try Self.validate(name: name)
        return try profile.wrap {
            try profile.write { db in
                if let owner = try String.fetchOne(db, sql: "SELECT name FROM contact WHERE signing_key = ?", arguments: [Data(id.signingKey)]),
                   owner != name {
                    throw ContactError.identityHasAnotherName(id: id, name: owner)
                }
                guard let existing = try Self.fetch(db, name: name) else {
                    try db.execute(sql: """
                        INSERT INTO contact (name, signing_key, trust, previous_signing_key, added_at, changed_at)
                        VALUES (?, ?, ?, NULL, ?, ?)
                        """, arguments: [name, Data(id.signingKey), ContactTrust.unverified.rawValue, now, now])
                    return .added
                }
                if existing.id == id { return .alreadyPresent }
                guard replace else { throw ContactError.pinnedToAnotherKey(name: name, pinned: existing.id, offered: id) }
                try db.execute(sql: """
                    UPDATE contact SET signing_key = ?, trust = ?, previous_signing_key = ?, changed_at = ? WHERE name = ?
                    """, arguments: [Data(id.signingKey), ContactTrust.changed.rawValue, Data(existing.id.signingKey), now, name])
                return .replaced(previous: existing.id)
            }
        }
    }

    public func contact(named name: String) throws -> Contact? {
        try profile.wrap { try profile.read { db in try Self.fetch(db, name: name) } }
    }

    /// The contact whose key is `id`, if any (to name the sender of an incoming message).
    public func contact(for id: IdentityID) throws -> Contact? {
        try profile.wrap {
            try profile.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM contact WHERE signing_key = ?", arguments: [Data(id.signingKey)])
                    .map(Self.contact(from:))
            }
        }
    }

    /// Every contact, by name.
    public func all() throws -> [Contact] {
        try profile.wrap {
            try profile.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM contact ORDER BY name").map(Self.contact(from:))
            }
        }
    }

    /// Marks `name` verified, provided it is still pinned to `id` (the key whose safety number the
    /// user compared). A pinned identity with that signing key becomes `verified` in the identity
    /// store too, in the same transaction.
    public func markVerified(name: String, id: IdentityID, now: Date = Date()) throws {
        try profile.wrap {
            try profile.write { db in
                guard let existing = try Self.fetch(db, name: name) else { throw ContactError.unknown(name: name) }
                guard existing.id == id else { throw ContactError.keyChangedDuringVerification(name: name) }
                try db.execute(sql: "UPDATE contact SET trust = ?, previous_signing_key = NULL, changed_at = ? WHERE name = ?",
                               arguments: [ContactTrust.verified.rawValue, now, name])
                try db.execute(sql: "UPDATE pinned_identity SET decision = ? WHERE signing_key = ? AND decision != ?",
                               arguments: [Int(TrustDecision.verified.rawValue), Data(id.signingKey), Int(TrustDecision.blocked.rawValue)])
            }
        }
    }

    /// The check `msg send` makes before encrypting to a contact: the contact exists, its key did
    /// not change without verification, and its identity is not blocked. Returns the contact.
    public func requireSendable(_ name: String) throws -> Contact {
        try profile.wrap {
            try profile.read { db in
                guard let contact = try Self.fetch(db, name: name) else { throw ContactError.unknown(name: name) }
                if contact.trust == .changed { throw ContactError.changedUnverified(name: name) }
                let decision = try Int.fetchOne(db, sql: "SELECT decision FROM pinned_identity WHERE signing_key = ?",
                                                arguments: [Data(contact.id.signingKey)])
                if decision == Int(TrustDecision.blocked.rawValue) { throw ContactError.blocked(name: name) }
                return contact
            }
        }
    }

    private static func fetch(_ db: Database, name: String) throws -> Contact? {
        try Row.fetchOne(db, sql: "SELECT * FROM contact WHERE name = ?", arguments: [name]).map(contact(from:))
    }

    private static func contact(from row: Row) throws -> Contact {
        let name = try row.decode(String.self, forColumn: "name")
        guard let trust = ContactTrust(rawValue: try row.decode(String.self, forColumn: "trust")) else {
            throw ProfileError.corrupt("contact \"\(name)\" has an unknown trust state")
        }
        let previous = try row.decode(Data?.self, forColumn: "previous_signing_key").map { [UInt8]($0) }
        let signingKey = try row.bytes("signing_key")
        let addedAt = try row.decode(Date.self, forColumn: "added_at"), changedAt = try row.decode(Date.self, forColumn: "changed_at")
        return try parseStored("contact \"\(name)\"") {
            Contact(name: name, id: try IdentityID(signingKey: signingKey), trust: trust,
                    previousID: try previous.map { try IdentityID(signingKey: $0) }, addedAt: addedAt, changedAt: changedAt)
        }
    }
}
