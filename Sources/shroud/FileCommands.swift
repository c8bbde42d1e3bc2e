import ArgumentParser
import CShroudIO
import Foundation
import ShroudCrypto
import ShroudStore
import ShroudWire

/// When offers count as current, and how long each side waits.
enum FileOfferPolicy {
    /// An offer older than this (by the relay's receive time) is stale: its sender has given up.
    static let offerLifetime: Double = 600
    /// How long `file send` waits for the answer and the connection.
    static let answerTimeout: Double = offerLifetime
    /// `file receive --wait` default and most.
    static let defaultWaitSeconds: Double = 300
    static let maximumWaitSeconds: Double = 86_400
    /// How long the receiver tries each direct candidate.
    static let connectTimeout: Double = 3
    /// While `file send` waits, it looks at its listener and at the relay session in turns, this
    /// long each: the receiver's connection is taken within about this delay.
    static let peerPollInterval: Double = 0.01

    static func isFresh(_ offer: FileOffer, receivedAt: UInt64, now: Date = Date()) -> Bool {
        now.timeIntervalSince1970 - Double(receivedAt) / 1000 <= offerLifetime
    }
}

struct FileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "file", abstract: "Send files to contacts, end to end encrypted, directly or through the relay; resumable.",
        subcommands: [Send.self, Receive.self])

    enum Via: String, ExpressibleByArgument, CaseIterable { case direct, relay, auto }

    struct Send: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Offer PATH to CONTACT and send it once accepted; exits 0 when the receiver has verified the file.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The contact's name.") var contact: String
        @Argument(help: "The file to send.") var path: String
        @Option(help: "direct: only a direct TCP connection; relay: only the relay's pipe; auto: direct, else relay.") var via: Via = .auto
        @Option(help: "Name to offer instead of the file's own.") var name: String?
        @Option(name: .customLong("listen-port"), help: "TCP port for the direct connection (default: any free port).") var listenPort: UInt16 = 0
        @Option(name: .customLong("candidate"), help: ArgumentHelp("Address the receiver should connect to instead of this machine's interfaces (repeatable; e.g. a forwarded port).", valueName: "HOST:PORT"))
        var candidates: [String] = []

        func run() throws {
            FileTransferMemory.keepLargeBuffers()
            let source = try SourceFile(path: path)
            let output = global.output
            output.note("Hashing \(source.name) (\(formatBytes(source.size)))…")
            // The file's hash on a second thread while this one unlocks the profile (Argon2id),
            // connects to the relay and opens the listener: each takes a good part of a second (per
            // GiB, or per unlock) and none needs the other. (A failure here exits the process, the
            // hashing thread with it.)
            let hash = Handover<Result<[UInt8], any Error>>(.success([]))
            let hashing = WorkerThread(name: "shroud-fhash") { hash.value = Result { try source.sha256() } }
            var random = SystemRandom()
            let profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
            defer { profile.lock() }
            let recipient = try ContactBook(profile: profile.store).requireSendable(contact)
            let client = try MessagingClient(profile: profile, address: try global.relayAddress(profile.store), random: &random)
            defer { client.close() }

            let listener = via == .relay ? nil : try StreamListener(port: listenPort)
            hashing.join()
            let sha256 = try hash.value.get()
            var paths: FileOffer.Paths = []
            if via != .relay { paths.insert(.direct) }
            if via != .direct { paths.insert(.relay) }
            let offer = try FileOffer(transferID: .random(using: &random), sentAt: UInt64(Date().timeIntervalSince1970 * 1000), size: source.size,
                                      chunkSize: FileTransferLimits.defaultChunkSize, sha256: sha256, transferKey: random.bytes(32), paths: paths,
                                      name: name ?? source.name, candidates: candidates.isEmpty ? listener?.candidates() ?? [] : candidates)
            try client.send(.fileOffer(offer), to: recipient.id.signingKey, random: &random)
            output.note("Offered \(source.name) to \(contact); waiting for them to accept (shroud file receive)…")

            var core = try FileSendCore(offer: offer, now: monotonicSeconds())
            let (socket, pathName) = try awaitPeer(client: client, listener: listener, core: &core, recipient: recipient.id, random: &random)
            let started = monotonicSeconds()
            let progress = Progress(output: output, total: source.size, already: core.resumeFrom * UInt64(offer.chunkSize), label: "sent")
            try stream(source: source, socket: socket, core: &core, progress: progress)
            let seconds = monotonicSeconds() - started
            let skipped = min(source.size, core.resumeFrom * UInt64(offer.chunkSize))
            progress.finish()
            output.emit("Sent \(source.name) to \(contact) (\(formatBytes(source.size)), \(pathName), \(String(format: "%.2f", seconds)) s); the receiver verified it.",
                        ["event": "done", "name": source.name, "to": contact, "bytes": Int(source.size), "resumed_from": Int(skipped),
                         "transferred": Int(source.size - skipped), "seconds": seconds, "path": pathName, "sha256": Hex.encode(sha256),
                         "mb_per_s": seconds > 0 ? Double(source.size - skipped) / seconds / 1e6 : 0])
        }

        /// Waits for the receiver: a verified hello on the direct listener, or an answer saying
        /// "declined" or "by the relay". Text messages and other offers are left for other commands.
        private func awaitPeer(client: MessagingClient, listener: StreamListener?, core: inout FileSendCore, recipient: IdentityID,
                               random: inout SystemRandom) throws -> (TransferStream, String) {
            let deadline = Date().addingTimeInterval(FileOfferPolicy.answerTimeout)
            var answer: FileAnswer?
            let transferID = core.offer.transferID
            // Only answers to this offer from this contact; other offers stay for `file receive`
            // and text (keepingText) for `msg read`.
            client.fileHandler = { delivery in
                guard case let .fileAnswer(a) = delivery.payload else { return .leave }
                if a.transferID == transferID, delivery.sender == recipient { answer = a }
                return .processed
            }
            defer { client.fileHandler = nil }
            while deadline.timeIntervalSinceNow > 0 {
                if let listener, let socket = listener.accept(timeout: FileOfferPolicy.peerPollInterval) {
                    do {
                        let hello = try socket.readExactly(TransferHandshake.helloSize, idle: FileOfferPolicy.connectTimeout)
                        let reply = try core.receiveHello(hello, now: monotonicSeconds())
                        try socket.writeAll(reply)
                        return (socket, "direct")
                    } catch {
                        // Someone without the transfer key (or a broken attempt): keep waiting for the receiver.
                        global.output.note("ignored a direct connection: \(oneLine(error))")
                    }
                }
                if answer == nil {
                    try client.receive(until: Date().addingTimeInterval(listener == nil ? 0.2 : FileOfferPolicy.peerPollInterval), random: &random, show: { _ in },
                                       keepingText: true)
                }
                switch answer?.decision {
                case .decline?: throw Failure("\(contact) declined the file")
                case .acceptRelay?:
                    guard core.offer.paths.contains(.relay) else { throw Failure("\(contact) answered with the relay path, which --via direct excludes") }
                    let pipe = try RelayPipeStream(session: client.session, rendezvous: core.keys.rendezvous)
                    do {
                        let hello = try pipe.readExactly(TransferHandshake.helloSize, idle: FileTransferTiming.idleTimeout)
                        try pipe.writeAll(try core.receiveHello(hello, now: monotonicSeconds()))
                    } catch {
                        throw Failure("the relay pipe to \(contact) failed the handshake: \(oneLine(error))")
                    }
                    return (pipe, "relay")
                case .acceptDirect?, nil: break
                }
            }
            throw Failure("\(contact) did not accept within \(Int(FileOfferPolicy.answerTimeout)) s")
        }

        /// Reads and seals each chunk from the resume point on a second thread, a few chunks ahead of
        /// this one, which writes the frames to the socket; then waits for the verdict. A few reused
        /// buffers: memory stays flat whatever the file size.
        private func stream(source: SourceFile, socket: TransferStream, core: inout FileSendCore, progress: Progress) throws {
            let offer = core.offer
            guard case let .sending(first) = core.state else { throw Failure("the transfer did not start") }
            let pipeline = TransferPipeline(slotSize: ChunkFrameHeader.size + offer.chunkSize + FileChunkCipher.tagSize)
            let sealing = Handover(core)
            let sealer = WorkerThread(name: "shroud-fseal") {
                do {
                    for index in first..<offer.chunkCount {
                        let slot = try pipeline.acquire()
                        let frame = pipeline.buffer(slot)
                        let length = offer.chunkLength(index)
                        let plain = UnsafeMutableRawBufferPointer(rebasing: frame[ChunkFrameHeader.size..<ChunkFrameHeader.size + length])
                        try source.read(into: plain, at: index * UInt64(offer.chunkSize))
                        let n = try sealing.value.seal(index: index, plaintext: UnsafeRawBufferPointer(plain), into: frame, now: monotonicSeconds())
                        pipeline.publish(.init(slot: slot, range: 0..<n, chunk: index))
                    }
                    pipeline.finish()
                } catch {
                    pipeline.fail(error)
                }
            }
            var sent = first
            do {
                while let item = pipeline.next() {
                    do {
                        try socket.writeAll(UnsafeRawBufferPointer(rebasing: pipeline.buffer(item.slot)[item.range]))
                    } catch is PeerClosed {
                        throw Failure("the receiver went away after \(sent) chunks; run the same send and receive again to resume")
                    }
                    pipeline.release(item.slot)
                    sent = item.chunk + 1
                    progress.advance(UInt64(offer.chunkLength(item.chunk)))
                }
            } catch {
                pipeline.fail(error)
                sealer.join()
                throw error
            }
            sealer.join()
            if let error = pipeline.error { throw error }
            core = sealing.value
            let verdict: [UInt8]
            do {
                verdict = try socket.readExactly(TransferVerdict.size, idle: FileTransferTiming.idleTimeout)
            } catch {
                throw Failure("the receiver did not confirm the file: \(oneLine(error))")
            }
            do {
                try core.receiveVerdict(verdict, now: monotonicSeconds())
            } catch FileTransferError.hashMismatch {
                throw Failure("the receiver found the file's SHA-256 wrong (did the file change while sending?)")
            }
        }
    }

    struct Receive: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Wait for the next file offer, accept it (prompt, or --yes for pinned contacts), receive and verify it, and exit.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory to save into (default: the current directory).") var out: String = "."
        @Option(help: "Only take offers from this contact.") var from: String?
        @Flag(help: "Accept offers from pinned contacts without asking.") var yes = false
        @Option(help: "Seconds to wait for an offer.") var wait: Double = FileOfferPolicy.defaultWaitSeconds

        func validate() throws {
            guard wait >= 0, wait <= FileOfferPolicy.maximumWaitSeconds else {
                throw ValidationError("--wait must be between 0 and \(Int(FileOfferPolicy.maximumWaitSeconds)) seconds")
            }
        }

        func run() throws {
            FileTransferMemory.keepLargeBuffers()
            // A file size limit (RLIMIT_FSIZE) must show as a clear error, not kill the process.
            signal(SIGXFSZ, SIG_IGN)
            let output = global.output
            var directory = out
            while directory.count > 1, directory.hasSuffix("/") { directory.removeLast() }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw Failure("--out \(out) is not a directory")
            }
            var random = SystemRandom()
            let profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
            defer { profile.lock() }
            let book = ContactBook(profile: profile.store)
            if let from { _ = try book.requireSendable(from) }
            let client = try MessagingClient(profile: profile, address: try global.relayAddress(profile.store), random: &random)
            defer { client.close() }

            // The newest current offer from an acceptable contact; older ones are superseded.
            var chosen: (MessagingClient.Delivery, FileOffer)?
            var superseded: [MessagingClient.Delivery] = []
            // Text stays for `msg read` (keepingText); answers are only for a running `file send`.
            client.fileHandler = { delivery in
                guard case let .fileOffer(offer) = delivery.payload else { return .processed }
                guard FileOfferPolicy.isFresh(offer, receivedAt: delivery.receivedAt) else { return .processed }
                guard let contact = delivery.contact, (try? book.requireSendable(contact.name)) != nil else {
                    // On stderr in every mode: a refusal is worth seeing even in scripts.
                    FileHandle.standardError.write(Data("shroud: refused a file offer from unknown sender \(delivery.sender.text) (not a pinned contact, or changed or blocked)\n".utf8))
                    return .processed
                }
                if let from, contact.name != from { return .leave }
                if let previous = chosen { superseded.append(previous.0) }
                chosen = (delivery, offer)
                return .leave
            }
            try client.drainQueued(random: &random, show: { _ in }, keepingText: true)
            if chosen == nil {
                output.note("Waiting up to \(Int(wait)) s for a file offer…")
                let deadline = Date().addingTimeInterval(wait)
                while chosen == nil, deadline.timeIntervalSinceNow > 0 {
                    try client.receive(until: min(deadline, Date().addingTimeInterval(0.25)), random: &random, show: { _ in }, keepingText: true)
                }
            }
            client.fileHandler = nil
            for stale in superseded { try client.markProcessed(stale) }
            guard let (delivery, offer) = chosen, let contact = delivery.contact else {
                throw Failure("no file offer arrived within \(Int(wait)) s")
            }
            try client.markProcessed(delivery)
            let decline = { (reason: String) throws -> Never in
                try? client.send(.fileAnswer(FileAnswer(transferID: offer.transferID, decision: .decline, resumeFrom: 0)),
                                 to: contact.id.signingKey, random: &random)
                throw Failure(reason)
            }

            let name: String
            do { name = try FileName.safe(offer.name) } catch { try decline("\(contact.name) offered an unsafe file name: \(oneLine(error))") }
            let target = directory + "/" + name
            var overwrite = false
            if FileManager.default.fileExists(atPath: target) {
                guard let reply = Terminal.ask("\(target) exists. Overwrite it? [y/N] "), reply.lowercased().hasPrefix("y") else {
                    try decline("\(target) already exists: not overwriting it (move it away, or answer yes on a terminal)")
                }
                overwrite = true
            }
            if !yes {
                let question = "\(contact.name) offers \(name) (\(formatBytes(offer.size)), SHA-256 \(Hex.encode(offer.sha256).prefix(16))…). Accept? [y/N] "
                guard let reply = Terminal.ask(question) else {
                    try decline("an offer of \(name) from \(contact.name) needs an answer: run on a terminal, or pass --yes")
                }
                guard reply.lowercased().hasPrefix("y") else { try decline("declined \(name) from \(contact.name)") }
            }

            let partial: PartialFile
            do { partial = try PartialFile(directory: directory, offer: offer) } catch { try decline(oneLine(error)) }
            if partial.resumeFrom > 0 {
                output.note("Resuming \(name) from \(formatBytes(partial.resumeFrom * UInt64(offer.chunkSize))).")
            }
            var core = try FileReceiveCore(offer: offer, resumeFrom: partial.resumeFrom, now: monotonicSeconds())
            try partial.hashPrefix(into: core)

            // The path: each direct candidate in turn, else the relay pipe when offered.
            var direct: StreamSocket?
            if offer.paths.contains(.direct) {
                for candidate in offer.candidates {
                    if let s = try? StreamSocket.connect(to: candidate, timeout: FileOfferPolicy.connectTimeout) { direct = s; break }
                }
            }
            let socket: TransferStream
            let pathName: String
            if let direct {
                try client.send(.fileAnswer(FileAnswer(transferID: offer.transferID, decision: .acceptDirect, resumeFrom: partial.resumeFrom)),
                                to: contact.id.signingKey, random: &random)
                (socket, pathName) = (direct, "direct")
            } else if offer.paths.contains(.relay) {
                try client.send(.fileAnswer(FileAnswer(transferID: offer.transferID, decision: .acceptRelay, resumeFrom: partial.resumeFrom)),
                                to: contact.id.signingKey, random: &random)
                (socket, pathName) = (try RelayPipeStream(session: client.session, rendezvous: core.keys.rendezvous), "relay")
            } else {
                try decline("no direct connection to \(contact.name) worked (tried \(offer.candidates.joined(separator: ", ")))")
            }
            try socket.writeAll(core.hello())
            do {
                try core.receiveReply(try socket.readExactly(TransferHandshake.replySize, idle: FileTransferTiming.idleTimeout), now: monotonicSeconds())
            } catch {
                throw Failure("the \(pathName) connection to \(contact.name) failed the handshake: \(oneLine(error))")
            }

            let started = monotonicSeconds()
            let skipped = min(offer.size, partial.resumeFrom * UInt64(offer.chunkSize))
            let progress = Progress(output: output, total: offer.size, already: skipped, label: "received")
            try receiveChunks(socket: socket, core: &core, partial: partial, progress: progress, from: contact.name)
            try socket.writeAll(core.verdict())
            try partial.complete(as: target, overwrite: overwrite)
            let seconds = monotonicSeconds() - started
            progress.finish()
            output.emit("Received \(name) from \(contact.name) (\(formatBytes(offer.size)), \(pathName), \(String(format: "%.2f", seconds)) s), SHA-256 verified: \(target)",
                        ["event": "done", "name": name, "from": contact.name, "file": target, "bytes": Int(offer.size), "resumed_from": Int(skipped),
                         "transferred": Int(offer.size - skipped), "seconds": seconds, "path": pathName, "sha256": Hex.encode(offer.sha256),
                         "mb_per_s": seconds > 0 ? Double(offer.size - skipped) / seconds / 1e6 : 0])
        }

        /// Receives, authenticates and decrypts each frame on this thread while a second thread adds
        /// the plaintext to the whole-file hash and writes it at its place in the partial file (each
        /// chunk only after its tag verified); after the final chunk, checks the hash.
        private func receiveChunks(socket: TransferStream, core: inout FileReceiveCore, partial: PartialFile, progress: Progress, from: String) throws {
            let offer = core.offer
            let pipeline = TransferPipeline(slotSize: ChunkFrameHeader.size + offer.chunkSize + FileChunkCipher.tagSize)
            let digest = Handover(core.digest)
            let writer = WorkerThread(name: "shroud-fwrite") {
                while let item = pipeline.next() {
                    let plaintext = UnsafeRawBufferPointer(rebasing: pipeline.buffer(item.slot)[item.range])
                    digest.value.update(plaintext)
                    do {
                        try partial.write(plaintext, at: item.chunk * UInt64(offer.chunkSize))
                    } catch {
                        pipeline.fail(error)
                        return
                    }
                    pipeline.release(item.slot)
                }
            }
            do {
                while true {
                    let slot = try pipeline.acquire()
                    let buffer = pipeline.buffer(slot)
                    let headerBytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<ChunkFrameHeader.size])
                    try socket.readExactly(headerBytes, idle: FileTransferTiming.idleTimeout)
                    let header = try core.header(UnsafeRawBufferPointer(headerBytes))
                    let body = UnsafeMutableRawBufferPointer(rebasing: buffer[ChunkFrameHeader.size..<ChunkFrameHeader.size + header.bodySize])
                    try socket.readExactly(body, idle: FileTransferTiming.idleTimeout)
                    let final = try core.openDeferringHash(header, body: UnsafeRawBufferPointer(body), into: body, now: monotonicSeconds())
                    pipeline.publish(.init(slot: slot, range: ChunkFrameHeader.size..<ChunkFrameHeader.size + header.length, chunk: header.index))
                    progress.advance(UInt64(header.length))
                    if final { break }
                }
                // Chunks verified before any failure still go to disk: a resume starts after them.
                pipeline.finish()
                writer.join()
                if let error = pipeline.error { throw error }
                try core.finishHash(now: monotonicSeconds())
            } catch {
                pipeline.finish()
                writer.join()
                switch error {
                case FileTransferError.hashMismatch:
                    try? socket.writeAll(core.verdict())
                    partial.discard()
                    throw Failure("the received file's SHA-256 is not the one \(from) offered: discarded")
                case let error as FileTransferError:
                    throw Failure("refused the transfer from \(from) after \(core.verifiedChunks) verified chunks: \(error) (nothing was saved under the file's name)")
                case is PeerClosed:
                    throw Failure("\(from) went away after \(core.verifiedChunks) of \(offer.chunkCount) chunks; run the same send and receive again to resume")
                default:
                    throw error
                }
            }
        }
    }
}

/// How the file commands use malloc.
enum FileTransferMemory {
    /// Allocations up to this size come from the heap, not from a fresh `mmap` each (default: 128 KiB,
    /// raised by glibc as large blocks are freed). The relay pipe's per-frame arrays and NIO buffers
    /// are about 1 MiB each: served by `mmap`, every one cost page faults and the kernel zeroing 256
    /// fresh pages (12 % of the sender's profile on the relay path).
    static let mmapThreshold: Int32 = 32 << 20
    /// Free memory at the top of the heap kept for reuse instead of returned to the kernel.
    static let trimThreshold: Int32 = 64 << 20

    static func keepLargeBuffers() {
        _ = shroud_malloc_keep_large_blocks(mmapThreshold, trimThreshold)
    }
}

// MARK: Files on disk

/// The file being sent, read with `pread` (no whole-file buffer).
final class SourceFile: Sendable {
    let fd: Int32
    let size: UInt64
    let name: String

    init(path: String) throws {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure("cannot open \(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw Failure("\(path) is not a regular file")
        }
        size = UInt64(info.st_size)
        name = (path as NSString).lastPathComponent
        guard size <= FileTransferLimits.maximumFileSize else {
            close(fd)
            throw Failure("\(path) is larger than \(FileTransferLimits.maximumFileSize) bytes")
        }
    }

    deinit { close(fd) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            guard let base = buffer.baseAddress else { return }
            let n = pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw Failure("\(name) became shorter while sending (read \(n) at \(offset + UInt64(done)))") }
            done += n
        }
    }

    func sha256() throws -> [UInt8] {
        let digest = try FileDigest()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: FileTransferLimits.defaultChunkSize, alignment: 64)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < size {
            let n = Int(min(UInt64(buffer.count), size - offset))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            try read(into: slice, at: offset)
            digest.update(UnsafeRawBufferPointer(slice))
            offset += UInt64(n)
        }
        return digest.finish()
    }
}

/// The receiver's data before it is verified: `DIR/.shroud-partial-<SHA-256 hex>`, named by the
/// offered hash so that a new offer of the same file finds it. Whole chunks in it were each
/// authenticated before they were written, so the resume point is its length in whole chunks; a
/// partly written chunk (the process was killed mid-write) is cut off.
final class PartialFile: Sendable {
    let path: String
    let fd: Int32
    let resumeFrom: UInt64
    private let offer: FileOffer

    init(directory: String, offer: FileOffer) throws {
        self.offer = offer
        path = directory + "/.shroud-partial-" + Hex.encode(offer.sha256)
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure("cannot create \(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw Failure("\(path) is not a regular file")
        }
        let held = UInt64(info.st_size) / UInt64(offer.chunkSize)
        resumeFrom = min(held, offer.chunkCount - 1)
        guard ftruncate(fd, off_t(resumeFrom * UInt64(offer.chunkSize))) == 0 else {
            close(fd)
            throw Failure("cannot truncate \(path): \(String(cString: strerror(errno)))")
        }
        // Refuse early when the file cannot fit, instead of failing near the end.
        var fs = statvfs()
        if fstatvfs(fd, &fs) == 0 {
            let free = UInt64(fs.f_bavail) * UInt64(fs.f_frsize)
            let needed = offer.size - min(offer.size, resumeFrom * UInt64(offer.chunkSize))
            guard free >= needed else {
                throw Failure("not enough space in \(directory): the file needs \(formatBytes(needed)) more, \(formatBytes(free)) are free")
            }
        }
    }

    deinit { close(fd) }

    /// Feeds the already-held chunks to the receive core's hash.
    func hashPrefix(into core: FileReceiveCore) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: FileTransferLimits.defaultChunkSize, alignment: 64)
        defer { buffer.deallocate() }
        let total = resumeFrom * UInt64(offer.chunkSize)
        var offset: UInt64 = 0
        while offset < total {
            let n = Int(min(UInt64(buffer.count), total - offset))
            guard let base = buffer.baseAddress else { return }
            let got = pread(fd, base, n, off_t(offset))
            guard got > 0 else { throw Failure("cannot read \(path): \(String(cString: strerror(errno)))") }
            core.absorbPrefix(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            offset += UInt64(got)
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            guard let base = bytes.baseAddress else { return }
            let n = pwrite(fd, base + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                let code = n < 0 ? errno : ENOSPC
                if code == ENOSPC || code == EFBIG || code == EDQUOT {
                    throw Failure("the disk is full (or the file size limit is reached) writing \(path): \(String(cString: strerror(code))); free space and run again to resume")
                }
                throw Failure("cannot write \(path): \(String(cString: strerror(code)))")
            }
            done += n
        }
    }

    /// Flushes and moves the verified file to its name; without `overwrite`, never replaces a file
    /// that appeared meanwhile.
    func complete(as target: String, overwrite: Bool) throws {
        guard fsync(fd) == 0 else { throw Failure("cannot flush \(path): \(String(cString: strerror(errno)))") }
        if overwrite {
            guard rename(path, target) == 0 else { throw Failure("cannot rename to \(target): \(String(cString: strerror(errno)))") }
        } else {
            // link() fails with EEXIST instead of replacing; then the partial name goes away.
            guard link(path, target) == 0 else {
                throw Failure(errno == EEXIST ? "\(target) appeared meanwhile: not overwriting it; the verified data stays in \(path)"
                                              : "cannot create \(target): \(String(cString: strerror(errno)))")
            }
            unlink(path)
        }
    }

    func discard() { unlink(path) }
}

// MARK: Progress

/// A progress bar on a terminal (bytes, rate, time left) on stderr; with --json, a progress line
/// on stdout at most once a second; nothing otherwise.
final class Progress {
    private let output: Output
    private let total: UInt64
    private var done: UInt64
    private let start: UInt64
    private let label: String
    private let began = monotonicSeconds()
    private var lastShown = 0.0
    private let terminal = isatty(STDERR_FILENO) == 1

    init(output: Output, total: UInt64, already: UInt64, label: String) {
        self.output = output
        self.total = total
        done = min(already, total)
        start = done
        self.label = label
    }

    func advance(_ bytes: UInt64) {
        done += bytes
        let now = monotonicSeconds()
        guard now - lastShown >= (output.json ? 1 : 0.2) else { return }
        lastShown = now
        show(now: now)
    }

    private func show(now: Double) {
        let elapsed = max(now - began, 0.001)
        let rate = Double(done - start) / elapsed
        if output.json {
            output.emit(nil, ["event": "progress", label: Int(done), "bytes": Int(total), "seconds": elapsed])
        } else if terminal {
            let fraction = total == 0 ? 1 : Double(done) / Double(total)
            let width = 30
            let filled = Int(fraction * Double(width))
            let left = rate > 0 ? Double(total - done) / rate : 0
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            let line = String(format: "\r[%@] %3.0f%% %@ %@/s %.0f s left ", bar, fraction * 100, formatBytes(done), formatBytes(UInt64(rate)), left)
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    func finish() {
        if terminal, !output.json { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000, unit < units.count - 1 { value /= 1000; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
