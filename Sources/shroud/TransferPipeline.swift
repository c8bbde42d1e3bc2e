import Foundation

/// Two stages of a file transfer on two threads, handing each other a fixed set of reused buffers
/// (no allocation per chunk; memory is `slots × slotSize` whatever the file size). The sender reads
/// and seals ahead of its socket writes; the receiver receives and decrypts while the other thread
/// hashes and writes. On two cores that runs the two halves of the per-byte work side by side.
///
/// The producer takes a free slot (`acquire`), fills it and `publish`es an item; the consumer takes
/// items in order (`next`) and `release`s their slots. Either side may `fail` with an error: the
/// other one then stops at its next call (the producer's `acquire` throws it, the consumer's `next`
/// returns nil). `finish` ends production normally; the consumer still drains what was published,
/// so chunks verified before an interruption still reach the disk (a later resume starts after them).
final class TransferPipeline: @unchecked Sendable {
    /// Buffers in flight: enough to keep both threads busy when one briefly stalls, small enough
    /// that memory stays a few MiB.
    static let slotCount = 4

    struct Item: Sendable {
        let slot: Int
        /// The bytes of the slot that matter (a frame, or a chunk's plaintext).
        let range: Range<Int>
        let chunk: UInt64
    }

    private let slots: [UnsafeMutableRawBufferPointer]
    // All state below is guarded by `condition`.
    private let condition = NSCondition()
    private var free: [Int]
    private var published: [Item] = []
    private var finished = false
    private var failure: (any Error)?

    init(slotSize: Int, slots count: Int = TransferPipeline.slotCount) {
        slots = (0..<count).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: slotSize, alignment: 64) }
        free = Array(0..<count)
    }

    deinit { for slot in slots { slot.deallocate() } }

    func buffer(_ slot: Int) -> UnsafeMutableRawBufferPointer { slots[slot] }

    /// A free slot for the producer; waits while all are in flight; throws the consumer's error.
    func acquire() throws -> Int {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty, failure == nil { condition.wait() }
        if let failure { throw failure }
        return free.removeLast()
    }

    func publish(_ item: Item) {
        condition.lock()
        published.append(item)
        condition.signal()
        condition.unlock()
    }

    /// No more items; the consumer drains what was published.
    func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// Stops both sides; the first error is kept.
    func fail(_ error: any Error) {
        condition.lock()
        if failure == nil { failure = error }
        condition.broadcast()
        condition.unlock()
    }

    /// The next published item, waiting for it; nil once production finished and everything was
    /// taken, or after a failure.
    func next() -> Item? {
        condition.lock()
        defer { condition.unlock() }
        while published.isEmpty, !finished, failure == nil { condition.wait() }
        guard failure == nil, !published.isEmpty else { return nil }
        return published.removeFirst()
    }

    func release(_ slot: Int) {
        condition.lock()
        free.append(slot)
        condition.signal()
        condition.unlock()
    }

    /// The error a side failed with, if any.
    var error: (any Error)? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }
}

/// A body running on a thread of its own; `join` waits for it to return.
final class WorkerThread: Sendable {
    private let done = DispatchSemaphore(value: 0)

    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let thread = Thread {
            body()
            done.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Waits until the body returned; later calls return at once.
    func join() {
        done.wait()
        done.signal()
    }
}

/// A value handed between threads whose hand-over is ordered by `WorkerThread.join` (or a
/// `TransferPipeline`): only one thread touches it at a time.
final class Handover<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
