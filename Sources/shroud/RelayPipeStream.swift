import Foundation
import ShroudCrypto
import ShroudWire

/// The transfer's byte stream through the relay's blind pipe (docs/PROTOCOL.md §7): both ends
/// open the pipe named by the rendezvous derived from the transfer key, on their authenticated
/// session; the relay pairs them and forwards `pipeData` without reading it (it is the same
/// end-to-end encrypted chunk stream as on a direct connection).
///
/// Flow control is end to end: at most `window` bytes are unacknowledged; the reader acknowledges
/// every `acknowledgeEvery` bytes it consumes. The window stays well under the relay's per-connection
/// outbound limit, so a slow reader slows the writer instead of being dropped. The writer also paces
/// itself under the byte rate the relay announced in `pipeReady`.
final class RelayPipeStream: TransferStream {
    static let window = 8 << 20
    static let acknowledgeEvery = 1 << 20
    /// Largest `pipeData` this client sends (a 1 MiB chunk frame fits in one).
    static let pieceSize = 2 << 20
    /// How long to wait for the other end to open the pipe.
    static let readyTimeout: Double = 60
    /// Fraction of the announced rate the writer aims for, leaving the relay's bucket a margin.
    static let paceFraction = 0.9

    private let session: RelaySession
    let pipe: PipeID
    private let bytesPerSecond: Double
    private var unacknowledged = 0
    private var consumedSinceAck = 0
    private var incoming: [[UInt8]] = []
    private var headOffset = 0
    private var sent = 0
    private let started = monotonicSeconds()

    /// Opens the pipe and waits until the relay says both ends are in.
    init(session: RelaySession, rendezvous: [UInt8]) throws {
        self.session = session
        pipe = try PipeID(rendezvous)
        guard case .ok = try session.request(.openPipe(pipe: pipe)) else { throw Failure("the relay answered openPipe with something else") }
        let deadline = Date().addingTimeInterval(Self.readyTimeout)
        while deadline.timeIntervalSinceNow > 0 {
            guard let frame = try session.nextPush(timeout: deadline.timeIntervalSinceNow) else { break }
            if case let .pipeReady(p, rate) = frame.message, p == pipe {
                bytesPerSecond = Double(max(rate, 1))
                return
            }
            if case let .pipeClosed(p, _) = frame.message, p == pipe { throw PeerClosed() }
        }
        throw Failure("the other side did not reach the relay pipe within \(Int(Self.readyTimeout)) s")
    }

    /// Handles one pushed frame (waiting up to `timeout`); false when none came.
    private func pump(timeout: Double) throws -> Bool {
        guard let frame = try session.nextPush(timeout: timeout) else { return false }
        switch frame.message {
        case let .pipeData(p, data) where p == pipe:
            incoming.append(data)
        case let .pipeAck(p, bytes) where p == pipe:
            unacknowledged = max(0, unacknowledged - Int(bytes))
        case let .pipeClosed(p, code) where p == pipe:
            if code == .rateLimited { throw Failure("the relay closed the pipe: the transfer went over its byte rate") }
            throw PeerClosed()
        default:
            // Deliveries meant for other commands stay unacknowledged; the relay sends them again later.
            break
        }
        return true
    }

    func readExactly(_ buffer: UnsafeMutableRawBufferPointer, idle: Double) throws {
        var done = 0
        while done < buffer.count {
            if incoming.isEmpty {
                guard try pump(timeout: idle) else { throw Failure("the peer sent nothing for \(Int(idle)) s") }
                continue
            }
            let head = incoming[0]
            let n = min(head.count - headOffset, buffer.count - done)
            head.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: source[headOffset..<headOffset + n]))
            }
            done += n
            headOffset += n
            if headOffset == head.count { incoming.removeFirst(); headOffset = 0 }
        }
        consumedSinceAck += buffer.count
        if consumedSinceAck >= Self.acknowledgeEvery {
            try session.post(.pipeAck(pipe: pipe, bytes: UInt32(consumedSinceAck)))
            consumedSinceAck = 0
        }
    }

    func writeAll(_ buffer: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < buffer.count {
            let n = min(Self.pieceSize, buffer.count - offset)
            while unacknowledged + n > Self.window {
                guard try pump(timeout: FileTransferTiming.idleTimeout) else {
                    throw Failure("the peer acknowledged nothing for \(Int(FileTransferTiming.idleTimeout)) s")
                }
            }
            // Stay under the announced rate: never more than rate × elapsed bytes.
            let due = Double(sent + n) / (bytesPerSecond * Self.paceFraction) - (monotonicSeconds() - started)
            if due > 0 { usleep(UInt32(min(due, 1) * 1_000_000)) }
            try session.postPipeData(pipe: pipe, UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + n]))
            unacknowledged += n
            sent += n
            offset += n
        }
    }

    /// Leaves the pipe (best effort: the relay also closes it when the session ends).
    func close() {
        _ = try? session.request(.closePipe(pipe: pipe))
    }
}
