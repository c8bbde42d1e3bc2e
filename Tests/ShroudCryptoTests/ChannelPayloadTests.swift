import Foundation
import Testing
@testable import ShroudCrypto
import ShroudWire

@Suite struct ChannelPayloadTests {
    let channel = try! ChannelID([UInt8](repeating: 0xC3, count: 16))
    let other = try! ChannelID([UInt8](repeating: 0xC4, count: 16))

    @Test func agreementBindingLabelMatchesTheWireLabel() {
        #expect(PublicIdentity.agreementBindingLabel == IdentityAgreementKey.bindingLabel)
    }

    @Test func directPayloadRoundTripsAndRefusesUnknownKindsAndCuts() throws {
        var random = SeededRandom(seed: 1)
        let own = OwnSenderKey(random: &random)
        let text = DirectPayload.text(DirectText(sentAt: 42, text: "hé"))
        guard case let .text(back) = try DirectPayload(parsing: text.serialize()) else { Issue.record("not text"); return }
        #expect(back == DirectText(sentAt: 42, text: "hé"))
        let key = DirectPayload.senderKey(channel: channel, distribution: own.distribution)
        let bytes = key.serialize()
        #expect(bytes.count == 1 + ChannelID.size + SenderKeyDistributionMessage.length)
        guard case let .senderKey(id, distribution) = try DirectPayload(parsing: bytes) else { Issue.record("not a key"); return }
        #expect(id == channel && distribution.keyId == own.keyId && distribution.signingKey == own.signingKey)
        #expect(throws: CryptoError.self) { try DirectPayload(parsing: []) }
        #expect(throws: CryptoError.self) { try DirectPayload(parsing: [0x03] + bytes.dropFirst()) }
        for cut in 1..<bytes.count { #expect(throws: (any Error).self) { try DirectPayload(parsing: Array(bytes.prefix(cut))) } }
        #expect(throws: (any Error).self) { try DirectPayload(parsing: bytes + [0]) }
    }

    @Test func channelPayloadKindsAndLimit() throws {
        let text = try ChannelPayload.text("hello", sentAt: 7)
        #expect(try ChannelPayload(parsing: text.serialize()) == text)
        #expect(text.text == "hello")
        let voice = try ChannelPayload(kind: try #require(ChannelPayload.Kind(rawValue: 0x10)), sentAt: 1, body: [9, 9])
        #expect(try ChannelPayload(parsing: voice.serialize()) == voice)
        #expect(voice.text == nil && voice.kind.isControl)
        for refused: UInt8 in [0x00, 0x02, 0x0F, 0x80, 0xFF] { #expect(ChannelPayload.Kind(rawValue: refused) == nil) }
        #expect(throws: CryptoError.self) { try ChannelPayload(parsing: [0x02] + [UInt8](repeating: 0, count: 8)) }
        #expect(throws: (any Error).self) { try ChannelPayload(parsing: [0x01, 0, 0, 0]) }
        #expect(throws: CryptoError.self) { try ChannelPayload(parsing: [0x01] + [UInt8](repeating: 0, count: 8) + [0xFF]) }
        // The body limit: at it, and one past it.
        _ = try ChannelPayload(kind: .text, sentAt: 0, body: [UInt8](repeating: 0x61, count: ChannelPayload.maximumBodyLength))
        #expect(throws: CryptoError.self) {
            try ChannelPayload(kind: .text, sentAt: 0, body: [UInt8](repeating: 0x61, count: ChannelPayload.maximumBodyLength + 1))
        }
        #expect(ChannelPayload.maximumBodyLength + ChannelPayload.headerLength == SenderKeyMessage.maxPlaintextLength)
    }

    @Test func metadataHidesTheNameAndOpensOnlyWithTheSecretAndChannel() throws {
        var random = SeededRandom(seed: 2)
        let secret = ChannelSecret(random: &random)
        let blob = try secret.sealMetadata(name: "project-x", channel: channel, random: &random)
        #expect(SessionLimits.isPaddingBucket(blob.count))
        #expect(!Data(blob).contains(Data("project-x".utf8)))
        #expect(try secret.openMetadata(blob, channel: channel) == "project-x")
        #expect(throws: CryptoError.self) { try secret.openMetadata(blob, channel: other) }
        #expect(throws: CryptoError.self) { try ChannelSecret(random: &random).openMetadata(blob, channel: channel) }
        // Name limit: at it, one past it, and empty.
        let longest = String(repeating: "n", count: ChannelSecret.maximumNameBytes)
        #expect(try secret.openMetadata(try secret.sealMetadata(name: longest, channel: channel, random: &random), channel: channel) == longest)
        #expect(throws: CryptoError.self) { try secret.sealMetadata(name: longest + "n", channel: channel, random: &random) }
        #expect(throws: CryptoError.self) { try secret.sealMetadata(name: "", channel: channel, random: &random) }
    }

    @Test func envelopeCarriesSenderAndMessageUnderTheSecret() throws {
        var random = SeededRandom(seed: 3)
        let secret = ChannelSecret(random: &random)
        var own = OwnSenderKey(random: &random)
        let message = try own.encrypt(Array("hi".utf8), associatedData: channel.bytes)
        let sender = [UInt8](repeating: 0x5E, count: 32)
        let blob = try secret.sealEnvelope(sender: sender, message: message, channel: channel, random: &random)
        #expect(SessionLimits.isPaddingBucket(blob.count))
        #expect(!Data(blob).contains(Data(sender)))
        let opened = try secret.openEnvelope(blob, channel: channel)
        #expect(opened.sender == sender && opened.message == message)
        #expect(throws: CryptoError.self) { try secret.openEnvelope(blob, channel: other) }
        var flipped = blob
        flipped[20] ^= 1
        #expect(throws: (any Error).self) { try secret.openEnvelope(flipped, channel: channel) }
    }

    @Test func inviteRoundTripsAndRefusesMalformedStrings() throws {
        var random = SeededRandom(seed: 4)
        let invite = ChannelInvite(token: try InviteToken(random.bytes(InviteToken.size)), channel: channel, secret: ChannelSecret(random: &random))
        let text = invite.text
        #expect(text.hasPrefix(ChannelInvite.prefix))
        #expect(text.count == ChannelInvite.prefix.count + 86)
        #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
        #expect(try ChannelInvite(parsing: text) == invite)
        #expect(try ChannelInvite(parsing: "  " + text + "\n") == invite)
        #expect(ChannelInvite.looksLikeInvite(text) && !ChannelInvite.looksLikeInvite("general"))
        let body = text.dropFirst(ChannelInvite.prefix.count)
        for bad in ["", "general", "shroud-invite-2." + body, ChannelInvite.prefix, String(text.dropLast()), text + "AA",
                    ChannelInvite.prefix + "!" + body.dropFirst(), ChannelInvite.prefix + "é" + body.dropFirst()] {
            #expect(throws: CryptoError.self, "\(bad)") { try ChannelInvite(parsing: bad) }
        }
    }

    @Test func rotationRule() {
        let me = [UInt8](repeating: 1, count: 32), bob = [UInt8](repeating: 2, count: 32)
        let carol = [UInt8](repeating: 3, count: 32), dave = [UInt8](repeating: 4, count: 32)
        // No key yet: create one and give it to everyone else.
        #expect(SenderKeyAudience.plan(members: [me, bob, carol], holders: [], me: me, hasKey: false)
                == SenderKeyAudience(rotate: true, distributeTo: [bob, carol]))
        // Everyone holds it: nothing to do.
        #expect(SenderKeyAudience.plan(members: [me, bob, carol], holders: [bob, carol], me: me, hasKey: true)
                == SenderKeyAudience(rotate: false, distributeTo: []))
        // A newcomer: a new key for everyone (invariant 4: rotate on join too).
        #expect(SenderKeyAudience.plan(members: [me, bob, carol, dave], holders: [bob, carol], me: me, hasKey: true)
                == SenderKeyAudience(rotate: true, distributeTo: [bob, carol, dave]))
        // Bob left (or was kicked) and holds the key: a new key for the remaining members only.
        #expect(SenderKeyAudience.plan(members: [me, carol, dave], holders: [bob, carol, dave], me: me, hasKey: true)
                == SenderKeyAudience(rotate: true, distributeTo: [carol, dave]))
        // Bob left and Dave joined in between: still a new key, never given to Bob.
        #expect(SenderKeyAudience.plan(members: [me, carol, dave], holders: [bob, carol], me: me, hasKey: true)
                == SenderKeyAudience(rotate: true, distributeTo: [carol, dave]))
        // An interrupted distribution (Carol never got it): start over with a new key.
        #expect(SenderKeyAudience.plan(members: [me, bob, carol], holders: [bob], me: me, hasKey: true)
                == SenderKeyAudience(rotate: true, distributeTo: [bob, carol]))
        // Alone: nobody to give it to, nothing to rotate for.
        #expect(SenderKeyAudience.plan(members: [me], holders: [], me: me, hasKey: true) == SenderKeyAudience(rotate: false, distributeTo: []))
    }

    @Test func waitingMessagesHoldBackLaterOnesUntilTheyGiveUp() {
        let give = ChannelMessageOrder.giveUpAfterMilliseconds
        typealias E = ChannelMessageOrder.Entry
        let entries = [E(sequence: 3, receivedAt: 1000, state: .decrypted), E(sequence: 5, receivedAt: 1000, state: .waiting),
                       E(sequence: 4, receivedAt: 1000, state: .decrypted), E(sequence: 6, receivedAt: 1000, state: .decrypted)]
        // In order up to the first waiting message.
        #expect(ChannelMessageOrder.decide(entries, now: 1000) == .init(show: [3, 4], giveUp: []))
        // One millisecond before the limit, still waiting; at the limit, given up and the rest shown.
        #expect(ChannelMessageOrder.decide(entries, now: 1000 + give - 1) == .init(show: [3, 4], giveUp: []))
        #expect(ChannelMessageOrder.decide(entries, now: 1000 + give) == .init(show: [3, 4, 6], giveUp: [5]))
        // A clock earlier than the delivery never gives up.
        #expect(ChannelMessageOrder.decide([E(sequence: 1, receivedAt: 5000, state: .waiting)], now: 10) == .init(show: [], giveUp: []))
        #expect(ChannelMessageOrder.decide([], now: 0) == .init(show: [], giveUp: []))
    }
}
