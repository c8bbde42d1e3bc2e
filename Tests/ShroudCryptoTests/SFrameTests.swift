import Foundation
import ShroudWire
import Testing
@testable import ShroudCrypto

@Suite struct SFrameVectorTests {
    static func vectors(_ group: String) throws -> [[String: Any]] {
        let file = try #require(try TestResource.json("sframe-rfc9605") as? [String: Any])
        return try #require(file[group] as? [[String: Any]])
    }

    @Test func allHeaderVectors() throws {
        let vectors = try Self.vectors("header")
        #expect(vectors.count == 289)
        for v in vectors {
            let kid = try #require((v["kid"] as? NSNumber)?.uint64Value)
            let ctr = try #require((v["ctr"] as? NSNumber)?.uint64Value)
            let encoded = [UInt8](hex: try #require(v["encoded"] as? String))
            let header = SFrameHeader(keyID: kid, counter: ctr)
            #expect(header.serialized() == encoded, "kid \(kid) ctr \(ctr)")
            #expect(header.encodedLength == encoded.count)
            var raw = [UInt8](repeating: 0, count: SFrameHeader.maximumEncodedLength)
            let written = raw.withUnsafeMutableBytes { header.write(to: $0) }
            #expect(Array(raw[..<written]) == encoded)
            #expect(try SFrameHeader(parsing: encoded + [0xaa, 0xbb]) == header)
        }
    }

    @Test func allGCMEncryptionVectors() throws {
        var tested = Set<UInt16>()
        for v in try Self.vectors("sframe") {
            let suiteNumber = try #require((v["cipher_suite"] as? NSNumber)?.uint16Value)
            let suite = try #require(SFrameCipherSuite(rawValue: suiteNumber))
            tested.insert(suiteNumber)
            func h(_ key: String) throws -> [UInt8] { [UInt8](hex: try #require(v[key] as? String)) }
            let kid = try #require((v["kid"] as? NSNumber)?.uint64Value)
            let ctr = try #require((v["ctr"] as? NSNumber)?.uint64Value)
            let baseKey = SecureBytes(copying: try h("base_key"))
            let (key, salt) = SFrame.deriveKeyAndSalt(baseKey: baseKey, keyID: kid, suite: suite)
            #expect(key.bytes == (try h("sframe_key")))
            #expect(salt == (try h("sframe_salt")))
            let sender = try SFrameSender(suite: suite, keyID: kid, baseKey: baseKey, firstCounter: ctr)
            let frame = try sender.seal(try h("pt"), metadata: try h("metadata"))
            #expect(frame == (try h("ct")))
            #expect(sender.nextCounter == ctr + 1)
            let receiver = SFrameReceiver(suite: suite)
            try receiver.addKey(keyID: kid, baseKey: baseKey)
            let opened = try receiver.open(try h("ct"), metadata: try h("metadata"))
            #expect(opened.plaintext == (try h("pt")) && opened.keyID == kid && opened.counter == ctr)
        }
        #expect(tested == [1, 2, 3, 4, 5])
    }
}

extension SFrameVectorTests {
    /// RFC 9605 Appendix C.2: the AES-CTR + HMAC AEAD on its own (suites 1–3). The file's suites
    /// 6–8 are not RFC 9605 suites and are not implemented.
    @Test func ctrHMACAEADVectors() throws {
        let vectors = try Self.vectors("aes_ctr_hmac")
        #expect(vectors.count == 3)
        for v in vectors {
            func h(_ key: String) throws -> [UInt8] { [UInt8](hex: try #require(v[key] as? String)) }
            let suiteNumber = try #require((v["cipher_suite"] as? NSNumber)?.uint16Value)
            let suite = try #require(SFrameCipherSuite(rawValue: suiteNumber))
            // With counter 0 the frame nonce is the salt itself.
            let cipher = try CTRHMACKey(suite: suite, key: SecureBytes(copying: try h("key")), salt: try h("nonce"))
            let pt = try h("pt"), aad = try h("aad"), ct = try h("ct")
            var out = [UInt8](repeating: 0, count: pt.count + suite.tagByteCount)
            let sealed = out.withUnsafeMutableBufferPointer { o in
                pt.withUnsafeBytes { p in aad.withUnsafeBytes { a in
                    cipher.seal(counter: 0, aad: a, metadata: UnsafeRawBufferPointer(start: nil, count: 0), plaintext: p, output: o.baseAddress!)
                } }
            }
            #expect(sealed && out == ct)
            var back = [UInt8](repeating: 0, count: pt.count)
            var forged = ct
            forged[ct.count - 1] ^= 1
            for (input, expected) in [(ct, true), (forged, false)] {
                let opened = back.withUnsafeMutableBufferPointer { o in
                    input.withUnsafeBytes { c in aad.withUnsafeBytes { a in
                        cipher.open(counter: 0, aad: a, metadata: UnsafeRawBufferPointer(start: nil, count: 0),
                                    ciphertext: UnsafeRawBufferPointer(rebasing: c[..<pt.count]),
                                    tag: UnsafeRawBufferPointer(rebasing: c[pt.count...]), output: o.baseAddress!)
                    } }
                }
                #expect(opened == expected)
                if expected { #expect(back == pt) }
            }
        }
    }
}

@Suite struct SFrameSessionTests {
    static let baseKey = SecureBytes(copying: (0..<32).map { UInt8($0) })

    static func pair(_ suite: SFrameCipherSuite = .default, kid: UInt64 = 7, firstCounter: UInt64 = 0,
                     limit: UInt64 = SFrame.counterLimit) throws -> (SFrameSender, SFrameReceiver) {
        let sender = try SFrameSender(suite: suite, keyID: kid, baseKey: baseKey, firstCounter: firstCounter, counterLimit: limit)
        let receiver = SFrameReceiver(suite: suite)
        try receiver.addKey(keyID: kid, baseKey: baseKey)
        return (sender, receiver)
    }

    @Test(arguments: SFrameCipherSuite.allCases)
    func roundTripAndCountersAdvance(suite: SFrameCipherSuite) throws {
        let (sender, receiver) = try Self.pair(suite)
        var random = SeededRandom(seed: 1)
        for i in 0..<40 {
            let payload = random.bytes(i * 37)
            let frame = try sender.seal(payload, metadata: [1, 2, 3])
            #expect(frame.count == SFrameHeader(keyID: 7, counter: UInt64(i)).encodedLength + payload.count + suite.tagByteCount)
            let opened = try receiver.open(frame, metadata: [1, 2, 3])
            #expect(opened.plaintext == payload && opened.counter == UInt64(i))
        }
        #expect(sender.nextCounter == 40)
    }

    @Test(arguments: SFrameCipherSuite.allCases)
    func tamperingIsRejectedAndLeavesTheWindowUnchanged(suite: SFrameCipherSuite) throws {
        let (sender, receiver) = try Self.pair(suite)
        _ = try receiver.open(try sender.seal([9, 9, 9]))
        let frame = try sender.seal(Array("media frame".utf8), metadata: [0xee])
        let before = receiver.replayWindow(keyID: 7)
        for i in frame.indices {
            var bad = frame
            bad[i] ^= 0x04
            #expect(throws: SFrameError.self) { try receiver.open(bad, metadata: [0xee]) }
            #expect(receiver.replayWindow(keyID: 7) == before)
        }
        #expect(throws: SFrameError.authenticationFailed) { try receiver.open(frame, metadata: [0xef]) }
        #expect(throws: SFrameError.authenticationFailed) { try receiver.open(frame) }
        #expect(receiver.replayWindow(keyID: 7) == before)
        // The genuine frame still opens afterwards: nothing was consumed by the forgeries.
        #expect(try receiver.open(frame, metadata: [0xee]).plaintext == Array("media frame".utf8))
    }

    @Test func replayAndTooOldAreRejected() throws {
        let (sender, receiver) = try Self.pair()
        var frames: [[UInt8]] = []
        for _ in 0..<(Int(SFrameReplayWindow.size) + 10) { frames.append(try sender.seal([1])) }
        _ = try receiver.open(frames[5])
        #expect(throws: SFrameError.replayed(counter: 5)) { try receiver.open(frames[5]) }
        // Out of order within the window is fine, once.
        _ = try receiver.open(frames[2])
        #expect(throws: SFrameError.replayed(counter: 2)) { try receiver.open(frames[2]) }
        let last = frames.count - 1   // 137
        _ = try receiver.open(frames[last])
        // Window edge: highest − (size − 1) is still accepted; highest − size is too old.
        let edge = last - Int(SFrameReplayWindow.size) + 1
        _ = try receiver.open(frames[edge])
        #expect(throws: SFrameError.tooOld(counter: UInt64(edge - 1))) { try receiver.open(frames[edge - 1]) }
        #expect(throws: SFrameError.replayed(counter: UInt64(last))) { try receiver.open(frames[last]) }
    }

    @Test func replayWindowShiftsAcrossWords() throws {
        var window = SFrameReplayWindow()
        for c: UInt64 in [0, 3, 63, 64, 65, 130] { window.accept(c) }
        for c: UInt64 in [3, 63, 64, 65, 130] { #expect(throws: SFrameError.replayed(counter: c)) { try window.check(c) } }
        #expect(throws: SFrameError.tooOld(counter: 0)) { try window.check(0) }
        for c: UInt64 in [4, 62, 66, 129, 131, 1000] { try window.check(c) }
        window.accept(1000)
        #expect(throws: SFrameError.tooOld(counter: 130)) { try window.check(130) }
        try window.check(999)
    }

    @Test func counterLimitAtAndPast() throws {
        let (sender, receiver) = try Self.pair(firstCounter: SFrame.counterLimit - 1)
        let lastFrame = try sender.seal([1, 2])
        #expect(try receiver.open(lastFrame).counter == SFrame.counterLimit - 1)
        #expect(throws: SFrameError.counterExhausted(SFrame.counterLimit)) { try sender.seal([3]) }
        #expect(sender.nextCounter == SFrame.counterLimit)
        // Rotation to a new key id restarts the counter; the old key id is refused.
        #expect(throws: SFrameError.self) { try sender.rotate(keyID: 7, baseKey: Self.baseKey) }
        let next = SecureBytes(copying: [UInt8](repeating: 5, count: 32))
        try sender.rotate(keyID: 8, baseKey: next)
        try receiver.addKey(keyID: 8, baseKey: next)
        let opened = try receiver.open(try sender.seal([4]))
        #expect(opened.keyID == 8 && opened.counter == 0)
    }

    @Test func unknownKeyShortFramesAndWrongSuite() throws {
        let (sender, receiver) = try Self.pair()
        let frame = try sender.seal([1, 2, 3])
        receiver.removeKey(keyID: 7)
        #expect(throws: SFrameError.unknownKeyID(7)) { try receiver.open(frame) }
        try receiver.addKey(keyID: 7, baseKey: Self.baseKey)
        #expect(throws: SFrameError.frameTooShort(16)) { try receiver.open(Array(frame.prefix(16))) }
        #expect(throws: SFrameError.self) { try receiver.open([]) }
        #expect(throws: SFrameError.self) { try receiver.open([0xff]) }
        let other = SFrameReceiver(suite: .aes128GCMSHA256)
        try other.addKey(keyID: 7, baseKey: Self.baseKey)
        #expect(throws: SFrameError.authenticationFailed) { try other.open(frame) }
        // Empty payloads work.
        #expect(try receiver.open(try sender.seal([])).plaintext == [])
    }

    @Test func payloadLimitAtAndPast() throws {
        let (sender, receiver) = try Self.pair()
        let atLimit = [UInt8](repeating: 1, count: SFrame.maximumPayloadSize)
        #expect(try receiver.open(try sender.seal(atLimit)).plaintext.count == SFrame.maximumPayloadSize)
        #expect(throws: SFrameError.frameTooLarge(SFrame.maximumPayloadSize + 1)) { try sender.seal(atLimit + [1]) }
    }

    @Test func receiveKeyLimit() throws {
        let receiver = SFrameReceiver()
        for kid in 0..<UInt64(SFrameReceiver.maximumKeys) { try receiver.addKey(keyID: kid, baseKey: Self.baseKey) }
        #expect(throws: SFrameError.self) { try receiver.addKey(keyID: 100_000, baseKey: Self.baseKey) }
        try receiver.addKey(keyID: 3, baseKey: Self.baseKey)   // replacing an existing key is fine
    }
}
