import ShroudTestSupport
import Testing
@testable import ShroudWire

@Suite("Frame assembly")
struct FrameAssemblyTests {
    func frame(_ count: Int, seed: UInt64) -> [UInt8] {
        var random = SplitMix64(seed: seed)
        return (0 ..< count).map { _ in UInt8.random(in: 0 ... 255, using: &random) }
    }

    @Test func packetizerFillsTheBudgetAndNumbersPackets() throws {
        var packetizer = try MediaPacketizer(streamID: 9, firstSequence: 100)
        let small = try packetizer.packetize(frame: [1, 2, 3], frameNumber: 0)
        #expect(small.count == 1 && small[0].sequence == 100 && small[0].isLastFragment)
        let big = try packetizer.packetize(frame: frame(3 * MediaPacket.maxPayloadBytes + 1, seed: 1), frameNumber: 1, isKeyframe: true, layer: 2)
        #expect(big.map(\.sequence) == [101, 102, 103, 104])
        #expect(big.allSatisfy { $0.serialized().count <= MediaPlane.maxDatagramBytes && $0.isKeyframe && $0.layer == 2 && $0.fragmentCount == 4 })
        // Equal-as-possible split: sizes differ by at most one byte.
        #expect(Set(big.map(\.payload.count)).subtracting([MediaPacket.maxPayloadBytes - 295, MediaPacket.maxPayloadBytes - 296]).isEmpty)
        #expect(packetizer.nextSequence == 105)
    }

    @Test func largestFrameAtTheLimitAndOnePast() throws {
        var packetizer = try MediaPacketizer(streamID: 1)
        let largest = frame(MediaPacket.maxFrameBytes, seed: 2)
        let packets = try packetizer.packetize(frame: largest, frameNumber: 0)
        #expect(packets.count == MediaPacket.maxFragmentsPerFrame)
        var assembler = FrameAssembler()
        var result: AssemblyResult = .pending
        for packet in packets.reversed() { result = assembler.insert(packet, now: .zero) }
        #expect(result == .complete(AssembledFrame(streamID: 1, frameNumber: 0, isKeyframe: false, layer: 0,
                                                   sequences: 0 ... 254, bytes: largest)))
        #expect(throws: WireError.self) { try packetizer.packetize(frame: largest + [0], frameNumber: 1) }
        #expect(throws: WireError.self) { try packetizer.packetize(frame: [], frameNumber: 1) }
        #expect(throws: WireError.self) { try MediaPacketizer(streamID: 1, maxPayloadBytes: MediaPacket.maxPayloadBytes + 1) }
        var nearWrap = try MediaPacketizer(streamID: 1, firstSequence: UInt32.max - 1)
        #expect(try nearWrap.packetize(frame: frame(2 * MediaPacket.maxPayloadBytes, seed: 3), frameNumber: 0).count == 2)
        #expect(throws: WireError.self) { try nearWrap.packetize(frame: [1], frameNumber: 1) }
    }

    @Test func framesAssembleFromShuffledDuplicatedPackets() throws {
        var random = SplitMix64(seed: 77)
        var packetizer = try MediaPacketizer(streamID: 3, maxPayloadBytes: 100)
        var frames: [UInt32: [UInt8]] = [:]
        var packets: [MediaPacket] = []
        for number in UInt32(0) ..< 10 {
            let bytes = frame(Int.random(in: 1 ... 700, using: &random), seed: UInt64(number))
            frames[number] = bytes
            packets += try packetizer.packetize(frame: bytes, frameNumber: number)
        }
        packets += packets.filter { _ in Bool.random(using: &random) }
        packets.shuffle(using: &random)
        var assembler = FrameAssembler()
        var completed: [UInt32: [UInt8]] = [:]
        var duplicates = 0
        for packet in packets {
            switch assembler.insert(packet, now: .zero) {
            case let .complete(frame):
                #expect(completed[frame.frameNumber] == nil)
                completed[frame.frameNumber] = frame.bytes
            case .duplicate: duplicates += 1
            case .pending: break
            case .inconsistent, .overLimit: Issue.record("unexpected result for \(packet)")
            }
        }
        #expect(completed == frames)
        #expect(duplicates == packets.count - frames.values.reduce(0) { $0 + ($1.count + 99) / 100 })
        #expect(assembler.framesInProgress == 0 && assembler.bytesInProgress == 0)
    }

    @Test func incompleteFramesTimeOut() throws {
        var packetizer = try MediaPacketizer(streamID: 1, maxPayloadBytes: 10)
        let packets = try packetizer.packetize(frame: frame(30, seed: 4), frameNumber: 5)
        var assembler = FrameAssembler()
        #expect(assembler.insert(packets[0], now: .milliseconds(0)) == .pending)
        #expect(assembler.expire(now: FrameAssembler.Limits.standard.incompleteTimeout - .milliseconds(1)) == [])
        #expect(assembler.expire(now: FrameAssembler.Limits.standard.incompleteTimeout) == [5])
        #expect(assembler.bytesInProgress == 0 && assembler.droppedFrames == 1)
        // The rest of an expired frame is a duplicate, not a new frame.
        #expect(assembler.insert(packets[1], now: .seconds(2)) == .duplicate)
    }

    @Test func framesInProgressLimitDropsTheOldest() throws {
        let limits = FrameAssembler.Limits(maxFramesInProgress: 4, maxBytesInProgress: 1 << 20, incompleteTimeout: .seconds(1), rememberedFinishedFrames: 8)
        var assembler = FrameAssembler(limits: limits)
        var packetizer = try MediaPacketizer(streamID: 1, maxPayloadBytes: 10)
        var seconds: [MediaPacket] = []
        for number in UInt32(0) ..< 5 {
            let packets = try packetizer.packetize(frame: frame(20, seed: UInt64(number)), frameNumber: number)
            #expect(assembler.insert(packets[0], now: .milliseconds(Int(number))) == .pending)
            seconds.append(packets[1])
            #expect(assembler.framesInProgress == min(Int(number) + 1, limits.maxFramesInProgress))
        }
        #expect(assembler.droppedFrames == 1)
        #expect(assembler.insert(seconds[0], now: .milliseconds(10)) == .duplicate) // frame 0 was dropped
        guard case .complete = assembler.insert(seconds[4], now: .milliseconds(10)) else { Issue.record("frame 4 incomplete"); return }
    }

    @Test func bytesInProgressLimit() throws {
        let limits = FrameAssembler.Limits(maxFramesInProgress: 16, maxBytesInProgress: 30, incompleteTimeout: .seconds(1), rememberedFinishedFrames: 8)
        var assembler = FrameAssembler(limits: limits)
        var packetizer = try MediaPacketizer(streamID: 1, maxPayloadBytes: 10)
        let a = try packetizer.packetize(frame: frame(40, seed: 1), frameNumber: 0)
        for packet in a.prefix(3) { #expect(assembler.insert(packet, now: .zero) == .pending) }
        #expect(assembler.bytesInProgress == 30) // at the limit
        // One byte past: the frame cannot fit even alone, so it is dropped.
        #expect(assembler.insert(a[3], now: .zero) == .overLimit)
        #expect(assembler.bytesInProgress == 0)
        // A new frame makes room by dropping older ones.
        let b = try packetizer.packetize(frame: frame(20, seed: 2), frameNumber: 1)
        let c = try packetizer.packetize(frame: frame(30, seed: 3), frameNumber: 2)
        #expect(assembler.insert(b[0], now: .zero) == .pending)
        #expect(assembler.insert(c[0], now: .milliseconds(1)) == .pending)
        #expect(assembler.insert(c[1], now: .milliseconds(1)) == .pending)
        #expect(assembler.bytesInProgress == 30)
        #expect(assembler.insert(c[2], now: .milliseconds(1)) != .overLimit) // drops frame 1
        #expect(assembler.insert(b[1], now: .milliseconds(2)) == .duplicate)
    }

    @Test func inconsistentFragmentsAreRefused() throws {
        var packetizer = try MediaPacketizer(streamID: 1, maxPayloadBytes: 10)
        let packets = try packetizer.packetize(frame: frame(20, seed: 1), frameNumber: 0)
        var assembler = FrameAssembler()
        #expect(assembler.insert(packets[0], now: .zero) == .pending)
        var other = packets[1]
        other.sequence += 5
        #expect(assembler.insert(other, now: .zero) == .inconsistent)
        other = packets[1]
        other.isKeyframe = true
        #expect(assembler.insert(other, now: .zero) == .inconsistent)
        let wrongCount = try MediaPacket(streamID: 1, sequence: 1, frameNumber: 0, fragmentIndex: 1, fragmentCount: 3, payload: [1])
        #expect(assembler.insert(wrongCount, now: .zero) == .inconsistent)
        // A fragment whose implied first sequence is below zero is refused.
        let impossible = try MediaPacket(streamID: 1, sequence: 0, frameNumber: 9, fragmentIndex: 1, fragmentCount: 2, payload: [1])
        #expect(assembler.insert(impossible, now: .zero) == .inconsistent)
    }
}
