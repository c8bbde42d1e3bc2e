@testable import ShroudRelayCore

/// Every store implementation the relay tests run against.
let relayStoreKinds: [StoreKind] = [
    StoreKind(description: "in-memory", make: { InMemoryRelayStore() }),
]
