import Foundation
import NIOCore
import NIOPosix
import ShroudWire

/// `messages`: pairs of clients, each sender sending sealed direct messages to its recipient at an
/// even share of the offered rate (open loop, with at most `--window` unanswered sends), each
/// recipient acknowledging what it received after every read. One message counts when the sender
/// had its `ok` (persisted), the recipient its delivery, and the recipient's acknowledgement its
/// `ok` (deleted). Latencies run from the send to each of those three events; messages sent during
/// the warm-up are not counted.
///
/// Options: --pairs N (250), --rate MSGS/S offered in total (20000; each sender stays under the
/// relay's 100 requests/s per connection), --seconds S measured (10), --warmup S (2),
/// --window N (100), --size BYTES blob size (256), --rates R,R,… one row per offered rate.
func loadMessages(_ arguments: [String]) throws {
    let options = try Options(arguments, known: ["--pairs", "--rate", "--rates", "--seconds", "--warmup", "--window", "--size"])
    let pairs = max(1, try options.int("--pairs", 250))
    let rates = try options.ints("--rates", [try options.int("--rate", 20_000)])
    let seconds = max(1, try options.double("--seconds", 10))
    let warmup = try options.double("--warmup", 2)
    let window = max(1, try options.int("--window", 100))
    let size = max(16, try options.int("--size", 256))
    _ = raiseFileLimit()

    var table = Table("offered msg/s", "connections", "completed msg/s", "persisted (ok) p50 / p99 ms", "delivered p50 / p99 ms",
                      "acknowledged p50 / p99 ms", "unfinished", "errors", "relay CPU %", "relay CPU µs/msg", "loadgen CPU %", "load average", "relay RSS MiB")
    for rate in rates {
        let relay = try RelayProcess(options: options, maximumConnections: 2 * pairs + 100)
        defer { relay.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        defer { try? group.syncShutdownGracefully() }
        let recorder = MessageRecorder()
        let recipients = try (0..<pairs).map { _ in try LoadIdentity() }
        let perSender = Double(rate) / Double(pairs)
        // Recipients first, so every delivery finds its recipient online.
        let receiving = try connectMany(pairs, firstIndex: 0, concurrency: 100, group: group, port: relay.port) { i in
            (recipients[i], Recipient(recorder: recorder))
        }
        let sending = try connectMany(pairs, firstIndex: pairs, concurrency: 100, group: group, port: relay.port) { i in
            (try LoadIdentity(), Sender(recipient: recipients[i - pairs].key, perSecond: perSender, window: window, size: size, recorder: recorder))
        }
        let failures = receiving.failures + sending.failures
        guard failures == 0 else {
            throw LoadgenError("\(failures) of \(2 * pairs) clients could not connect: \(receiving.firstFailure ?? sending.firstFailure ?? "")")
        }
        recorder.start()
        Thread.sleep(forTimeInterval: warmup)
        let (startNS, relayCPU0, ownCPU0) = (monotonicNanoseconds(), relay.cpuSeconds(), ownCPUSeconds())
        recorder.setWindow(from: startNS, to: startNS + UInt64(seconds * 1e9))
        Thread.sleep(forTimeInterval: seconds)
        let (relayCPU1, ownCPU1) = (relay.cpuSeconds(), ownCPUSeconds())
        let rss = try relay.memory().rssKiB
        recorder.stop()
        // Let what was sent in the window finish.
        Thread.sleep(forTimeInterval: 3)
        closeAll(receiving.channels + sending.channels, group: group)
        let result = recorder.result()
        table.add("\(rate)", "\(2 * pairs)", String(format: "%.0f", Double(result.completed) / seconds),
                  "\(milliseconds(result.persisted.p50)) / \(milliseconds(result.persisted.p99))",
                  "\(milliseconds(result.delivered.p50)) / \(milliseconds(result.delivered.p99))",
                  "\(milliseconds(result.acknowledged.p50)) / \(milliseconds(result.acknowledged.p99))",
                  "\(result.sent - result.completed)", result.errors.isEmpty ? "0" : result.errors.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", "),
                  String(format: "%.0f", 100 * (relayCPU1 - relayCPU0) / seconds),
                  result.completed == 0 ? "–" : String(format: "%.0f", 1e6 * (relayCPU1 - relayCPU0) / Double(result.completed)),
                  String(format: "%.0f", 100 * (ownCPU1 - ownCPU0) / seconds), loadAverage(),
                  String(format: "%.1f", Double(rss) / 1024))
    }
    print("#### Sealed direct messages through the relay (SQLite), \(pairs) sender/recipient pairs, \(size)-byte blobs, \(Int(seconds)) s per row\n")
    print(table.markdown)
}

/// Collects the timings of all clients (any event loop).
private final class MessageRecorder: @unchecked Sendable {
    struct Summary { var p50: UInt64 = 0; var p99: UInt64 = 0 }
    struct Result {
        var sent = 0, completed = 0
        var persisted = Summary(), delivered = Summary(), acknowledged = Summary()
        var errors: [String: Int] = [:]
    }
    private let lock = NSLock()
    private var running = false
    private var from = UInt64.max, to = UInt64.max
    private var sent = 0, completed = 0
    private var persisted: [UInt64] = [], delivered: [UInt64] = [], acknowledged: [UInt64] = []
    private var errors: [String: Int] = [:]

    var isRunning: Bool { lock.withLock { running } }
    func start() { lock.withLock { running = true } }
    func stop() { lock.withLock { running = false } }
    func setWindow(from: UInt64, to: UInt64) { lock.withLock { self.from = from; self.to = to } }

    private func counted(_ sentAt: UInt64) -> Bool { sentAt >= from && sentAt < to }

    func sent(at time: UInt64) { lock.withLock { if counted(time) { sent += 1 } } }
    func error(_ name: String, sentAt: UInt64) { lock.withLock { if counted(sentAt) { errors[name, default: 0] += 1 } } }
    func persisted(sentAt: UInt64, now: UInt64) { lock.withLock { if counted(sentAt) { persisted.append(now - sentAt) } } }
    func delivered(sentAt: UInt64, now: UInt64) { lock.withLock { if counted(sentAt) { delivered.append(now - sentAt) } } }
    func acknowledged(sentAt: [UInt64], now: UInt64) {
        lock.withLock {
            for time in sentAt where counted(time) {
                acknowledged.append(now - time)
                completed += 1
            }
        }
    }
    /// A send skipped because the sender already had `window` unanswered requests.
    func windowFull() { lock.withLock { errors["window full", default: 0] += 1 } }

    func result() -> Result {
        lock.withLock {
            func summary(_ values: [UInt64]) -> Summary {
                let sorted = values.sorted()
                return Summary(p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99))
            }
            return Result(sent: sent, completed: completed, persisted: summary(persisted), delivered: summary(delivered),
                          acknowledged: summary(acknowledged), errors: errors)
        }
    }
}

/// Sends `perSecond` messages to its recipient, paced by a 5 ms timer. Confined to its loop.
private final class Sender: ClientBehavior, @unchecked Sendable {
    private let recipient: IdentityKey
    private let perSecond: Double
    private let window: Int
    private let size: Int
    private let recorder: MessageRecorder
    private var outstanding: [UInt32: UInt64] = [:]
    private var nextRequest: UInt32 = 2
    private var credit = 0.0
    private var lastTick: UInt64 = 0

    init(recipient: IdentityKey, perSecond: Double, window: Int, size: Int, recorder: MessageRecorder) {
        self.recipient = recipient; self.perSecond = perSecond; self.window = window; self.size = size; self.recorder = recorder
    }

    func authenticated(channel: Channel) {
        lastTick = monotonicNanoseconds()
        // Senders start at random phases so the ticks do not line up.
        channel.eventLoop.scheduleRepeatedTask(initialDelay: .microseconds(Int64.random(in: 0..<5000)), delay: .milliseconds(5)) { [self] task in
            guard channel.isActive else { task.cancel(); return }
            tick(channel)
        }
    }

    private func tick(_ channel: Channel) {
        let now = monotonicNanoseconds()
        credit = min(credit + perSecond * Double(now - lastTick) / 1e9, max(1, perSecond * 0.05))
        lastTick = now
        guard recorder.isRunning else { credit = 0; return }
        var wrote = false
        while credit >= 1 {
            credit -= 1
            guard outstanding.count < window else { recorder.windowFull(); continue }
            let sentAt = monotonicNanoseconds()
            var blob = [UInt8](repeating: 0xA5, count: size)
            withUnsafeBytes(of: sentAt.bigEndian) { blob.replaceSubrange(0..<8, with: $0) }
            let request = nextRequest
            nextRequest = nextRequest == .max ? 2 : nextRequest + 1
            outstanding[request] = sentAt
            recorder.sent(at: sentAt)
            write(SessionFrame(requestID: request, .sendDirect(recipient: recipient, blob: blob)), on: channel, flush: false)
            wrote = true
        }
        if wrote { channel.flush() }
    }

    func received(_ frame: SessionFrame, channel: Channel) {
        guard let sentAt = outstanding.removeValue(forKey: frame.requestID) else { return }
        switch frame.message {
        case .ok: recorder.persisted(sentAt: sentAt, now: monotonicNanoseconds())
        case let .error(code, _): recorder.error("\(code)", sentAt: sentAt)
        default: recorder.error("unexpected reply", sentAt: sentAt)
        }
    }
}

/// Acknowledges, after each read, every delivery that read brought. Confined to its loop.
private final class Recipient: ClientBehavior, @unchecked Sendable {
    private let recorder: MessageRecorder
    private var unacknowledged: [(MessageID, UInt64)] = []
    private var acknowledging: [UInt32: [UInt64]] = [:]
    private var nextRequest: UInt32 = 2

    init(recorder: MessageRecorder) { self.recorder = recorder }

    func authenticated(channel: Channel) {}

    func received(_ frame: SessionFrame, channel: Channel) {
        switch frame.message {
        case let .directDelivery(id, _, blob):
            guard blob.count >= 8 else { return }
            let sentAt = blob.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            recorder.delivered(sentAt: sentAt, now: monotonicNanoseconds())
            unacknowledged.append((id, sentAt))
        case .ok:
            if let times = acknowledging.removeValue(forKey: frame.requestID) { recorder.acknowledged(sentAt: times, now: monotonicNanoseconds()) }
        case let .error(code, _):
            for time in acknowledging.removeValue(forKey: frame.requestID) ?? [] { recorder.error("ack \(code)", sentAt: time) }
        default:
            break
        }
    }

    func readComplete(channel: Channel) {
        guard !unacknowledged.isEmpty else { return }
        var wrote = false
        while !unacknowledged.isEmpty {
            let chunk = unacknowledged.prefix(SessionLimits.maximumAcknowledgementsPerFrame)
            unacknowledged.removeFirst(chunk.count)
            let request = nextRequest
            nextRequest = nextRequest == .max ? 2 : nextRequest + 1
            acknowledging[request] = chunk.map(\.1)
            write(SessionFrame(requestID: request, .acknowledgeDirect(chunk.map(\.0))), on: channel, flush: false)
            wrote = true
        }
        if wrote { channel.flush() }
    }
}
