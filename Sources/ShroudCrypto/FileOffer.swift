import ShroudWire

// File transfer signalling (docs/PROTOCOL.md §7): the offer and the answer travel as direct-message
// plaintexts inside the pairwise session, beside `DirectText`, so the relay never sees a name, a
// size, a hash, a candidate address or the transfer key.

/// Limits of the file transfer, each a named constant with a test at and one past it.
public enum FileTransferLimits {
    /// The longest file name in an offer, in UTF-8 bytes (the usual file system limit).
    public static let maximumNameBytes = 255
    /// The smallest and largest chunk an offer may announce.
    public static let minimumChunkSize = 1024
    public static let maximumChunkSize = 16 << 20
    /// The chunk size `shroud file send` uses: large, so a gigabyte is a thousand syscalls and
    /// cipher calls, and small enough that memory stays flat and a resume loses little.
    public static let defaultChunkSize = 1 << 20
    /// The largest file an offer may announce (1 PiB): keeps every size computation far from overflow.
    public static let maximumFileSize: UInt64 = 1 << 50
    /// Direct-path candidate addresses per offer.
    public static let maximumCandidates = 16
    /// The longest candidate, `HOST:PORT` in ASCII.
    public static let maximumCandidateBytes = 64
}

extension DirectPayload {
    /// A file offer or answer (kinds 0x03 and 0x04 of `DirectPayload`).
    public var isFileSignal: Bool {
        switch self {
        case .fileOffer, .fileAnswer: true
        default: false
        }
    }
}

/// A 16-byte random transfer id, chosen by the sender for each offer.
public struct TransferID: Hashable, Sendable, CustomStringConvertible {
    public static let size = 16
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) throws {
        guard bytes.count == Self.size else { throw CryptoError.invalidInput("transfer id must be \(Self.size) bytes") }
        self.bytes = bytes
    }
    public static func random(using random: inout some RandomSource) -> TransferID {
        // Force-free: `bytes(16)` always has 16 bytes.
        TransferID(unchecked: random.bytes(size))
    }
    private init(unchecked bytes: [UInt8]) { self.bytes = bytes }
    public var description: String { Hex.encode(bytes) }
}

/// The sender's offer:
///
///     version u8 (= 1) ‖ transfer id (16) ‖ sent-at u64 ms ‖ size u64 ‖ chunk size u32 ‖
///     SHA-256 of the file (32) ‖ transfer key (32) ‖ paths u8 (bit 0 direct, bit 1 relay) ‖
///     name length u16 ‖ name (UTF-8) ‖ candidate count u8 ‖ { length u8 ‖ "HOST:PORT" }*
///
/// The transfer key is fresh random bytes for every offer, so a resumed transfer (a new offer for
/// the same file) never reuses a chunk nonce under a key.
public struct FileOffer: Equatable, Sendable {
    public static let version: UInt8 = 1
    public struct Paths: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let direct = Paths(rawValue: 1)
        public static let relay = Paths(rawValue: 2)
    }

    public let transferID: TransferID
    public let sentAt: UInt64
    public let size: UInt64
    public let chunkSize: Int
    public let sha256: [UInt8]
    public let transferKey: [UInt8]
    public let paths: Paths
    /// The name as the sender gave it; the receiver sanitizes it (`FileName.safe`) before use.
    public let name: String
    public let candidates: [String]

    public init(transferID: TransferID, sentAt: UInt64, size: UInt64, chunkSize: Int, sha256: [UInt8], transferKey: [UInt8],
                paths: Paths, name: String, candidates: [String]) throws {
        self.transferID = transferID
        self.sentAt = sentAt
        self.size = size
        self.chunkSize = chunkSize
        self.sha256 = sha256
        self.transferKey = transferKey
        self.paths = paths
        self.name = name
        self.candidates = candidates
        try validate()
    }

    private func validate() throws {
        guard size <= FileTransferLimits.maximumFileSize else {
            throw CryptoError.limitExceeded("offered file is \(size) bytes; the most is \(FileTransferLimits.maximumFileSize)")
        }
        guard (FileTransferLimits.minimumChunkSize...FileTransferLimits.maximumChunkSize).contains(chunkSize) else {
            throw CryptoError.limitExceeded("chunk size \(chunkSize) is outside \(FileTransferLimits.minimumChunkSize)…\(FileTransferLimits.maximumChunkSize)")
        }
        guard sha256.count == 32, transferKey.count == 32 else { throw CryptoError.invalidInput("offer hash and key must be 32 bytes") }
        guard name.utf8.count <= FileTransferLimits.maximumNameBytes else {
            throw CryptoError.limitExceeded("offered name is \(name.utf8.count) bytes; the most is \(FileTransferLimits.maximumNameBytes)")
        }
        guard candidates.count <= FileTransferLimits.maximumCandidates else {
            throw CryptoError.limitExceeded("offer has \(candidates.count) candidates; the most is \(FileTransferLimits.maximumCandidates)")
        }
        for candidate in candidates where candidate.utf8.count > FileTransferLimits.maximumCandidateBytes || candidate.isEmpty {
            throw CryptoError.limitExceeded("candidate '\(candidate.prefix(80))' must be 1…\(FileTransferLimits.maximumCandidateBytes) bytes")
        }
        guard paths.rawValue & ~3 == 0, !paths.isEmpty else { throw CryptoError.invalidInput("offer paths \(paths.rawValue) are not valid") }
    }

    /// Chunks in the file; an empty file is one empty final chunk, so its truncation is detected too.
    public var chunkCount: UInt64 { size == 0 ? 1 : (size + UInt64(chunkSize) - 1) / UInt64(chunkSize) }

    /// Plaintext bytes of chunk `index` (the last one may be short).
    public func chunkLength(_ index: UInt64) -> Int {
        guard index + 1 < chunkCount else { return Int(size - UInt64(chunkSize) * (chunkCount - 1)) }
        return chunkSize
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 160 + name.utf8.count)
        w.write(Self.version)
        w.write(bytes: transferID.bytes)
        w.write(sentAt); w.write(size); w.write(UInt32(chunkSize))
        w.write(bytes: sha256); w.write(bytes: transferKey)
        w.write(paths.rawValue)
        w.write(UInt16(name.utf8.count)); w.write(bytes: Array(name.utf8))
        w.write(UInt8(candidates.count))
        for candidate in candidates { w.write(UInt8(candidate.utf8.count)); w.write(bytes: Array(candidate.utf8)) }
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        let version = try r.readUInt8("offer version")
        guard version == Self.version else { throw CryptoError.invalidInput("file offer version \(version) is not supported") }
        transferID = try TransferID(try r.readBytes(TransferID.size, "transfer id"))
        sentAt = try r.readUInt64("sent at")
        size = try r.readUInt64("size")
        chunkSize = Int(try r.readUInt32("chunk size"))
        sha256 = try r.readBytes(32, "sha256")
        transferKey = try r.readBytes(32, "transfer key")
        paths = Paths(rawValue: try r.readUInt8("paths"))
        let nameLength = Int(try r.readUInt16("name length"))
        guard nameLength <= FileTransferLimits.maximumNameBytes else {
            throw CryptoError.limitExceeded("offered name is \(nameLength) bytes; the most is \(FileTransferLimits.maximumNameBytes)")
        }
        guard let name = String(validating: try r.readBytes(nameLength, "name"), as: UTF8.self) else {
            throw CryptoError.invalidInput("offered name is not UTF-8")
        }
        self.name = name
        let count = Int(try r.readUInt8("candidate count"))
        guard count <= FileTransferLimits.maximumCandidates else {
            throw CryptoError.limitExceeded("offer has \(count) candidates; the most is \(FileTransferLimits.maximumCandidates)")
        }
        var candidates: [String] = []
        for _ in 0..<count {
            let length = Int(try r.readUInt8("candidate length"))
            guard let text = String(validating: try r.readBytes(length, "candidate"), as: UTF8.self) else {
                throw CryptoError.invalidInput("candidate is not UTF-8")
            }
            candidates.append(text)
        }
        self.candidates = candidates
        guard r.isAtEnd else { throw CryptoError.invalidInput("file offer has \(r.remaining) trailing bytes") }
        try validate()
    }
}

/// The receiver's answer: transfer id (16) ‖ decision u8 (0 decline, 1 accept by the direct path,
/// 2 accept by the relay pipe) ‖ resume-from u64 (chunks the receiver already holds).
public struct FileAnswer: Equatable, Sendable {
    public enum Decision: UInt8, Sendable {
        case decline = 0
        case acceptDirect = 1
        case acceptRelay = 2
    }
    public let transferID: TransferID
    public let decision: Decision
    public let resumeFrom: UInt64

    public init(transferID: TransferID, decision: Decision, resumeFrom: UInt64) {
        self.transferID = transferID
        self.decision = decision
        self.resumeFrom = resumeFrom
    }

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 25)
        w.write(bytes: transferID.bytes); w.write(decision.rawValue); w.write(resumeFrom)
        return w.bytes
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        transferID = try TransferID(try r.readBytes(TransferID.size, "transfer id"))
        let raw = try r.readUInt8("decision")
        guard let decision = Decision(rawValue: raw) else { throw CryptoError.invalidInput("answer decision \(raw) is not known") }
        self.decision = decision
        resumeFrom = try r.readUInt64("resume from")
        guard r.isAtEnd else { throw CryptoError.invalidInput("file answer has \(r.remaining) trailing bytes") }
    }
}

/// Turns an offered name into one safe to create inside the receiver's directory, or refuses it.
public enum FileName {
    /// The name's last path component with control characters removed; refuses names that are
    /// empty, `.`/`..`, or start with a dot after that (hidden files, and the receiver's own
    /// `.shroud-partial-…` files). A name with `/` keeps only what follows the last `/`, so
    /// `../x` becomes `x` and `/etc/passwd` becomes `passwd`: the name can never leave the directory.
    public static func safe(_ offered: String) throws -> String {
        guard !offered.unicodeScalars.contains("\0") else { throw CryptoError.invalidInput("the offered name contains NUL: refused") }
        let last = offered.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? ""
        let cleaned = String(String.UnicodeScalarView(last.unicodeScalars.filter { !($0.properties.generalCategory == .control) }))
        guard !cleaned.isEmpty, cleaned != ".", cleaned != ".." else {
            throw CryptoError.invalidInput("the offered name '\(offered.prefix(80))' has no usable file name: refused")
        }
        guard !cleaned.hasPrefix(".") else {
            throw CryptoError.invalidInput("the offered name '\(cleaned.prefix(80))' starts with a dot: refused")
        }
        return cleaned
    }
}
