import COpenSSL
import CSodium
import ShroudWire

// The file transfer's data stream and its two pure state machines (docs/PROTOCOL.md §7,
// docs/CRYPTO.md "File transfer"). The same bytes flow over a direct TCP connection and through
// the relay's blind pipe; neither the network code nor the relay takes part in any decision here.

public enum FileTransferError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer proved no knowledge of the transfer key, or a chunk failed authentication.
    case authenticationFailed(String)
    /// A well-authenticated stream broke the protocol: wrong index, length or final flag.
    case protocolViolation(String)
    /// Every chunk opened but the whole file's SHA-256 is not the offered one.
    case hashMismatch
    /// No progress for `FileTransferTiming.idleTimeout`.
    case stalled
    case cipherFailure(String)

    public var description: String {
        switch self {
        case let .authenticationFailed(reason): return "authentication failed: \(reason)"
        case let .protocolViolation(reason): return "protocol violation: \(reason)"
        case .hashMismatch: return "the received file's SHA-256 is not the offered one"
        case .stalled: return "no progress for \(Int(FileTransferTiming.idleTimeout)) s"
        case let .cipherFailure(reason): return reason
        }
    }
}

public enum FileTransferTiming {
    /// Seconds without a verified chunk (or the handshake) before either side gives up.
    public static let idleTimeout: Double = 30
}

/// Keys derived from an offer's transfer key, salted with its transfer id:
///
///     chunk key  = HKDF-SHA256(transfer key, salt = transfer id, info = "shroud/v1/file/chunk", 32)
///     hello key  = HKDF-SHA256(…, info = "shroud/v1/file/hello", 32)
///     rendezvous = HKDF-SHA256(…, info = "shroud/v1/file/rendezvous", 16)   (the relay pipe's id)
public struct FileTransferKeys: Sendable {
    public static let chunkInfo = Array("shroud/v1/file/chunk".utf8)
    public static let helloInfo = Array("shroud/v1/file/hello".utf8)
    public static let rendezvousInfo = Array("shroud/v1/file/rendezvous".utf8)
    public static let rendezvousSize = 16

    public let transferID: TransferID
    let chunkKey: SecureBytes
    let helloKey: SecureBytes
    public let rendezvous: [UInt8]

    public init(offer: FileOffer) {
        transferID = offer.transferID
        let ikm = SecureBytes(copying: offer.transferKey)
        chunkKey = SessionPrimitives.hkdf(ikm: ikm, salt: offer.transferID.bytes, info: Self.chunkInfo, outputLength: 32)
        helloKey = SessionPrimitives.hkdf(ikm: ikm, salt: offer.transferID.bytes, info: Self.helloInfo, outputLength: 32)
        let r = SessionPrimitives.hkdf(ikm: ikm, salt: offer.transferID.bytes, info: Self.rendezvousInfo, outputLength: Self.rendezvousSize)
        rendezvous = r.withUnsafeBytes { Array($0) }
    }

    /// HMAC-SHA256(hello key, label ‖ transfer id ‖ value u64).
    func proof(_ label: String, _ value: UInt64, extra: [UInt8] = []) -> [UInt8] {
        var message = ByteWriter(capacity: 64)
        message.write(bytes: Array(label.utf8)); message.write(bytes: transferID.bytes); message.write(value); message.write(bytes: extra)
        var out = [UInt8](repeating: 0, count: 32)
        helloKey.withUnsafeBytes { key in
            message.bytes.withUnsafeBytes { m in out.withUnsafeMutableBytes { SessionPrimitives.hmac(key: key, m, into: $0) } }
        }
        return out
    }
}

/// AES-256-GCM under one transfer's chunk key in an OpenSSL EVP context, reused for every chunk.
///
///     nonce = 0x00000000 ‖ chunk index u64
///     AAD   = transfer id (16) ‖ chunk index u64 ‖ final u8 (1 on the last chunk) ‖ plaintext length u32
public final class FileChunkCipher {
    public static let tagSize = 16
    public static let aadSize = 16 + 8 + 1 + 4
    private let context: OpaquePointer
    private let encrypting: Bool
    private let transferID: [UInt8]
    private let scratch: UnsafeMutablePointer<UInt8>  // nonce (12) then AAD (29)

    public init(keys: FileTransferKeys, encrypting: Bool) throws {
        guard let context = EVP_CIPHER_CTX_new() else { throw FileTransferError.cipherFailure("EVP_CIPHER_CTX_new failed") }
        self.context = context
        self.encrypting = encrypting
        transferID = keys.transferID.bytes
        scratch = .allocate(capacity: 12 + Self.aadSize)
        scratch.initialize(repeating: 0, count: 12 + Self.aadSize)
        let ok = keys.chunkKey.withUnsafeBytes { k in
            EVP_CipherInit_ex(context, EVP_aes_256_gcm(), nil, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, encrypting ? 1 : 0)
        }
        guard ok == 1 else { throw FileTransferError.cipherFailure("EVP_CipherInit_ex failed") }
    }

    deinit {
        EVP_CIPHER_CTX_free(context)  // OpenSSL cleanses the key schedule
        scratch.deallocate()
    }

    private func prepare(index: UInt64, final: Bool, length: Int) -> Bool {
        for i in 0..<4 { scratch[i] = 0 }
        for i in 0..<8 { scratch[4 + i] = UInt8(truncatingIfNeeded: index >> (56 - 8 * UInt64(i))) }
        let aad = scratch + 12
        for i in 0..<16 { aad[i] = transferID[i] }
        for i in 0..<8 { aad[16 + i] = scratch[4 + i] }
        aad[24] = final ? 1 : 0
        for i in 0..<4 { aad[25 + i] = UInt8(truncatingIfNeeded: UInt32(length) >> (24 - 8 * UInt32(i))) }
        guard EVP_CipherInit_ex(context, nil, nil, nil, scratch, -1) == 1 else { return false }
        var produced: Int32 = 0
        return EVP_CipherUpdate(context, nil, &produced, aad, Int32(Self.aadSize)) == 1
    }

    /// Encrypts `plaintext` into `output` and writes the 16-byte tag right after it
    /// (`output` holds at least plaintext.count + 16 bytes; it may be the plaintext's own memory).
    public func seal(index: UInt64, final: Bool, plaintext: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer) throws {
        guard encrypting, output.count >= plaintext.count + Self.tagSize, let out = output.baseAddress?.assumingMemoryBound(to: UInt8.self),
              prepare(index: index, final: final, length: plaintext.count) else {
            throw FileTransferError.cipherFailure("chunk \(index) could not be sealed")
        }
        var produced: Int32 = 0
        var written = 0
        if plaintext.count > 0 {
            guard EVP_EncryptUpdate(context, out, &produced, plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(plaintext.count)) == 1 else {
                throw FileTransferError.cipherFailure("chunk \(index) could not be sealed")
            }
            written = Int(produced)
        }
        guard EVP_EncryptFinal_ex(context, out + written, &produced) == 1,
              shroud_evp_aead_get_tag(context, out + plaintext.count, Self.tagSize) == 1 else {
            throw FileTransferError.cipherFailure("chunk \(index) could not be sealed")
        }
    }

    /// Decrypts `sealed` (ciphertext ‖ tag) into `output` (sealed.count − 16 bytes; may alias `sealed`);
    /// throws unless the tag verifies for this index, final flag and length.
    public func open(index: UInt64, final: Bool, sealed: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer) throws {
        let length = sealed.count - Self.tagSize
        guard !encrypting, length >= 0, output.count >= length, let base = sealed.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let out = output.baseAddress?.assumingMemoryBound(to: UInt8.self), prepare(index: index, final: final, length: length) else {
            throw FileTransferError.cipherFailure("chunk \(index) could not be opened")
        }
        var produced: Int32 = 0
        var written = 0
        if length > 0 {
            guard EVP_DecryptUpdate(context, out, &produced, base, Int32(length)) == 1 else {
                throw FileTransferError.cipherFailure("chunk \(index) could not be opened")
            }
            written = Int(produced)
        }
        guard shroud_evp_aead_set_tag(context, UnsafeMutablePointer(mutating: base + length), Self.tagSize) == 1,
              EVP_DecryptFinal_ex(context, out + written, &produced) == 1 else {
            throw FileTransferError.authenticationFailed("chunk \(index) does not authenticate (altered, truncated or misplaced)")
        }
    }
}

/// SHA-256 over a stream, in an OpenSSL EVP digest context (SHA-NI: about 1.8 GB/s here).
public final class FileDigest {
    private let context: OpaquePointer

    public init() throws {
        guard let context = EVP_MD_CTX_new() else { throw FileTransferError.cipherFailure("EVP_MD_CTX_new failed") }
        self.context = context
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else { throw FileTransferError.cipherFailure("EVP_DigestInit_ex failed") }
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        _ = EVP_DigestUpdate(context, bytes.baseAddress, bytes.count)
    }

    public func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
        return out
    }
}

// MARK: Stream messages

/// The receiver opens the stream (on a direct connection or a relay pipe) with
///
///     "SHF1" ‖ transfer id (16) ‖ resume-from u64 ‖ HMAC(hello key, "receiver" ‖ transfer id ‖ resume-from)   (60 bytes)
///
/// and the sender answers `"SHF1" ‖ HMAC(hello key, "sender" ‖ transfer id ‖ resume-from)` (36 bytes), then
/// sends chunk frames. Only holders of the transfer key (inside the end-to-end session) can produce
/// either, so the relay or anyone who finds the port cannot take the sender's place or pull data.
public enum TransferHandshake {
    public static let magic = Array("SHF1".utf8)
    public static let helloSize = 4 + 16 + 8 + 32
    public static let replySize = 4 + 32
}

/// A chunk frame: index u64 ‖ final u8 ‖ plaintext length u32 ‖ ciphertext ‖ tag (16).
public struct ChunkFrameHeader: Equatable, Sendable {
    public static let size = 13
    public let index: UInt64
    public let final: Bool
    public let length: Int

    public init(index: UInt64, final: Bool, length: Int) { self.index = index; self.final = final; self.length = length }

    public init(parsing bytes: UnsafeRawBufferPointer, maximumLength: Int) throws {
        guard bytes.count >= Self.size else { throw FileTransferError.protocolViolation("chunk header is \(bytes.count) bytes") }
        var index: UInt64 = 0
        for i in 0..<8 { index = index << 8 | UInt64(bytes[i]) }
        guard bytes[8] <= 1 else { throw FileTransferError.protocolViolation("chunk final flag \(bytes[8]) is not 0 or 1") }
        var length = 0
        for i in 9..<13 { length = length << 8 | Int(bytes[i]) }
        guard length <= maximumLength else {
            throw FileTransferError.protocolViolation("chunk of \(length) bytes is longer than the offered chunk size \(maximumLength)")
        }
        self.index = index
        self.final = bytes[8] == 1
        self.length = length
    }

    public func write(into out: UnsafeMutableRawBufferPointer) {
        for i in 0..<8 { out[i] = UInt8(truncatingIfNeeded: index >> (56 - 8 * UInt64(i))) }
        out[8] = final ? 1 : 0
        for i in 0..<4 { out[9 + i] = UInt8(truncatingIfNeeded: UInt32(length) >> (24 - 8 * UInt32(i))) }
    }

    /// Bytes after the header: ciphertext and tag.
    public var bodySize: Int { length + FileChunkCipher.tagSize }
}

/// The receiver's last word once it has the final chunk:
/// `"SHFV" ‖ verdict u8 (1 verified, 0 hash mismatch) ‖ HMAC(hello key, "verdict" ‖ transfer id ‖ verdict)` (37 bytes).
public enum TransferVerdict {
    public static let magic = Array("SHFV".utf8)
    public static let size = 4 + 1 + 32
}

// MARK: Sender

/// The sender's side of one transfer. The caller feeds the receiver's hello, then for every chunk
/// index it is told to send reads that chunk's plaintext and lets `seal` produce the frame, then
/// feeds the verdict. Time comes in as `now` (seconds); `checkTimeout` says when to give up.
public struct FileSendCore {
    public enum State: Equatable, Sendable {
        case awaitingHello
        case sending(next: UInt64)
        case awaitingVerdict
        case verified
    }

    public let offer: FileOffer
    public let keys: FileTransferKeys
    public private(set) var state: State = .awaitingHello
    public private(set) var resumeFrom: UInt64 = 0
    private let cipher: FileChunkCipher
    private var lastProgress: Double

    public init(offer: FileOffer, now: Double) throws {
        self.offer = offer
        keys = FileTransferKeys(offer: offer)
        cipher = try FileChunkCipher(keys: keys, encrypting: true)
        lastProgress = now
    }

    /// Checks the receiver's hello and returns the sender's reply; afterwards `state` is
    /// `.sending(next: resume-from)`.
    public mutating func receiveHello(_ hello: [UInt8], now: Double) throws -> [UInt8] {
        guard state == .awaitingHello else { throw FileTransferError.protocolViolation("a second hello") }
        guard hello.count == TransferHandshake.helloSize, Array(hello[0..<4]) == TransferHandshake.magic else {
            throw FileTransferError.protocolViolation("the peer's hello is not a Shroud file hello")
        }
        guard constantTimeEquals(Array(hello[4..<20]), keys.transferID.bytes) else {
            throw FileTransferError.authenticationFailed("the hello names another transfer")
        }
        var from: UInt64 = 0
        for i in 20..<28 { from = from << 8 | UInt64(hello[i]) }
        guard constantTimeEquals(Array(hello[28..<60]), keys.proof("receiver", from)) else {
            throw FileTransferError.authenticationFailed("the hello does not prove the transfer key")
        }
        guard from < offer.chunkCount else {
            throw FileTransferError.protocolViolation("resume from chunk \(from), but the file has \(offer.chunkCount)")
        }
        resumeFrom = from
        state = .sending(next: from)
        lastProgress = now
        return TransferHandshake.magic + keys.proof("sender", from)
    }

    /// Seals chunk `index` (which must be the next one) into `frame`: the header, then ciphertext and
    /// tag. `frame` holds at least `ChunkFrameHeader.size + plaintext.count + 16` bytes; returns the
    /// frame's length.
    public mutating func seal(index: UInt64, plaintext: UnsafeRawBufferPointer, into frame: UnsafeMutableRawBufferPointer, now: Double) throws -> Int {
        guard case let .sending(next) = state, index == next else {
            throw FileTransferError.protocolViolation("chunk \(index) is not the next to send")
        }
        guard plaintext.count == offer.chunkLength(index) else {
            throw FileTransferError.protocolViolation("chunk \(index) has \(plaintext.count) bytes, expected \(offer.chunkLength(index)) (did the file change?)")
        }
        let final = index + 1 == offer.chunkCount
        let header = ChunkFrameHeader(index: index, final: final, length: plaintext.count)
        let total = ChunkFrameHeader.size + header.bodySize
        guard frame.count >= total else { throw FileTransferError.cipherFailure("frame buffer too small") }
        header.write(into: frame)
        try cipher.seal(index: index, final: final, plaintext: plaintext,
                        output: UnsafeMutableRawBufferPointer(rebasing: frame[ChunkFrameHeader.size..<total]))
        state = final ? .awaitingVerdict : .sending(next: index + 1)
        lastProgress = now
        return total
    }

    /// Checks the receiver's verdict; `state` becomes `.verified` or this throws.
    public mutating func receiveVerdict(_ verdict: [UInt8], now: Double) throws {
        guard state == .awaitingVerdict else { throw FileTransferError.protocolViolation("a verdict before the last chunk") }
        guard verdict.count == TransferVerdict.size, Array(verdict[0..<4]) == TransferVerdict.magic, verdict[4] <= 1 else {
            throw FileTransferError.protocolViolation("the receiver's verdict is malformed")
        }
        guard constantTimeEquals(Array(verdict[5...]), keys.proof("verdict", UInt64(verdict[4]))) else {
            throw FileTransferError.authenticationFailed("the verdict does not prove the transfer key")
        }
        guard verdict[4] == 1 else { throw FileTransferError.hashMismatch }
        state = .verified
        lastProgress = now
    }

    public func checkTimeout(now: Double) throws {
        if state != .verified, now - lastProgress > FileTransferTiming.idleTimeout { throw FileTransferError.stalled }
    }
}

// MARK: Receiver

/// The receiver's side: a hello, then every chunk frame in order. Plaintext is handed back only
/// after its tag verifies; the whole-file SHA-256 is checked after the final chunk. Chunks before
/// `resumeFrom` are already on disk and must be fed to `absorbPrefix` so the hash covers them.
public struct FileReceiveCore {
    public enum State: Equatable, Sendable {
        case awaitingReply
        case receiving(next: UInt64)
        /// Every chunk authenticated (`openDeferringHash`); the caller still feeds the hash.
        case awaitingHash
        case verified
        case failed
    }

    public let offer: FileOffer
    public let keys: FileTransferKeys
    public let resumeFrom: UInt64
    public private(set) var state: State = .awaitingReply
    /// Chunks verified so far, those held before included: the resume point if the transfer stops now.
    public private(set) var verifiedChunks: UInt64
    private let cipher: FileChunkCipher
    /// The whole file's running SHA-256: `absorbPrefix` and `open` feed it; a caller that hashes on
    /// another thread (after `openDeferringHash`) feeds it there, from one thread at a time.
    public let digest: FileDigest
    private var lastProgress: Double

    public init(offer: FileOffer, resumeFrom: UInt64, now: Double) throws {
        guard resumeFrom < offer.chunkCount else {
            throw FileTransferError.protocolViolation("cannot resume from chunk \(resumeFrom) of \(offer.chunkCount)")
        }
        self.offer = offer
        self.resumeFrom = resumeFrom
        verifiedChunks = resumeFrom
        keys = FileTransferKeys(offer: offer)
        cipher = try FileChunkCipher(keys: keys, encrypting: false)
        digest = try FileDigest()
        lastProgress = now
    }

    /// The hello that opens the stream.
    public func hello() -> [UInt8] {
        var w = ByteWriter(capacity: TransferHandshake.helloSize)
        w.write(bytes: TransferHandshake.magic); w.write(bytes: keys.transferID.bytes); w.write(resumeFrom)
        w.write(bytes: keys.proof("receiver", resumeFrom))
        return w.bytes
    }

    /// Already-held plaintext of the chunks before `resumeFrom`, in order.
    public func absorbPrefix(_ bytes: UnsafeRawBufferPointer) { digest.update(bytes) }

    public mutating func receiveReply(_ reply: [UInt8], now: Double) throws {
        guard state == .awaitingReply else { throw FileTransferError.protocolViolation("a second reply") }
        guard reply.count == TransferHandshake.replySize, Array(reply[0..<4]) == TransferHandshake.magic,
              constantTimeEquals(Array(reply[4...]), keys.proof("sender", resumeFrom)) else {
            state = .failed
            throw FileTransferError.authenticationFailed("the peer does not prove the transfer key")
        }
        state = .receiving(next: resumeFrom)
        lastProgress = now
    }

    /// Parses a frame header, refusing anything but the next chunk with its exact length and flag.
    public mutating func header(_ bytes: UnsafeRawBufferPointer) throws -> ChunkFrameHeader {
        guard case let .receiving(next) = state else { throw FileTransferError.protocolViolation("a chunk outside the transfer") }
        do {
            let header = try ChunkFrameHeader(parsing: bytes, maximumLength: offer.chunkSize)
            guard header.index == next else {
                throw FileTransferError.protocolViolation("chunk \(header.index) arrived where chunk \(next) was due (reordered or replayed)")
            }
            let final = next + 1 == offer.chunkCount
            guard header.final == final, header.length == offer.chunkLength(next) else {
                throw FileTransferError.protocolViolation("chunk \(next) has the wrong length or final flag")
            }
            return header
        } catch {
            state = .failed
            throw error
        }
    }

    /// Opens the body of the chunk `header` announced into `plaintext` (may alias `body`), adds it
    /// to the hash, and after the final chunk compares the hash. Returns true once the file is verified.
    public mutating func open(_ header: ChunkFrameHeader, body: UnsafeRawBufferPointer, into plaintext: UnsafeMutableRawBufferPointer,
                              now: Double) throws -> Bool {
        let final = try openDeferringHash(header, body: body, into: plaintext, now: now)
        digest.update(UnsafeRawBufferPointer(rebasing: plaintext[0..<header.length]))
        guard final else { return false }
        try finishHash(now: now)
        return true
    }

    /// Like `open`, but leaves the plaintext out of the hash: the caller adds it to `digest` itself
    /// (on another thread, so that decrypting and hashing run on two cores), in chunk order. After
    /// the final chunk the state is `.awaitingHash` until `finishHash` compares the digest.
    /// Returns true on the final chunk.
    public mutating func openDeferringHash(_ header: ChunkFrameHeader, body: UnsafeRawBufferPointer, into plaintext: UnsafeMutableRawBufferPointer,
                                           now: Double) throws -> Bool {
        guard case let .receiving(next) = state, header.index == next, body.count == header.bodySize else {
            state = .failed
            throw FileTransferError.protocolViolation("chunk body does not match its header")
        }
        do {
            try cipher.open(index: header.index, final: header.final, sealed: body, output: plaintext)
        } catch {
            state = .failed
            throw error
        }
        verifiedChunks = next + 1
        lastProgress = now
        state = header.final ? .awaitingHash : .receiving(next: next + 1)
        return header.final
    }

    /// After `openDeferringHash` returned true and the caller fed every chunk to `digest`: compares
    /// the whole file's hash with the offered one; the state becomes `.verified` or this throws.
    public mutating func finishHash(now: Double) throws {
        guard state == .awaitingHash else { throw FileTransferError.protocolViolation("the hash is checked before the final chunk") }
        guard constantTimeEquals(digest.finish(), offer.sha256) else {
            state = .failed
            throw FileTransferError.hashMismatch
        }
        state = .verified
        lastProgress = now
    }

    /// The verdict to send back: verified, or (after a hash mismatch) refused.
    public func verdict() -> [UInt8] {
        let value: UInt64 = state == .verified ? 1 : 0
        return TransferVerdict.magic + [UInt8(value)] + keys.proof("verdict", value)
    }

    public func checkTimeout(now: Double) throws {
        if state != .verified, now - lastProgress > FileTransferTiming.idleTimeout { throw FileTransferError.stalled }
    }
}
