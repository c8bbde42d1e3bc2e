import Foundation
import ShroudStore
@testable import ShroudRelayCore

/// Every store implementation the relay tests run against: the same suite for each.
let relayStoreKinds: [StoreKind] = [
    StoreKind(description: "in-memory", make: { InMemoryRelayStore() }),
    StoreKind(description: "sqlite", make: { try SQLiteRelayStore(path: temporaryDatabasePath()) }),
]

func temporaryDatabasePath() -> String {
    NSTemporaryDirectory() + "shroud-relay-test-\(UUID().uuidString)/relay.db"
}
