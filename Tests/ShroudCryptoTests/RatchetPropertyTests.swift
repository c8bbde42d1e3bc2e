import Testing
@testable import ShroudCrypto
import ShroudWire

/// Seeded random conversations: any interleaving of sends, deliveries, drops, reorders,
/// duplicates and store/reload of either side decrypts every delivered message exactly once, to the right plaintext.
@Suite struct RatchetPropertyTests {
    struct InFlight {
        let message: RatchetMessage
        let plaintext: String
        let toBob: Bool
    }

    func pick(_ random: inout SeededRandom, _ bound: Int) -> Int {
        Int(random.bytes(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) } % UInt32(bound))
    }

    @Test(arguments: Array(UInt64(100)..<UInt64(116)))
    func randomConversation(seed: UInt64) throws {
        var pair = try RatchetPair(seed: seed)
        var choices = SeededRandom(seed: seed &* 7919)
        var inFlight: [InFlight] = []
        var delivered: [InFlight] = []
        var counter = 0
        var opened = 0
        for _ in 0..<400 {
            switch pick(&choices, 11) {
            case 0, 1, 2:
                counter += 1
                let text = "a→b \(counter)"
                inFlight.append(InFlight(message: try pair.aliceSends(text), plaintext: text, toBob: true))
            case 3, 4, 5:
                counter += 1
                let text = "b→a \(counter)"
                inFlight.append(InFlight(message: try pair.bobSends(text), plaintext: text, toBob: false))
            case 6, 7, 8:
                guard !inFlight.isEmpty else { continue }
                // Deliver any message in flight: this reorders freely.
                let item = inFlight.remove(at: pick(&choices, inFlight.count))
                let text = item.toBob ? try pair.bobReceives(item.message) : try pair.aliceReceives(item.message)
                #expect(text == item.plaintext)
                delivered.append(item)
                opened += 1
            case 10:
                // Store and reload one side, as a client restart would.
                if pick(&choices, 2) == 0 {
                    pair.alice = try #require(try SessionRecord(parsing: pair.aliceBytes).current)
                } else {
                    pair.bob = try #require(try SessionRecord(parsing: pair.bobBytes).current)
                }
            default:
                if pick(&choices, 2) == 0, !inFlight.isEmpty {
                    _ = inFlight.remove(at: pick(&choices, inFlight.count))  // lost
                } else if !delivered.isEmpty {
                    // Duplicate delivery fails and changes nothing.
                    let item = delivered[pick(&choices, delivered.count)]
                    let before = item.toBob ? pair.bobBytes : pair.aliceBytes
                    #expect(throws: CryptoError.self) {
                        _ = item.toBob ? try pair.bobReceives(item.message) : try pair.aliceReceives(item.message)
                    }
                    #expect((item.toBob ? pair.bobBytes : pair.aliceBytes) == before)
                }
            }
        }
        // Drain: everything still in flight opens, in a random order.
        while !inFlight.isEmpty {
            let item = inFlight.remove(at: pick(&choices, inFlight.count))
            let text = item.toBob ? try pair.bobReceives(item.message) : try pair.aliceReceives(item.message)
            #expect(text == item.plaintext)
            opened += 1
        }
        #expect(opened > 50)
        // And the states survive a serialization round trip mid-conversation.
        let alice = try #require(try SessionRecord(parsing: pair.aliceBytes).current)
        pair.alice = alice
        let m = try pair.aliceSends("after reload")
        #expect(try pair.bobReceives(m) == "after reload")
    }
}
