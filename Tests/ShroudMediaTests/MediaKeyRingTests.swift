import ShroudCrypto
import Testing
@testable import ShroudMedia

/// The key ring `voice join` fills from media key channel payloads.
@Suite struct MediaKeyRingTests {
    let bob: [UInt8] = [0xB], carol: [UInt8] = [0xC]

    func key(_ id: UInt64, _ byte: UInt8) throws -> MediaKeyAnnouncement {
        try MediaKeyAnnouncement(keyID: id, baseKey: [UInt8](repeating: byte, count: 32), joining: false)
    }

    @Test func ownKeyIsTheSendKey() throws {
        let ring = MediaKeyRing()
        #expect(ring.currentSendKey() == nil && ring.ownKeyID == nil)
        ring.useOwnKey(try key(5, 5))
        #expect(ring.currentSendKey()?.keyID == 5 && ring.currentSendKey()?.baseKey.bytes == [UInt8](repeating: 5, count: 32))
        ring.useOwnKey(try key(6, 6))
        #expect(ring.ownKeyID == 6)
        // Our own keys are not receive keys (the mixer ignores our own stream).
        #expect(ring.receiveKey(id: 5) == nil && ring.receiveKey(id: 6) == nil)
    }

    @Test func aReplacedKeyStaysUsableForItsLifetimeThenIsDropped() throws {
        let ring = MediaKeyRing()
        #expect(ring.install(try key(1, 1), from: bob, now: .zero) == .installed)
        #expect(ring.install(try key(1, 1), from: bob, now: .zero) == .known)
        #expect(ring.install(try key(2, 2), from: bob, now: .seconds(10)) == .installed)
        let edge = Duration.seconds(10) + MediaKeyRing.retiredKeyLifetime
        ring.expire(now: edge - .milliseconds(1))
        #expect(ring.receiveKey(id: 1)?.bytes == [UInt8](repeating: 1, count: 32))
        ring.expire(now: edge)
        #expect(ring.receiveKey(id: 1) == nil)
        #expect(ring.receiveKey(id: 2) != nil, "the current key never expires")
        #expect(ring.heldKeyIDs == [2])
    }

    @Test func aMemberWhoLeftKeepsNoKeyPastTheLifetime() throws {
        let ring = MediaKeyRing()
        ring.install(try key(1, 1), from: bob, now: .zero)
        ring.install(try key(3, 3), from: carol, now: .zero)
        ring.retire(sender: carol, now: .seconds(1))
        ring.expire(now: .seconds(1) + MediaKeyRing.retiredKeyLifetime)
        #expect(ring.heldKeyIDs == [1])
    }

    @Test func anIDClaimedWithOtherBytesOrByAnotherMemberIsRefused() throws {
        let ring = MediaKeyRing()
        ring.install(try key(1, 1), from: bob, now: .zero)
        #expect(ring.install(try key(1, 9), from: bob, now: .zero) == .conflict)
        #expect(ring.install(try key(1, 1), from: carol, now: .zero) == .conflict)
        #expect(ring.receiveKey(id: 1)?.bytes == [UInt8](repeating: 1, count: 32))
    }

    @Test func theRingHoldsAtMostTheMaximum() throws {
        let ring = MediaKeyRing()
        // Distinct senders, so nothing retires.
        for id in 0..<UInt64(MediaKeyRing.maximumKeys) {
            #expect(ring.install(try key(id, 1), from: [UInt8(id & 0xFF), UInt8(id >> 8)], now: .zero) == .installed)
        }
        #expect(ring.heldKeyIDs.count == MediaKeyRing.maximumKeys)
        #expect(ring.install(try key(10_000, 1), from: [0xFF, 0xFF], now: .zero) == .full)
    }
}
