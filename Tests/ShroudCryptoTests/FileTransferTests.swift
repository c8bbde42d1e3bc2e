import Crypto
import Foundation
@testable import ShroudCrypto
import ShroudWire
import Testing

/// The file transfer's signalling payloads, chunk cipher and the two state machines, run against
/// each other through an in-memory stream on a virtual clock (docs/PROTOCOL.md §7).
@Suite struct FileTransferTests {
    static let chunk = FileTransferLimits.minimumChunkSize

    static func offer(size: Int, chunkSize: Int = chunk, seed: UInt64 = 1, content: [UInt8]? = nil, name: String = "report.pdf",
                      candidates: [String] = ["127.0.0.1:4000"]) throws -> (FileOffer, [UInt8]) {
        var random = SeededRandom(seed: seed)
        let data = content ?? random.bytes(size)
        let offer = try FileOffer(transferID: .random(using: &random), sentAt: 1_700_000_000_000, size: UInt64(data.count), chunkSize: chunkSize,
                                  sha256: Array(SHA256.hash(data: data)), transferKey: random.bytes(32), paths: [.direct, .relay],
                                  name: name, candidates: candidates)
        return (offer, data)
    }

    /// What the sender puts on the wire after the handshake: one frame per chunk from `from` on.
    static func frames(_ sender: inout FileSendCore, data: [UInt8], from: UInt64, now: Double = 1) throws -> [[UInt8]] {
        var frames: [[UInt8]] = []
        let offer = sender.offer
        for index in from..<offer.chunkCount {
            let start = Int(index) * offer.chunkSize
            let plain = Array(data[start..<start + offer.chunkLength(index)])
            var frame = [UInt8](repeating: 0, count: ChunkFrameHeader.size + plain.count + 16)
            let n = try plain.withUnsafeBytes { p in try frame.withUnsafeMutableBytes { try sender.seal(index: index, plaintext: p, into: $0, now: now) } }
            #expect(n == frame.count)
            frames.append(frame)
        }
        return frames
    }

    /// Feeds one frame to the receiver; returns (verified, plaintext).
    @discardableResult
    static func deliver(_ frame: [UInt8], to receiver: inout FileReceiveCore, now: Double = 1) throws -> (Bool, [UInt8]) {
        let header = try frame.withUnsafeBytes { try receiver.header(UnsafeRawBufferPointer(rebasing: $0[0..<ChunkFrameHeader.size])) }
        var body = Array(frame[ChunkFrameHeader.size...])
        guard body.count == header.bodySize else { throw FileTransferError.protocolViolation("test: short body") }
        let done = try body.withUnsafeMutableBytes { b in try receiver.open(header, body: UnsafeRawBufferPointer(b), into: b, now: now) }
        return (done, Array(body[0..<header.length]))
    }

    /// A whole transfer: handshake, every frame, verdict. Returns the bytes the receiver wrote.
    static func transfer(_ offer: FileOffer, data: [UInt8], resumeFrom: UInt64 = 0) throws -> [UInt8] {
        var sender = try FileSendCore(offer: offer, now: 0)
        var receiver = try FileReceiveCore(offer: offer, resumeFrom: resumeFrom, now: 0)
        let prefix = Array(data[0..<min(data.count, Int(resumeFrom) * offer.chunkSize)])
        prefix.withUnsafeBytes { receiver.absorbPrefix($0) }
        let reply = try sender.receiveHello(receiver.hello(), now: 1)
        try receiver.receiveReply(reply, now: 1)
        var written = prefix
        for frame in try frames(&sender, data: data, from: resumeFrom) {
            let (_, plain) = try deliver(frame, to: &receiver)
            written += plain
        }
        #expect(receiver.state == .verified)
        try sender.receiveVerdict(receiver.verdict(), now: 2)
        #expect(sender.state == .verified)
        return written
    }

    // MARK: Payloads

    @Test func offerAndAnswerRoundTripThroughTheDirectPayload() throws {
        let (offer, _) = try Self.offer(size: 5000)
        let offerBytes = DirectPayload.fileOffer(offer).serialize()
        #expect(offerBytes.first == DirectPayload.Kind.fileOffer.rawValue)
        guard case let .fileOffer(parsed) = try DirectPayload(parsing: offerBytes) else { Issue.record("not an offer"); return }
        #expect(parsed == offer)
        #expect(try FileOffer(parsing: offer.serialize()) == offer)
        let answer = FileAnswer(transferID: offer.transferID, decision: .acceptRelay, resumeFrom: 7)
        let answerBytes = DirectPayload.fileAnswer(answer).serialize()
        #expect(answerBytes.first == DirectPayload.Kind.fileAnswer.rawValue)
        guard case let .fileAnswer(parsedAnswer) = try DirectPayload(parsing: answerBytes) else { Issue.record("not an answer"); return }
        #expect(parsedAnswer == answer)
        #expect(DirectPayload.fileOffer(offer).isFileSignal && DirectPayload.fileAnswer(answer).isFileSignal)
        #expect(!DirectPayload.text(DirectText(sentAt: 1, text: "hi")).isFileSignal)
        #expect(throws: (any Error).self) { try DirectPayload(parsing: [0x03]) }
        #expect(throws: ShroudCrypto.CryptoError.self) { try DirectPayload(parsing: [0x05, 1, 2]) }
    }

    @Test func truncatedOrExtendedPayloadsAreRefused() throws {
        let (offer, _) = try Self.offer(size: 5000, candidates: ["10.0.0.1:1", "[::1]:2"])
        let bytes = offer.serialize()
        for cut in 0..<bytes.count {
            #expect(throws: (any Error).self) { try FileOffer(parsing: Array(bytes[0..<cut])) }
        }
        #expect(throws: ShroudCrypto.CryptoError.self) { try FileOffer(parsing: bytes + [0]) }
        var badVersion = bytes; badVersion[0] = 2
        #expect(throws: ShroudCrypto.CryptoError.self) { try FileOffer(parsing: badVersion) }
        var badPaths = bytes; badPaths[1 + 16 + 8 + 8 + 4 + 32 + 32] = 4
        #expect(throws: ShroudCrypto.CryptoError.self) { try FileOffer(parsing: badPaths) }
        let answer = FileAnswer(transferID: offer.transferID, decision: .acceptDirect, resumeFrom: 0).serialize()
        for cut in 0..<answer.count { #expect(throws: (any Error).self) { try FileAnswer(parsing: Array(answer[0..<cut])) } }
        var badDecision = answer; badDecision[16] = 3
        #expect(throws: ShroudCrypto.CryptoError.self) { try FileAnswer(parsing: badDecision) }
        #expect(throws: ShroudCrypto.CryptoError.self) { try FileAnswer(parsing: answer + [0]) }
    }

    @Test func offerLimitsHoldAtAndOnePast() throws {
        let max = FileTransferLimits.maximumNameBytes
        _ = try Self.offer(size: 10, name: String(repeating: "a", count: max))
        #expect(throws: ShroudCrypto.CryptoError.self) { try Self.offer(size: 10, name: String(repeating: "a", count: max + 1)) }
        _ = try Self.offer(size: 10, chunkSize: FileTransferLimits.minimumChunkSize)
        _ = try Self.offer(size: 10, chunkSize: FileTransferLimits.maximumChunkSize)
        #expect(throws: ShroudCrypto.CryptoError.self) { try Self.offer(size: 10, chunkSize: FileTransferLimits.minimumChunkSize - 1) }
        #expect(throws: ShroudCrypto.CryptoError.self) { try Self.offer(size: 10, chunkSize: FileTransferLimits.maximumChunkSize + 1) }
        let many = (0..<FileTransferLimits.maximumCandidates).map { "10.0.0.\($0):1" }
        _ = try Self.offer(size: 10, candidates: many)
        #expect(throws: ShroudCrypto.CryptoError.self) { try Self.offer(size: 10, candidates: many + ["10.0.1.1:1"]) }
        let longest = String(repeating: "h", count: FileTransferLimits.maximumCandidateBytes)
        _ = try Self.offer(size: 10, candidates: [longest])
        #expect(throws: ShroudCrypto.CryptoError.self) { try Self.offer(size: 10, candidates: [longest + "h"]) }
        let (base, _) = try Self.offer(size: 10)
        func sized(_ size: UInt64) throws -> FileOffer {
            try FileOffer(transferID: base.transferID, sentAt: 0, size: size, chunkSize: FileTransferLimits.maximumChunkSize, sha256: base.sha256,
                          transferKey: base.transferKey, paths: .direct, name: "x", candidates: [])
        }
        let largest = try sized(FileTransferLimits.maximumFileSize)
        #expect(try FileOffer(parsing: largest.serialize()) == largest)
        #expect(throws: ShroudCrypto.CryptoError.self) { try sized(FileTransferLimits.maximumFileSize + 1) }
        // Parsing enforces the same limits as building.
        var tooLarge = largest.serialize()
        tooLarge[1 + 16 + 8 + 1] = 0x05  // size's second byte: 2^50 + 2^48
        #expect(throws: ShroudCrypto.CryptoError.self) { try FileOffer(parsing: tooLarge) }
    }

    @Test func chunkArithmeticCoversEmptyExactAndShortFiles() throws {
        let c = Self.chunk
        for (size, count, last) in [(0, 1, 0), (1, 1, 1), (c, 1, c), (c + 1, 2, 1), (3 * c + c / 2, 4, c / 2)] {
            let (offer, _) = try Self.offer(size: size)
            #expect(offer.chunkCount == UInt64(count))
            #expect(offer.chunkLength(offer.chunkCount - 1) == last)
        }
    }

    @Test func hostileNamesNeverLeaveTheDirectory() throws {
        #expect(try FileName.safe("report.pdf") == "report.pdf")
        #expect(try FileName.safe("../x") == "x")
        #expect(try FileName.safe("../../etc/passwd") == "passwd")
        #expect(try FileName.safe("/etc/passwd") == "passwd")
        #expect(try FileName.safe("a/b/") == "b")
        #expect(try FileName.safe("tab\tname\u{7}.txt") == "tabname.txt")
        #expect(try FileName.safe("résumé.txt") == "résumé.txt")
        for hostile in ["", "/", "..", ".", "../..", "a/..", ".bashrc", ".shroud-partial-00", "nul\0.txt", "\u{1}\u{2}"] {
            #expect(throws: ShroudCrypto.CryptoError.self, "\(hostile.debugDescription)") { try FileName.safe(hostile) }
        }
    }

    // MARK: Transfers

    @Test(arguments: [0, 1, 1023, 1024, 1025, 3584, 10_000])
    func transfersOfEverySizeArriveIntact(size: Int) throws {
        let (offer, data) = try Self.offer(size: size)
        #expect(try Self.transfer(offer, data: data) == data)
    }

    @Test func resumeContinuesFromTheLastVerifiedChunk() throws {
        let (offer, data) = try Self.offer(size: 5 * Self.chunk + 17)
        // First attempt: three chunks arrive, then the connection dies.
        var sender = try FileSendCore(offer: offer, now: 0)
        var receiver = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0)
        try receiver.receiveReply(try sender.receiveHello(receiver.hello(), now: 0), now: 0)
        var held: [UInt8] = []
        for frame in try Self.frames(&sender, data: data, from: 0).prefix(3) { held += try Self.deliver(frame, to: &receiver).1 }
        #expect(receiver.verifiedChunks == 3)
        // Second attempt: a new offer (new key) for the same file, resumed from chunk 3.
        let (again, _) = try Self.offer(size: data.count, seed: 99, content: data)
        #expect(again.transferKey != offer.transferKey)
        let written = try Self.transfer(again, data: data, resumeFrom: receiver.verifiedChunks)
        #expect(written == data)
        var resumed = try FileSendCore(offer: again, now: 0)
        _ = try resumed.receiveHello(try FileReceiveCore(offer: again, resumeFrom: 3, now: 0).hello(), now: 0)
        #expect(resumed.resumeFrom == 3)
        #expect(resumed.state == .sending(next: 3))
        // Resuming at or past the end is refused on both sides.
        #expect(throws: FileTransferError.self) { try FileReceiveCore(offer: again, resumeFrom: again.chunkCount, now: 0) }
    }

    @Test func aWrongPrefixFailsTheWholeFileHash() throws {
        let (offer, data) = try Self.offer(size: 4 * Self.chunk)
        var sender = try FileSendCore(offer: offer, now: 0)
        var receiver = try FileReceiveCore(offer: offer, resumeFrom: 2, now: 0)
        var prefix = Array(data[0..<2 * Self.chunk]); prefix[5] ^= 1  // the partial file on disk was damaged
        prefix.withUnsafeBytes { receiver.absorbPrefix($0) }
        try receiver.receiveReply(try sender.receiveHello(receiver.hello(), now: 0), now: 0)
        let frames = try Self.frames(&sender, data: data, from: 2)
        try Self.deliver(frames[0], to: &receiver)
        #expect(throws: FileTransferError.hashMismatch) { try Self.deliver(frames[1], to: &receiver) }
        #expect(receiver.state == .failed)
        #expect(throws: FileTransferError.hashMismatch) { try sender.receiveVerdict(receiver.verdict(), now: 1) }
    }

    /// The pipelined receiver's path: `openDeferringHash` authenticates and decrypts, the caller
    /// hashes (here after the fact, as the writer thread would), `finishHash` decides.
    @Test func theDeferredHashPathVerifiesAndCatchesAWrongHash() throws {
        for damage in [false, true] {
            let (offer, data) = try Self.offer(size: 3 * Self.chunk + 5)
            var sender = try FileSendCore(offer: offer, now: 0)
            var receiver = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0)
            try receiver.receiveReply(try sender.receiveHello(receiver.hello(), now: 0), now: 0)
            var plaintexts: [[UInt8]] = []
            for (i, frame) in try Self.frames(&sender, data: data, from: 0).enumerated() {
                #expect(throws: FileTransferError.self) { try receiver.finishHash(now: 1) }  // not before the final chunk
                let header = try frame.withUnsafeBytes { try receiver.header(UnsafeRawBufferPointer(rebasing: $0[0..<ChunkFrameHeader.size])) }
                var body = Array(frame[ChunkFrameHeader.size...])
                let final = try body.withUnsafeMutableBytes { try receiver.openDeferringHash(header, body: UnsafeRawBufferPointer($0), into: $0, now: 1) }
                #expect(final == (i == 3))
                plaintexts.append(Array(body[0..<header.length]))
            }
            #expect(receiver.state == .awaitingHash)
            #expect(plaintexts.flatMap { $0 } == data)
            // Nothing went into the hash by itself: feed it as the writer thread does.
            if damage { plaintexts[1][0] ^= 1 }
            for plain in plaintexts { plain.withUnsafeBytes { receiver.digest.update($0) } }
            if damage {
                #expect(throws: FileTransferError.hashMismatch) { try receiver.finishHash(now: 2) }
                #expect(receiver.state == .failed)
                #expect(throws: FileTransferError.hashMismatch) { try sender.receiveVerdict(receiver.verdict(), now: 2) }
            } else {
                try receiver.finishHash(now: 2)
                #expect(receiver.state == .verified)
                try sender.receiveVerdict(receiver.verdict(), now: 2)
                #expect(sender.state == .verified)
            }
        }
    }

    @Test func theDeferredHashPathRefusesAlteredChunks() throws {
        let (offer, data) = try Self.offer(size: 2 * Self.chunk)
        var sender = try FileSendCore(offer: offer, now: 0)
        var receiver = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0)
        try receiver.receiveReply(try sender.receiveHello(receiver.hello(), now: 0), now: 0)
        var frame = try Self.frames(&sender, data: data, from: 0)[0]
        frame[ChunkFrameHeader.size + 7] ^= 0x40
        let header = try frame.withUnsafeBytes { try receiver.header(UnsafeRawBufferPointer(rebasing: $0[0..<ChunkFrameHeader.size])) }
        var body = Array(frame[ChunkFrameHeader.size...])
        #expect(throws: FileTransferError.self) {
            try body.withUnsafeMutableBytes { _ = try receiver.openDeferringHash(header, body: UnsafeRawBufferPointer($0), into: $0, now: 1) }
        }
        #expect(receiver.state == .failed)
        #expect(receiver.verifiedChunks == 0)
    }

    @Test func everyAlteredByteOfAFrameIsRefused() throws {
        let (offer, data) = try Self.offer(size: Self.chunk + 40)
        var sender = try FileSendCore(offer: offer, now: 0)
        let probe = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0)
        _ = try sender.receiveHello(probe.hello(), now: 0)
        let frames = try Self.frames(&sender, data: data, from: 0)
        for (which, frame) in frames.enumerated() {
            for position in stride(from: 0, to: frame.count, by: which == 0 ? 37 : 1) {
                var receiver = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0)
                try receiver.receiveReply(TransferHandshake.magic + offer.proofForTests("sender", 0), now: 0)
                if which == 1 { try Self.deliver(frames[0], to: &receiver) }
                var altered = frame; altered[position] ^= 0x40
                #expect(throws: FileTransferError.self, "frame \(which) byte \(position)") { try Self.deliver(altered, to: &receiver) }
                #expect(receiver.state == .failed)
            }
        }
    }

    @Test func reorderedReplayedAndTruncatedStreamsAreRefused() throws {
        let (offer, data) = try Self.offer(size: 3 * Self.chunk)
        var sender = try FileSendCore(offer: offer, now: 0)
        _ = try sender.receiveHello(try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0).hello(), now: 0)
        let frames = try Self.frames(&sender, data: data, from: 0)
        func fresh() throws -> FileReceiveCore {
            var receiver = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0)
            try receiver.receiveReply(TransferHandshake.magic + offer.proofForTests("sender", 0), now: 0)
            return receiver
        }
        // Reordered: chunk 1 first.
        var r1 = try fresh()
        #expect(throws: FileTransferError.self) { try Self.deliver(frames[1], to: &r1) }
        // Replayed: chunk 0 twice.
        var r2 = try fresh()
        try Self.deliver(frames[0], to: &r2)
        #expect(throws: FileTransferError.self) { try Self.deliver(frames[0], to: &r2) }
        // Truncated: the stream ends after chunk 1; the file is never verified.
        var r3 = try fresh()
        try Self.deliver(frames[0], to: &r3)
        try Self.deliver(frames[1], to: &r3)
        #expect(r3.state == .receiving(next: 2))
        #expect(r3.verdict()[4] == 0)
        // Truncation by relabelling: chunk 1 with its final flag set (and the header's other checks
        // bypassed) still fails, because the flag is authenticated.
        let keys = FileTransferKeys(offer: offer)
        let opener = try FileChunkCipher(keys: keys, encrypting: false)
        var body = Array(frames[1][ChunkFrameHeader.size...])
        #expect(throws: FileTransferError.self) {
            try body.withUnsafeMutableBytes { b in try opener.open(index: 1, final: true, sealed: UnsafeRawBufferPointer(b), output: b) }
        }
        // A relabelled header is refused before decryption.
        var relabelled = frames[1]; relabelled[8] = 1
        var r4 = try fresh()
        try Self.deliver(frames[0], to: &r4)
        #expect(throws: FileTransferError.self) { try Self.deliver(relabelled, to: &r4) }
    }

    @Test func chunksFromAnotherTransferOfTheSameFileDoNotOpen() throws {
        let (first, data) = try Self.offer(size: 2 * Self.chunk)
        let (second, _) = try Self.offer(size: data.count, seed: 2, content: data)
        var sender = try FileSendCore(offer: first, now: 0)
        _ = try sender.receiveHello(try FileReceiveCore(offer: first, resumeFrom: 0, now: 0).hello(), now: 0)
        let frames = try Self.frames(&sender, data: data, from: 0)
        var receiver = try FileReceiveCore(offer: second, resumeFrom: 0, now: 0)
        try receiver.receiveReply(TransferHandshake.magic + second.proofForTests("sender", 0), now: 0)
        #expect(throws: FileTransferError.authenticationFailed("chunk 0 does not authenticate (altered, truncated or misplaced)")) {
            try Self.deliver(frames[0], to: &receiver)
        }
    }

    @Test func handshakesWithoutTheTransferKeyAreRefused() throws {
        let (offer, _) = try Self.offer(size: 3000)
        let (other, _) = try Self.offer(size: 3000, seed: 5)
        let hello = try FileReceiveCore(offer: offer, resumeFrom: 1, now: 0).hello()
        // Another transfer's hello, a hello with an altered resume point, a short hello.
        var s1 = try FileSendCore(offer: other, now: 0)
        #expect(throws: FileTransferError.self) { try s1.receiveHello(hello, now: 0) }
        var s2 = try FileSendCore(offer: offer, now: 0)
        var moved = hello; moved[27] = 0
        #expect(throws: FileTransferError.self) { try s2.receiveHello(moved, now: 0) }
        #expect(s2.state == .awaitingHello)
        #expect(throws: FileTransferError.self) { try s2.receiveHello(Array(hello.dropLast()), now: 0) }
        let reply = try s2.receiveHello(hello, now: 0)
        #expect(throws: FileTransferError.self) { try s2.receiveHello(hello, now: 0) }
        // A reply from someone without the key.
        var r = try FileReceiveCore(offer: offer, resumeFrom: 1, now: 0)
        var forged = reply; forged[10] ^= 1
        #expect(throws: FileTransferError.self) { try r.receiveReply(forged, now: 0) }
        #expect(r.state == .failed)
        // A forged verdict.
        var sender = try FileSendCore(offer: offer, now: 0)
        _ = try sender.receiveHello(try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0).hello(), now: 0)
        _ = try Self.frames(&sender, data: [UInt8](repeating: 0, count: 3000), from: 0)
        #expect(throws: FileTransferError.self) { try sender.receiveVerdict(TransferVerdict.magic + [1] + [UInt8](repeating: 0, count: 32), now: 0) }
        #expect(sender.state == .awaitingVerdict)
    }

    @Test func theSenderRefusesOutOfOrderOrResizedChunks() throws {
        let (offer, data) = try Self.offer(size: 2 * Self.chunk)
        var sender = try FileSendCore(offer: offer, now: 0)
        var frame = [UInt8](repeating: 0, count: Self.chunk + 64)
        #expect(throws: FileTransferError.self) {  // before the hello
            try data.withUnsafeBytes { p in try frame.withUnsafeMutableBytes { try sender.seal(index: 0, plaintext: UnsafeRawBufferPointer(rebasing: p[0..<Self.chunk]), into: $0, now: 0) } }
        }
        _ = try sender.receiveHello(try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0).hello(), now: 0)
        #expect(throws: FileTransferError.self) {  // skipping chunk 0
            try data.withUnsafeBytes { p in try frame.withUnsafeMutableBytes { try sender.seal(index: 1, plaintext: UnsafeRawBufferPointer(rebasing: p[0..<Self.chunk]), into: $0, now: 0) } }
        }
        #expect(throws: FileTransferError.self) {  // the file shrank under us
            try data.withUnsafeBytes { p in try frame.withUnsafeMutableBytes { try sender.seal(index: 0, plaintext: UnsafeRawBufferPointer(rebasing: p[0..<100]), into: $0, now: 0) } }
        }
    }

    @Test func idleTimeoutOnTheVirtualClock() throws {
        let (offer, data) = try Self.offer(size: 2 * Self.chunk)
        let idle = FileTransferTiming.idleTimeout
        var sender = try FileSendCore(offer: offer, now: 100)
        var receiver = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 100)
        try sender.checkTimeout(now: 100 + idle)
        #expect(throws: FileTransferError.stalled) { try sender.checkTimeout(now: 100 + idle + 0.001) }
        try receiver.receiveReply(try sender.receiveHello(receiver.hello(), now: 200), now: 200)
        let frames = try Self.frames(&sender, data: data, from: 0, now: 210)
        try Self.deliver(frames[0], to: &receiver, now: 220)
        try receiver.checkTimeout(now: 220 + idle)
        #expect(throws: FileTransferError.stalled) { try receiver.checkTimeout(now: 220 + idle + 0.001) }
        try Self.deliver(frames[1], to: &receiver, now: 300)
        try receiver.checkTimeout(now: 10_000)  // verified: no deadline any more
    }

    /// The chunk format as CRYPTO.md states it, checked with an independent AES-GCM and HKDF
    /// (swift-crypto) rather than the OpenSSL code under test.
    @Test func chunkCiphertextMatchesTheDocumentedConstruction() throws {
        let (offer, data) = try Self.offer(size: 1500)
        var sender = try FileSendCore(offer: offer, now: 0)
        _ = try sender.receiveHello(try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0).hello(), now: 0)
        let frames = try Self.frames(&sender, data: data, from: 0)
        let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: offer.transferKey), salt: offer.transferID.bytes,
                                         info: Array("shroud/v1/file/chunk".utf8), outputByteCount: 32)
        for (index, frame) in frames.enumerated() {
            let final = index + 1 == frames.count
            var aad = ByteWriter(); aad.write(bytes: offer.transferID.bytes); aad.write(UInt64(index)); aad.write(UInt8(final ? 1 : 0))
            aad.write(UInt32(offer.chunkLength(UInt64(index))))
            var nonce = ByteWriter(); nonce.write(UInt32(0)); nonce.write(UInt64(index))
            let body = Array(frame[ChunkFrameHeader.size...])
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonce.bytes), ciphertext: body.dropLast(16), tag: body.suffix(16))
            let plain = Array(try AES.GCM.open(box, using: key, authenticating: aad.bytes))
            #expect(plain == Array(data[index * Self.chunk..<index * Self.chunk + plain.count]))
            #expect(Array(frame[0..<8]) == nonce.bytes.suffix(8))
        }
        let rendezvous = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: offer.transferKey), salt: offer.transferID.bytes,
                                                info: Array("shroud/v1/file/rendezvous".utf8), outputByteCount: 16)
        #expect(FileTransferKeys(offer: offer).rendezvous == rendezvous.withUnsafeBytes { Array($0) })
    }
}

/// Mutated payloads and stream messages: nothing crashes, and whatever parses re-serializes to the
/// same bytes (the formats are canonical).
@Suite struct FileTransferFuzzTests {
    static let rounds = 3000

    @Test func mutatedPayloadsNeverCrashAndReparseCanonically() throws {
        var random = SeededRandom(seed: 0xF17E)
        let (offer, _) = try FileTransferTests.offer(size: 5000, candidates: ["10.0.0.1:5", "host:7"])
        let seeds = [DirectPayload.fileOffer(offer).serialize(),
                     DirectPayload.fileAnswer(FileAnswer(transferID: offer.transferID, decision: .acceptDirect, resumeFrom: 3)).serialize(),
                     DirectPayload.text(DirectText(sentAt: 1, text: "hi")).serialize()]
        for round in 0..<Self.rounds {
            var bytes = seeds[round % seeds.count]
            let flips = 1 + Int(random.bytes(1)[0] % 4)
            for _ in 0..<flips {
                let position = Int(random.bytes(2).withUnsafeBytes { $0.load(as: UInt16.self) }) % bytes.count
                bytes[position] = random.bytes(1)[0]
            }
            if random.bytes(1)[0] < 40 { bytes = Array(bytes.prefix(Int(random.bytes(1)[0]) % (bytes.count + 1))) }
            if let payload = try? DirectPayload(parsing: bytes) {
                #expect(payload.serialize() == bytes)
            }
        }
    }

    @Test func randomFrameHeadersAndHandshakesNeverCrash() throws {
        var random = SeededRandom(seed: 0xF17F)
        let (offer, _) = try FileTransferTests.offer(size: 3 * FileTransferTests.chunk)
        for _ in 0..<Self.rounds {
            let bytes = random.bytes(ChunkFrameHeader.size)
            if let header = try? bytes.withUnsafeBytes({ try ChunkFrameHeader(parsing: $0, maximumLength: offer.chunkSize) }) {
                var out = [UInt8](repeating: 0, count: ChunkFrameHeader.size)
                out.withUnsafeMutableBytes { header.write(into: $0) }
                #expect(out == bytes)
            }
            var sender = try FileSendCore(offer: offer, now: 0)
            #expect(throws: FileTransferError.self) { try sender.receiveHello(TransferHandshake.magic + random.bytes(56), now: 0) }
            var receiver = try FileReceiveCore(offer: offer, resumeFrom: 0, now: 0)
            #expect(throws: FileTransferError.self) { try receiver.receiveReply(TransferHandshake.magic + random.bytes(32), now: 0) }
        }
    }
}

extension FileOffer {
    /// The sender's handshake proof, for driving a receiver without a sender core.
    func proofForTests(_ label: String, _ value: UInt64) -> [UInt8] { FileTransferKeys(offer: self).proof(label, value) }
}
