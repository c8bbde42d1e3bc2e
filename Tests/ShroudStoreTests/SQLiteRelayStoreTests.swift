import Foundation
import GRDB
import Testing
import ShroudRelayCore
import ShroudWire
import ShroudCrypto
@testable import ShroudStore

/// What only the SQLite store must show; the behaviour shared with the in-memory store is tested
/// by ShroudRelayCoreTests against both.
@Suite struct SQLiteRelayStoreTests {
    private func temporaryPath() -> String {
        NSTemporaryDirectory() + "shroud-relay-store-\(UUID().uuidString)/data/relay.db"
    }
    private func key(_ byte: UInt8) -> IdentityKey { try! IdentityKey([UInt8](repeating: byte, count: 32)) }
    private func messageID(_ byte: UInt8) -> MessageID { try! MessageID([UInt8](repeating: byte, count: 16)) }

    @Test func parsesSqliteURLs() {
        #expect(SQLiteRelayStore.path(fromDatabaseURL: "sqlite://./data/shroud.db") == "./data/shroud.db")
        #expect(SQLiteRelayStore.path(fromDatabaseURL: "sqlite:///var/lib/shroud/relay.db") == "/var/lib/shroud/relay.db")
        #expect(SQLiteRelayStore.path(fromDatabaseURL: "sqlite://") == nil)
        #expect(SQLiteRelayStore.path(fromDatabaseURL: "postgres://h/db") == nil)
    }

    /// A database written before the agreement key existed (v1 schema, a signed prekey row without
    /// it) opens, gives no bundle for that owner, and gives one again once the owner publishes.
    @Test func prekeysFromBeforeTheAgreementKeyGiveNoBundleUntilRepublished() throws {
        let path = temporaryPath()
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        do {
            let queue = try DatabaseQueue(path: path)
            var v1 = DatabaseMigrator()
            v1.registerMigration("v1-relay") { db in
                try db.execute(sql: """
                    CREATE TABLE signed_prekey (
                        owner BLOB PRIMARY KEY NOT NULL, key_id INTEGER NOT NULL, key BLOB NOT NULL, signature BLOB NOT NULL);
                    CREATE TABLE one_time_prekey (
                        rowid INTEGER PRIMARY KEY, owner BLOB NOT NULL, key_id INTEGER NOT NULL, key BLOB NOT NULL,
                        UNIQUE (owner, key_id));
                    """)
            }
            try v1.migrate(queue, upTo: "v1-relay")
            try queue.write { db in
                try db.execute(sql: "INSERT INTO signed_prekey (owner, key_id, key, signature) VALUES (?, 1, ?, ?)",
                               arguments: [Data(key(5).bytes), Data(repeating: 1, count: 32), Data(repeating: 2, count: 64)])
            }
        }
        // The real migrator continues from v1 (its v1 creates more tables, but GRDB only runs the
        // migrations not yet recorded, so this checks v2 applies to a v1 signed_prekey table).
        let store = try SQLiteRelayStore(path: path)
        #expect(try store.takeBundle(owner: key(5)) == nil)
        let agreement = IdentityAgreementKey(key: try PrekeyPublicKey([UInt8](repeating: 3, count: 32)),
                                             signature: try Ed25519Signature([UInt8](repeating: 4, count: 64)))
        let signed = SignedPrekey(id: 2, key: try PrekeyPublicKey([UInt8](repeating: 1, count: 32)),
                                  signature: try Ed25519Signature([UInt8](repeating: 2, count: 64)))
        #expect(try store.publishPrekeys(owner: key(5), agreement: agreement, signed: signed, oneTime: [], maximumOneTime: 10))
        #expect(try store.takeBundle(owner: key(5)) == PrekeyBundle(identity: key(5), agreement: agreement, signedPrekey: signed, oneTimePrekey: nil))
    }

    @Test func committedMessagesSurviveReopeningAndUseWAL() throws {
        let path = temporaryPath()
        do {
            let store = try SQLiteRelayStore(path: path)
            let sequence = try store.enqueueDirect(id: messageID(1), recipient: key(2), receivedAt: 10, expiresAt: 1000,
                                                   blob: [UInt8](repeating: 7, count: 256), maximumQueued: 10)
            #expect(sequence == 1)
        }
        let reopened = try SQLiteRelayStore(path: path)
        #expect(try reopened.journalMode() == "wal")
        let pending = try reopened.pendingDirect(recipient: key(2), afterSequence: 0, limit: 10)
        #expect(pending == [QueuedDirectMessage(sequence: 1, id: messageID(1), receivedAt: 10, blob: [UInt8](repeating: 7, count: 256))])
        // Sequences are never reused, even after deletion (AUTOINCREMENT), so delivery cursors stay valid.
        #expect(try reopened.deleteDirect(recipient: key(2), ids: [messageID(1)]) == 1)
        #expect(try reopened.enqueueDirect(id: messageID(3), recipient: key(2), receivedAt: 11, expiresAt: 1000,
                                           blob: [UInt8](repeating: 7, count: 256), maximumQueued: 10) == 2)
    }

    /// The database pairs no sender with a recipient: after a direct message and a channel message,
    /// the sender's key appears nowhere in the files (the sender published nothing else).
    @Test func theDatabaseHoldsNoSender() throws {
        let path = temporaryPath()
        let store = try SQLiteRelayStore(path: path)
        let relay = Relay(store: store, relayBinding: "wss://r/ws",
                          limits: RelayLimits(maximumConnections: 10, maximumConnectionsPerIP: 10, messageTTLMilliseconds: 60_000),
                          random: SystemRandomNumberGenerator())
        // The relay core is driven with a real sender connection so the test covers what the core writes.
        let sender = try SigningIdentity()
        let (connection, challenge) = relay.connect(address: "127.0.0.1", now: 1)
        guard case let .send(_, bytes) = try #require(challenge.first), case let .challenge(nonce, deadline, binding) = try SessionFrame(parsing: bytes).message else {
            Issue.record("no challenge"); return
        }
        let answer = try sender.answer(nonce: nonce, deadline: deadline, binding: binding)
        _ = relay.receive(SessionFrame(requestID: 1, answer).serialize(), from: connection, now: 2)
        let marker = [UInt8](repeating: 0x5C, count: 256)
        let sent = relay.receive(SessionFrame(requestID: 2, .sendDirect(recipient: key(0x42), blob: marker)).serialize(), from: connection, now: 3)
        guard case let .send(_, reply) = try #require(sent.first) else { return }
        #expect(try SessionFrame(parsing: reply).message == .ok)
        #expect(try store.pendingDirect(recipient: key(0x42), afterSequence: 0, limit: 10).map(\.blob) == [marker])

        var files = Data()
        for suffix in ["", "-wal"] { files += (try? Data(contentsOf: URL(fileURLWithPath: path + suffix))) ?? Data() }
        #expect(files.range(of: Data(key(0x42).bytes)) != nil, "the recipient is stored")
        #expect(files.range(of: Data(sender.key.bytes)) == nil, "the sender must not be stored")
    }

    /// Two relay processes sharing one database (two pools on one file), fetching bundles at the
    /// same time: every one-time prekey is handed out exactly once.
    @Test func concurrentBundleFetchesNeverShareAOneTimePrekey() async throws {
        let path = temporaryPath()
        let first = try SQLiteRelayStore(path: path)
        let second = try SQLiteRelayStore(path: path)
        let owner = key(9)
        let signed = SignedPrekey(id: 1, key: try PrekeyPublicKey([UInt8](repeating: 1, count: 32)),
                                  signature: try Ed25519Signature([UInt8](repeating: 2, count: 64)))
        let keys = (0..<100).map { OneTimePrekey(id: UInt32($0), key: try! PrekeyPublicKey([UInt8](repeating: UInt8($0), count: 32))) }
        let agreement = IdentityAgreementKey(key: try PrekeyPublicKey([UInt8](repeating: 3, count: 32)),
                                             signature: try Ed25519Signature([UInt8](repeating: 4, count: 64)))
        #expect(try first.publishPrekeys(owner: owner, agreement: agreement, signed: signed, oneTime: keys, maximumOneTime: 500))
        let stores = [first, second]
        let handedOut = try await withThrowingTaskGroup(of: [UInt32].self) { group in
            for worker in 0..<4 {
                let store = UncheckedBox(value: stores[worker % 2])
                group.addTask {
                    var ids: [UInt32] = []
                    for _ in 0..<30 {
                        if let id = try store.value.takeBundle(owner: owner)?.oneTimePrekey?.id { ids.append(id) }
                    }
                    return ids
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(handedOut.count == 100)
        #expect(Set(handedOut).count == 100)
        #expect(try first.oneTimePrekeyCount(owner: owner) == 0)
    }
}

/// Lets a test hand a store to concurrent tasks; the store's own transactions serialise access.
struct UncheckedBox<T>: @unchecked Sendable { let value: T }

/// A client identity from ShroudCrypto, answering the relay's challenge as a real client would.
struct SigningIdentity {
    let pair: IdentityKeyPair
    let key: IdentityKey

    init() throws {
        pair = try IdentityKeyPair(signingSeed: SecureBytes(copying: [UInt8](repeating: 0x31, count: 32)),
                                   agreementSecret: SecureBytes(copying: [UInt8](repeating: 0x32, count: 32)))
        key = try IdentityKey(pair.publicIdentity.signingKey)
    }

    func answer(nonce: ChallengeNonce, deadline: UInt64, binding: String) throws -> RelayMessage {
        let transcript = AuthenticationTranscript.bytes(nonce: nonce, deadline: deadline, relayBinding: binding, identity: key)
        return .authenticate(identity: key, signature: try Ed25519Signature(pair.sign(transcript)))
    }
}

@Suite struct RelayBindingTests {
    @Test func createdOnceThenReadBack() throws {
        let directory = NSTemporaryDirectory() + "shroud-relay-id-\(UUID().uuidString)"
        var random = SystemRandomNumberGenerator()
        let first = try RelayBinding.loadOrCreate(directory: directory, random: &random)
        #expect(first.hasPrefix("shroud-relay:") && first.count == 45)
        #expect(try RelayBinding.loadOrCreate(directory: directory, random: &random) == first)
        let other = try RelayBinding.loadOrCreate(directory: directory + "-b", random: &random)
        #expect(other != first)
        try "garbage".write(toFile: directory + "/relay-id", atomically: true, encoding: .utf8)
        #expect(throws: RelayStoreError.self) { try RelayBinding.loadOrCreate(directory: directory, random: &random) }
    }
}

/// Group commit on SQLite: one transaction for a batch, visible to others only once it returns,
/// each call inside still all-or-nothing.
@Suite struct SQLiteRelayStoreBatchTests {
    private func key(_ byte: UInt8) -> IdentityKey { try! IdentityKey([UInt8](repeating: byte, count: 32)) }
    private func messageID(_ byte: UInt8) -> MessageID { try! MessageID([UInt8](repeating: byte, count: 16)) }
    private let path = NSTemporaryDirectory() + "shroud-relay-batch-\(UUID().uuidString)/relay.db"

    @Test func aBatchCommitsOnceWhenItReturns() throws {
        let store = try SQLiteRelayStore(path: path)
        let observer = try SQLiteRelayStore(path: path)
        try store.batch {
            for i in 1...3 {
                _ = try store.enqueueDirect(id: messageID(UInt8(i)), recipient: key(9), receivedAt: 1, expiresAt: 100,
                                            blob: [UInt8(i)], maximumQueued: 10)
            }
            // Inside the batch its own writes show; another connection sees nothing yet.
            #expect(try store.pendingDirect(recipient: key(9), afterSequence: 0, limit: 10).count == 3)
            #expect(try observer.pendingDirect(recipient: key(9), afterSequence: 0, limit: 10).isEmpty)
        }
        #expect(try observer.pendingDirect(recipient: key(9), afterSequence: 0, limit: 10).map(\.blob) == [[1], [2], [3]])
    }

    @Test func aFailingCallInsideChangesNothingAndTheOthersCommit() throws {
        let store = try SQLiteRelayStore(path: path)
        try store.batch {
            _ = try store.enqueueDirect(id: messageID(1), recipient: key(9), receivedAt: 1, expiresAt: 100, blob: [1], maximumQueued: 10)
            // A duplicate message id violates the UNIQUE constraint: this call throws and is undone alone.
            #expect(throws: RelayStoreError.self) {
                _ = try store.enqueueDirect(id: messageID(1), recipient: key(8), receivedAt: 1, expiresAt: 100, blob: [2], maximumQueued: 10)
            }
            #expect(throws: RelayStoreError.self) {
                _ = try store.appendChannelMessage(channel: ChannelID([UInt8](repeating: 4, count: 16)), receivedAt: 1, expiresAt: 100, blob: [3])
            }
            _ = try store.enqueueDirect(id: messageID(2), recipient: key(9), receivedAt: 1, expiresAt: 100, blob: [4], maximumQueued: 10)
        }
        let reopened = try SQLiteRelayStore(path: path)
        #expect(try reopened.pendingDirect(recipient: key(9), afterSequence: 0, limit: 10).map(\.blob) == [[1], [4]])
        #expect(try reopened.pendingDirect(recipient: key(8), afterSequence: 0, limit: 10).isEmpty)
    }

    @Test func aBatchThatThrowsCommitsNothing() throws {
        let store = try SQLiteRelayStore(path: path)
        struct Abandon: Error {}
        #expect(throws: Abandon.self) {
            try store.batch {
                _ = try store.enqueueDirect(id: messageID(1), recipient: key(9), receivedAt: 1, expiresAt: 100, blob: [1], maximumQueued: 10)
                throw Abandon()
            }
        }
        #expect(try store.pendingDirect(recipient: key(9), afterSequence: 0, limit: 10).isEmpty)
        // Batches do not nest.
        #expect(throws: RelayStoreError.self) { try store.batch { try store.batch {} } }
    }
}
