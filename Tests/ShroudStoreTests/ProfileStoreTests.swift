import Foundation
import Testing
@testable import ShroudStore

@Suite struct ProfileStoreTests {
    private func temporaryHome() -> String {
        NSTemporaryDirectory() + "shroud-store-\(UUID().uuidString)/profile"
    }

    private let sample = StoredIdentity(signingKey: Array(repeating: 1, count: 32), agreementKey: Array(repeating: 2, count: 32),
                                        agreementSignature: Array(repeating: 3, count: 64), createdAt: Date(timeIntervalSince1970: 1_700_000_000))

    @Test func opensOnlyWhatExistsUnlessAskedToCreate() throws {
        let home = temporaryHome()
        #expect(throws: ProfileError.noIdentity(home: home)) { try ProfileStore(home: home, create: false) }
        _ = try ProfileStore(home: home, create: true)
        let attributes = try FileManager.default.attributesOfItem(atPath: home)
        #expect((attributes[.posixPermissions] as? Int) == 0o700)
        let file = try FileManager.default.attributesOfItem(atPath: home + "/" + ProfileStore.fileName)
        #expect((file[.posixPermissions] as? Int) == 0o600)
    }

    @Test func identityIsStoredOnceAndSurvivesReopening() throws {
        let home = temporaryHome()
        do {
            let store = try ProfileStore(home: home, create: true)
            #expect(try store.identity() == nil)
            try store.createIdentity(sample, sealedSecretName: "recovery", sealedSecret: [9, 9, 9])
            #expect(throws: ProfileError.identityExists(home: home)) {
                try store.createIdentity(sample, sealedSecretName: "recovery", sealedSecret: [1])
            }
        }
        let reopened = try ProfileStore(home: home, create: false)
        #expect(try reopened.identity() == sample)
        #expect(try reopened.sealedSecret(named: "recovery") == [9, 9, 9], "a refused second identity changes nothing")
        #expect(try reopened.sealedSecret(named: "other") == nil)
        try reopened.setSetting("server", "ws://a")
        try reopened.setSetting("server", "ws://b")
        #expect(try reopened.setting("server") == "ws://b")
    }

    @Test func aFileThatIsNotADatabaseIsAClearError() throws {
        let home = temporaryHome()
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        try Data("this is not sqlite at all, just some text that fills a page".utf8).write(to: URL(fileURLWithPath: home + "/" + ProfileStore.fileName))
        #expect(throws: ProfileError.self) { try ProfileStore(home: home, create: false) }
    }
}
