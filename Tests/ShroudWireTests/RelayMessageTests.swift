import ShroudTestSupport
import Testing
@testable import ShroudWire

/// A deterministic generator so fuzz failures reproduce.
private func filled<T: FixedSizeBytes>(_ type: T.Type, _ byte: UInt8) -> T {
    T(validated: [UInt8](repeating: byte, count: T.size))
}

/// One example of every message type, with non-trivial field values.
let sampleMessages: [RelayMessage] = {
    let key = filled(IdentityKey.self, 0xA1)
    let other = filled(IdentityKey.self, 0xB2)
    let channel = filled(ChannelID.self, 0xC3)
    let signed = SignedPrekey(id: 7, key: filled(PrekeyPublicKey.self, 0x11), signature: filled(Ed25519Signature.self, 0x22))
    let agreement = IdentityAgreementKey(key: filled(PrekeyPublicKey.self, 0x66), signature: filled(Ed25519Signature.self, 0x77))
    let blob = (0..<512).map { UInt8(truncatingIfNeeded: $0 * 7) }
    return [
        .challenge(nonce: filled(ChallengeNonce.self, 0x5A), deadline: 1_700_000_010_000, relayBinding: "wss://relay.example/ws"),
        .authenticate(identity: key, signature: filled(Ed25519Signature.self, 0x33)),
        .ok,
        .error(code: .notMember, text: "not a member of the channel"),
        .publishPrekeys(agreement: agreement, signed: signed, oneTime: (0..<3).map { OneTimePrekey(id: 100 + UInt32($0), key: filled(PrekeyPublicKey.self, UInt8($0))) }),
        .fetchBundle(identity: other),
        .bundle(PrekeyBundle(identity: other, agreement: agreement, signedPrekey: signed, oneTimePrekey: OneTimePrekey(id: 9, key: filled(PrekeyPublicKey.self, 9)))),
        .bundle(PrekeyBundle(identity: other, agreement: agreement, signedPrekey: signed, oneTimePrekey: nil)),
        .countPrekeys,
        .prekeyCount(42),
        .sendDirect(recipient: other, blob: blob),
        .directDelivery(id: filled(MessageID.self, 0x44), receivedAt: 1_700_000_000_123, blob: blob),
        .acknowledgeDirect([filled(MessageID.self, 1), filled(MessageID.self, 2)]),
        .createChannel(channel: channel, visibility: .invitation, metadata: [UInt8](repeating: 0xEE, count: 256)),
        .createInvite(channel: channel, uses: 5, ttlSeconds: 3600),
        .invite(token: filled(InviteToken.self, 0x66), expiresAt: 1_700_003_600_000),
        .redeemInvite(token: filled(InviteToken.self, 0x66)),
        .joinChannel(channel: channel),
        .channelJoined(channel: channel, visibility: .open, role: .member, joinedAfter: 12, metadata: [UInt8](repeating: 1, count: 256)),
        .leaveChannel(channel: channel),
        .kickMember(channel: channel, member: other),
        .setRole(channel: channel, member: other, role: .admin),
        .listMembers(channel: channel),
        .members(channel: channel, [ChannelMember(identity: key, role: .owner), ChannelMember(identity: other, role: .member)]),
        .sendChannel(channel: channel, blob: blob),
        .channelDelivery(channel: channel, sequence: 13, receivedAt: 1_700_000_000_999, blob: blob),
        .acknowledgeChannel(channel: channel, throughSequence: 13),
        .fetchHistory(channel: channel, afterSequence: 0, limit: 50),
        .membershipChanged(channel: channel, member: other, change: .kicked, role: .member),
        .openPipe(pipe: filled(PipeID.self, 0x50)),
        .pipeReady(pipe: filled(PipeID.self, 0x50), bytesPerSecond: 512 << 20),
        .pipeData(pipe: filled(PipeID.self, 0x50), data: [1, 2, 3]),
        .pipeAck(pipe: filled(PipeID.self, 0x50), bytes: 1 << 20),
        .closePipe(pipe: filled(PipeID.self, 0x50)),
        .pipeClosed(pipe: filled(PipeID.self, 0x50), code: .rateLimited),
        .joinRoom(channel: channel, transport: .session, purpose: .voice, maxLayer: 7),
        .joinRoom(channel: channel, transport: .datagram, purpose: .screenWatch, maxLayer: 0),
        .roomJoined(channel: channel, token: filled(MediaToken.self, 0x77), streamID: 0x0102_0304, tokenExpiresAt: 1_700_000_060_000, mediaPort: 8443),
        .leaveRoom(channel: channel),
        .mediaDatagram([0x40, 0, 1, 0] + [UInt8](repeating: 9, count: 60)),
        .roomLeft(channel: channel),
    ]
}()

@Suite struct RelayMessageTests {
    @Test func everyMessageTypeHasASample() {
        #expect(Set(sampleMessages.map(\.type)) == Set(RelayMessageType.allCases))
    }

    @Test(arguments: sampleMessages)
    func roundTrips(_ message: RelayMessage) throws {
        let frame = SessionFrame(requestID: 0xDEAD_BEEF, message)
        let bytes = frame.serialize()
        #expect(bytes[0] == SessionLimits.protocolVersion)
        #expect(bytes[1] == message.type.rawValue)
        #expect(Array(bytes[2..<6]) == [0xDE, 0xAD, 0xBE, 0xEF])
        let parsed = try SessionFrame(parsing: bytes)
        #expect(parsed == frame)
        #expect(parsed.serialize() == bytes)
    }

    @Test(arguments: sampleMessages)
    func everyTruncationThrows(_ message: RelayMessage) {
        let bytes = SessionFrame(requestID: 1, message).serialize()
        for length in 0..<bytes.count {
            #expect(throws: WireError.self) { try SessionFrame(parsing: Array(bytes.prefix(length))) }
        }
    }

    @Test(arguments: sampleMessages)
    func trailingBytesAreRejected(_ message: RelayMessage) {
        let bytes = SessionFrame(requestID: 1, message).serialize() + [0]
        #expect(throws: WireError.self) { try SessionFrame(parsing: bytes) }
    }

    @Test func exactLayoutOfADirectMessage() throws {
        let recipient = filled(IdentityKey.self, 0x01)
        let blob = [UInt8](repeating: 0x7F, count: 256)
        let bytes = SessionFrame(requestID: 3, .sendDirect(recipient: recipient, blob: blob)).serialize()
        #expect(bytes == [1, 0x20, 0, 0, 0, 3] + [UInt8](repeating: 1, count: 32) + [0, 0, 1, 0] + blob)
    }

    @Test func versionAndTypeAreChecked() {
        var bytes = SessionFrame(.ok).serialize()
        bytes[0] = 2
        #expect(throws: WireError.invalid(field: "version", reason: "unsupported protocol version 2")) { try SessionFrame(parsing: bytes) }
        bytes = SessionFrame(.ok).serialize()
        bytes[1] = 0x7E
        #expect(throws: WireError.self) { try SessionFrame(parsing: bytes) }
    }

    @Test func paddingBucketRule() {
        let buckets = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 196608, 4 << 20]
        for size in buckets { #expect(SessionLimits.isPaddingBucket(size), "\(size)") }
        for size in [0, 1, 255, 257, 300, 65537, 100_000, 131073, (4 << 20) + 65536] {
            #expect(!SessionLimits.isPaddingBucket(size), "\(size)")
        }
    }

    @Test func blobMustBeABucketAndWithinTheLimit() throws {
        let recipient = filled(IdentityKey.self, 0x01)
        // At the limit: the largest bucket parses.
        let largest = [UInt8](repeating: 0, count: SessionLimits.maximumBlobSize)
        let frame = SessionFrame(.sendDirect(recipient: recipient, blob: largest)).serialize()
        #expect(frame.count <= SessionLimits.maximumFrameSize)
        #expect(try SessionFrame(parsing: frame).message == .sendDirect(recipient: recipient, blob: largest))
        // Past it: the length field alone is refused before any bytes are read.
        var past = ByteWriter()
        past.write(SessionLimits.protocolVersion); past.write(RelayMessageType.sendDirect.rawValue); past.write(UInt32(0))
        past.write(bytes: recipient.bytes); past.write(UInt32(SessionLimits.maximumBlobSize + SessionLimits.largeBucketStep))
        #expect(throws: WireError.tooLarge(field: "blob", size: SessionLimits.maximumBlobSize + SessionLimits.largeBucketStep,
                                           limit: SessionLimits.maximumBlobSize)) { try SessionFrame(parsing: past.bytes) }
        // Not a bucket.
        let odd = SessionFrame(.sendDirect(recipient: recipient, blob: [UInt8](repeating: 0, count: 300))).serialize()
        #expect(throws: WireError.self) { try SessionFrame(parsing: odd) }
    }

    @Test func oversizedFrameIsRefusedBeforeParsing() {
        let bytes = [UInt8](repeating: 0, count: SessionLimits.maximumFrameSize + 1)
        #expect(throws: WireError.tooLarge(field: "session frame", size: SessionLimits.maximumFrameSize + 1,
                                           limit: SessionLimits.maximumFrameSize)) { try SessionFrame(parsing: bytes) }
    }

    @Test func pipeDataPrefixPlusDataIsTheSerializedFrame() throws {
        let pipe = try PipeID([UInt8](repeating: 0x5a, count: PipeID.size))
        for count in [1, 1000, SessionLimits.maximumPipeDataSize] {  // empty pipe data is refused by the parser
            let data = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let prefix = SessionFrame.pipeDataPrefix(pipe: pipe, dataLength: count)
            #expect(prefix.count == SessionFrame.pipeDataPrefixSize)
            #expect(prefix + data == SessionFrame(.pipeData(pipe: pipe, data: data)).serialize())
            #expect(try SessionFrame(parsing: prefix + data) == SessionFrame(.pipeData(pipe: pipe, data: data)))
        }
    }

    @Test func pipeDataLimit() throws {
        let pipe = filled(PipeID.self, 7)
        let atLimit = SessionFrame(.pipeData(pipe: pipe, data: [UInt8](repeating: 9, count: SessionLimits.maximumPipeDataSize))).serialize()
        #expect(try SessionFrame(parsing: atLimit).message.type == .pipeData)
        var pastLimit = SessionFrame(.pipeData(pipe: pipe, data: [9])).serialize()
        pastLimit.replaceSubrange(SessionLimits.headerSize + 16..<SessionLimits.headerSize + 20, with: [0x00, 0x40, 0x00, 0x01])
        #expect(throws: WireError.tooLarge(field: "pipe data", size: SessionLimits.maximumPipeDataSize + 1, limit: SessionLimits.maximumPipeDataSize)) {
            try SessionFrame(parsing: pastLimit)
        }
        var empty = SessionFrame(.pipeData(pipe: pipe, data: [9])).serialize()
        empty.replaceSubrange(SessionLimits.headerSize + 16..<SessionLimits.headerSize + 21, with: [0, 0, 0, 0])
        #expect(throws: WireError.self) { try SessionFrame(parsing: empty) }
    }

    @Test func metadataLimit() throws {
        let channel = filled(ChannelID.self, 2)
        let atLimit = SessionFrame(.createChannel(channel: channel, visibility: .open,
                                                  metadata: [UInt8](repeating: 0, count: SessionLimits.maximumMetadataSize))).serialize()
        _ = try SessionFrame(parsing: atLimit)
        let past = SessionFrame(.createChannel(channel: channel, visibility: .open,
                                               metadata: [UInt8](repeating: 0, count: SessionLimits.maximumMetadataSize * 2))).serialize()
        #expect(throws: WireError.tooLarge(field: "metadata", size: SessionLimits.maximumMetadataSize * 2,
                                           limit: SessionLimits.maximumMetadataSize)) { try SessionFrame(parsing: past) }
    }

    @Test func oneTimePrekeyCountLimit() throws {
        let signed = SignedPrekey(id: 1, key: filled(PrekeyPublicKey.self, 1), signature: filled(Ed25519Signature.self, 2))
        let agreement = IdentityAgreementKey(key: filled(PrekeyPublicKey.self, 4), signature: filled(Ed25519Signature.self, 5))
        func upload(_ count: Int) -> [UInt8] {
            SessionFrame(.publishPrekeys(agreement: agreement, signed: signed, oneTime: (0..<count).map {
                OneTimePrekey(id: UInt32($0), key: filled(PrekeyPublicKey.self, 3))
            })).serialize()
        }
        _ = try SessionFrame(parsing: upload(SessionLimits.maximumOneTimePrekeysPerUpload))
        #expect(throws: WireError.tooLarge(field: "one-time prekey count", size: SessionLimits.maximumOneTimePrekeysPerUpload + 1,
                                           limit: SessionLimits.maximumOneTimePrekeysPerUpload)) {
            try SessionFrame(parsing: upload(SessionLimits.maximumOneTimePrekeysPerUpload + 1))
        }
        let duplicate = SessionFrame(.publishPrekeys(agreement: agreement, signed: signed, oneTime: [OneTimePrekey(id: 1, key: filled(PrekeyPublicKey.self, 1)),
                                                                             OneTimePrekey(id: 1, key: filled(PrekeyPublicKey.self, 2))])).serialize()
        #expect(throws: WireError.invalid(field: "one-time prekeys", reason: "duplicate id")) { try SessionFrame(parsing: duplicate) }
    }

    @Test func acknowledgementCountLimit() throws {
        func ack(_ count: Int) -> [UInt8] {
            SessionFrame(.acknowledgeDirect((0..<count).map { _ in filled(MessageID.self, 1) })).serialize()
        }
        _ = try SessionFrame(parsing: ack(SessionLimits.maximumAcknowledgementsPerFrame))
        #expect(throws: WireError.self) { try SessionFrame(parsing: ack(SessionLimits.maximumAcknowledgementsPerFrame + 1)) }
        #expect(throws: WireError.self) { try SessionFrame(parsing: ack(0)) }
    }

    @Test func memberListLimit() throws {
        let channel = filled(ChannelID.self, 1)
        func list(_ count: Int) -> [UInt8] {
            SessionFrame(.members(channel: channel, (0..<count).map { _ in ChannelMember(identity: filled(IdentityKey.self, 1), role: .member) })).serialize()
        }
        _ = try SessionFrame(parsing: list(SessionLimits.maximumMembersPerChannel))
        #expect(throws: WireError.self) { try SessionFrame(parsing: list(SessionLimits.maximumMembersPerChannel + 1)) }
    }

    @Test func inviteAndHistoryLimits() throws {
        let channel = filled(ChannelID.self, 1)
        _ = try SessionFrame(parsing: SessionFrame(.createInvite(channel: channel, uses: UInt16(SessionLimits.maximumInviteUses),
                                                                 ttlSeconds: SessionLimits.maximumInviteTTLSeconds)).serialize())
        #expect(throws: WireError.self) {
            try SessionFrame(parsing: SessionFrame(.createInvite(channel: channel, uses: UInt16(SessionLimits.maximumInviteUses + 1), ttlSeconds: 1)).serialize())
        }
        #expect(throws: WireError.self) {
            try SessionFrame(parsing: SessionFrame(.createInvite(channel: channel, uses: 1, ttlSeconds: SessionLimits.maximumInviteTTLSeconds + 1)).serialize())
        }
        #expect(throws: WireError.self) { try SessionFrame(parsing: SessionFrame(.createInvite(channel: channel, uses: 0, ttlSeconds: 1)).serialize()) }
        _ = try SessionFrame(parsing: SessionFrame(.fetchHistory(channel: channel, afterSequence: 0, limit: UInt16(SessionLimits.maximumHistoryPage))).serialize())
        #expect(throws: WireError.self) {
            try SessionFrame(parsing: SessionFrame(.fetchHistory(channel: channel, afterSequence: 0, limit: UInt16(SessionLimits.maximumHistoryPage + 1))).serialize())
        }
    }

    @Test func textFieldsAreCutAtACharacterBoundaryAndValidated() throws {
        let long = String(repeating: "é", count: 200) // 400 bytes of UTF-8
        let parsed = try SessionFrame(parsing: SessionFrame(.error(code: .internalError, text: long)).serialize())
        guard case let .error(_, text) = parsed.message else { Issue.record("not an error"); return }
        #expect(text.utf8.count == 254 && text.allSatisfy { $0 == "é" })
        var bytes = SessionFrame(.error(code: .internalError, text: "ab")).serialize()
        bytes[bytes.count - 1] = 0xFF
        #expect(throws: WireError.invalid(field: "error text", reason: "not UTF-8")) { try SessionFrame(parsing: bytes) }
        let unknownCode = try SessionFrame(parsing: [1, 0x04, 0, 0, 0, 0, 0x12, 0x34, 0])
        #expect(unknownCode.message == .error(code: SessionErrorCode(rawValue: 0x1234), text: ""))
    }

    @Test func transcriptBindsEveryField() {
        let nonce = filled(ChallengeNonce.self, 1)
        let key = filled(IdentityKey.self, 2)
        let base = AuthenticationTranscript.bytes(nonce: nonce, deadline: 10, relayBinding: "wss://a/ws", identity: key)
        #expect(base.starts(with: Array("shroud-relay-auth-v1".utf8) + [0]))
        #expect(base.count == 21 + 32 + 8 + 1 + 10 + 32)
        #expect(base != AuthenticationTranscript.bytes(nonce: filled(ChallengeNonce.self, 3), deadline: 10, relayBinding: "wss://a/ws", identity: key))
        #expect(base != AuthenticationTranscript.bytes(nonce: nonce, deadline: 11, relayBinding: "wss://a/ws", identity: key))
        #expect(base != AuthenticationTranscript.bytes(nonce: nonce, deadline: 10, relayBinding: "wss://b/ws", identity: key))
        #expect(base != AuthenticationTranscript.bytes(nonce: nonce, deadline: 10, relayBinding: "wss://a/ws", identity: filled(IdentityKey.self, 4)))
    }

    @Test func fixedSizeFieldsCheckTheirLength() {
        #expect(throws: WireError.invalid(field: "identity key", reason: "expected 32 bytes, got 31")) { try IdentityKey([UInt8](repeating: 0, count: 31)) }
        #expect(throws: Never.self) { try ChannelID([UInt8](repeating: 0, count: 16)) }
    }

    /// Mutated valid frames and random bytes: parsing never traps, and whatever parses
    /// re-serializes to exactly the same bytes (one encoding per message).
    @Test func seededFuzz() {
        var rng = SplitMix64(seed: 0x5EED_0004)
        let seeds = sampleMessages.map { SessionFrame(requestID: 9, $0).serialize() }
        var parsedCount = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 10 == 0 {
                bytes = (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if !bytes.isEmpty { bytes[0] = 1 }
            } else {
                bytes = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0 where !bytes.isEmpty: bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                    case 1 where !bytes.isEmpty: bytes.removeLast(Int.random(in: 1...min(8, bytes.count), using: &rng))
                    default: bytes.append(UInt8.random(in: 0...255, using: &rng))
                    }
                }
            }
            if let frame = try? SessionFrame(parsing: bytes) {
                parsedCount += 1
                #expect(frame.serialize() == bytes)
            }
        }
        // Some mutations (e.g. of a request id or a key byte) must still parse, or the loop tests nothing.
        #expect(parsedCount > 1000)
    }
}
