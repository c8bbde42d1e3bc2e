import Foundation
import GRDB
import ShroudCrypto
import ShroudWire
import Testing
@testable import ShroudStore

@Suite struct ChannelBookTests {
    private func channel(_ byte: UInt8, name: String, random: inout SeededRandom) throws -> LocalChannel {
        LocalChannel(id: try ChannelID([UInt8](repeating: byte, count: 16)), secret: ChannelSecret(random: &random), name: name,
                     visibility: .invitation)
    }

    @Test func channelsAreSealedAndFoundByNameOrID() throws {
        let profile = try TestProfile(seed: 80)
        var random = SeededRandom(seed: 81)
        let book = ChannelBook(profile: profile.profile, secrets: profile.secrets)
        var plans = try channel(1, name: "plans-b7e1", random: &random)
        plans.keyHolders = [[UInt8](repeating: 9, count: 32)]
        plans.keyHoldersKeyID = 77
        try book.save(plans)
        let other = try channel(2, name: "other", random: &random)
        try book.save(other)
        #expect(try book.find("plans-b7e1") == plans)
        #expect(try book.find(Hex.encode(other.id.bytes)) == other)
        #expect(try book.find("nothing") == nil)
        #expect(try book.all().map(\.name) == ["plans-b7e1", "other"])
        // Saving again replaces the record (same row).
        plans.isMember = false
        try book.save(plans)
        #expect(try ChannelBook(profile: TestProfile(reopening: profile).profile, secrets: profile.secrets).channel(plans.id) == plans)
        // Two channels with one name: the name is ambiguous, the ids still work.
        try book.save(try channel(3, name: "other", random: &random))
        #expect(throws: ProfileError.self) { try book.find("other") }
        #expect(try book.find(Hex.encode(other.id.bytes)) == other)
        // Neither the name nor the secret is on disk in clear.
        let raw = try profile.rawBytes()
        #expect(raw.range(of: Data("plans-b7e1".utf8)) == nil)
        #expect(raw.range(of: Data(plans.secret.bytes)) == nil)
    }

    @Test func deliveriesAreStoredOnceInOrderThenDecryptedAndRemoved() throws {
        let profile = try TestProfile(seed: 82)
        var random = SeededRandom(seed: 83)
        let book = ChannelBook(profile: profile.profile, secrets: profile.secrets)
        let plans = try channel(1, name: "plans", random: &random)
        let blob = [UInt8](repeating: 0xAB, count: 256)
        // Unknown channel: nothing stored.
        #expect(try book.storeDelivery(channel: plans.id, sequence: 1, receivedAt: 10, blob: blob) == false)
        try book.save(plans)
        #expect(try book.storeDelivery(channel: plans.id, sequence: 4, receivedAt: 10, blob: blob))
        #expect(try book.storeDelivery(channel: plans.id, sequence: 5, receivedAt: 11, blob: blob))
        // A redelivery at or below what is stored is refused, so nothing shows twice.
        #expect(try book.storeDelivery(channel: plans.id, sequence: 5, receivedAt: 11, blob: blob) == false)
        #expect(try book.storeDelivery(channel: plans.id, sequence: 3, receivedAt: 11, blob: blob) == false)
        #expect(try book.storedThrough(plans.id) == 5)
        var entries = try book.entries(channel: plans.id)
        #expect(entries.map(\.sequence) == [4, 5] && entries.allSatisfy { $0.state == .waiting && $0.content == blob })

        // Message 5's key arrived first: 5 is decrypted, 4 still waits, so nothing may be shown yet.
        let sender = [UInt8](repeating: 0x5E, count: 32)
        let payload = try ChannelPayload.text("the decrypted text", sentAt: 99)
        try book.markDecrypted(channel: plans.id, sequence: 5, sender: sender, payload: payload)
        entries = try book.entries(channel: plans.id)
        #expect(entries.map(\.state) == [.waiting, .decrypted])
        #expect(entries[1].content == sender + payload.serialize())
        let order = entries.map { ChannelMessageOrder.Entry(sequence: $0.sequence, receivedAt: $0.receivedAt, state: $0.state) }
        #expect(ChannelMessageOrder.decide(order, now: 20).show.isEmpty)
        // Once 4 is decrypted too, both show in order.
        try book.markDecrypted(channel: plans.id, sequence: 4, sender: sender, payload: payload)
        let ready = try book.entries(channel: plans.id).map { ChannelMessageOrder.Entry(sequence: $0.sequence, receivedAt: $0.receivedAt, state: $0.state) }
        #expect(ChannelMessageOrder.decide(ready, now: 20).show == [4, 5])
        #expect(try profile.rawBytes().range(of: Data("the decrypted text".utf8)) == nil)
        try book.remove(channel: plans.id, sequence: 4)
        try book.remove(channel: plans.id, sequence: 5)
        #expect(try book.entries(channel: plans.id).isEmpty)
        #expect(try book.storedThrough(plans.id) == 5)
    }
}

@Suite struct ProfileTransactionTests {
    struct Stop: Error {}

    /// Everything written inside `atomically` (through any store on the profile) commits together,
    /// or, when the body throws, not at all; reads inside see the uncommitted writes.
    @Test func writesInsideAtomicallyCommitTogetherOrNotAtAll() throws {
        let profile = try TestProfile(seed: 84)
        var random = SeededRandom(seed: 85)
        let book = ChannelBook(profile: profile.profile, secrets: profile.secrets)
        let plans = LocalChannel(id: try ChannelID([UInt8](repeating: 1, count: 16)), secret: ChannelSecret(random: &random),
                                 name: "plans", visibility: .open)
        #expect(throws: Stop.self) {
            try profile.profile.atomically {
                try book.save(plans)
                try profile.profile.setSetting("marker", "1")
                #expect(try book.channel(plans.id) == plans)
                #expect(try profile.profile.setting("marker") == "1")
                // Nested: part of the same transaction.
                try profile.profile.atomically { try profile.profile.storeSealedSecret([1, 2, 3], named: "inbox-row") }
                throw Stop()
            }
        }
        #expect(try book.channel(plans.id) == nil)
        #expect(try profile.profile.setting("marker") == nil)
        #expect(try profile.profile.sealedSecret(named: "inbox-row") == nil)

        try profile.profile.atomically {
            try book.save(plans)
            try profile.profile.storeSealedSecret([1, 2, 3], named: "inbox-row")
        }
        #expect(try book.channel(plans.id) == plans)
        try profile.profile.removeSealedSecret(named: "inbox-row")
        #expect(try profile.profile.sealedSecret(named: "inbox-row") == nil)
    }
}
