import ShroudMedia
import ShroudRelayCore
import ShroudWire

/// Media-plane building blocks on one core: what the relay does per forwarded datagram (routing
/// header parse, retransmission-cache store, NACK answer) and what a client does per packet
/// (packetize, assemble, voice receiver). Options: --seconds S per measurement (default 1).
func benchMediaPlane(_ arguments: [String]) throws {
    var seconds = 1.0
    if arguments.first == "--seconds", let value = Double(arguments[safe: 1] ?? ""), value > 0 { seconds = value }
    var table = Table("operation", "size", "operations/s", "ns/op")
    var sink = 0

    /// Runs `body` in batches of `batch` until `seconds` have passed; returns operations/s.
    func measure(batch: Int, _ body: () throws -> Void) rethrows -> Double {
        var operations = 0
        let start = now()
        var elapsed = 0.0
        repeat {
            for _ in 0 ..< batch { try body() }
            operations += batch
            elapsed = now() - start
        } while elapsed < seconds
        return Double(operations) / elapsed
    }

    func add(_ name: String, _ size: String, _ rate: Double) {
        table.add(name, size, fmt(rate, 0), fmt(1e9 / rate, 0))
    }

    let payload = [UInt8](repeating: 0xA5, count: MediaPacket.maxPayloadBytes)
    let datagram = try MediaPacket(streamID: 7, sequence: 1, frameNumber: 1, payload: payload).serialized()

    add("routing header, in place", "1200 B", try datagram.withUnsafeBytes { raw in
        try measure(batch: 10_000) { sink &+= Int(try MediaRoutingHeader(parsing: raw).sequence) }
    })
    add("MediaPacket parse (copies payload)", "1200 B", try measure(batch: 10_000) {
        sink &+= try MediaPacket(parsing: datagram).payload.count
    })
    var cache = try RetransmissionCache()
    var sequence: UInt32 = 0
    add("retransmission cache store", "1200 B", try measure(batch: 10_000) {
        try cache.store(sequence: sequence, datagram: datagram)
        sequence &+= 1
    })
    let nack = try NackPacket(streamID: 7, missing: (0 ..< 17).map { sequence &- 100 &+ $0 })
    add("NACK answer, 17 sequences", "1200 B each", measure(batch: 1_000) {
        sink &+= cache.answer(nack).resend.count
    })

    let frame = [UInt8](repeating: 0x5A, count: 10 * MediaPacket.maxPayloadBytes)
    var packetizer = try MediaPacketizer(streamID: 9)
    var frameNumber: UInt32 = 0
    add("packetize frame (10 packets)", "11840 B", try measure(batch: 100) {
        sink &+= try packetizer.packetize(frame: frame, frameNumber: frameNumber).count
        frameNumber &+= 1
    })
    var assemblerPacketizer = try MediaPacketizer(streamID: 9)
    let packets = try (0 ..< UInt32(64)).map { try assemblerPacketizer.packetize(frame: frame, frameNumber: $0) }
    var assembler = FrameAssembler()
    var round: UInt32 = 0
    add("assemble frame (10 packets, reversed)", "11840 B", measure(batch: 64) {
        // Fresh frame numbers each round so the assembler never sees duplicates.
        for var packet in packets[Int(round % 64)].reversed() {
            packet.frameNumber = round
            packet.sequence = round &* 10 &+ UInt32(packet.fragmentIndex)
            if case let .complete(f) = assembler.insert(packet, now: .zero) { sink &+= f.bytes.count }
        }
        round &+= 1
    })

    // Voice receiver: one 80-byte packet per 20 ms of virtual time, 1 % loss, then a poll.
    var receiver = VoiceReceiver()
    let opus = [UInt8](repeating: 1, count: 80)
    var voiceFrame: UInt32 = 0
    add("voice receiver handle + poll", "80 B", measure(batch: 1_000) {
        let at = Duration.milliseconds(20) * Int(voiceFrame)
        if voiceFrame % 100 != 50 { receiver.handle(sequence: voiceFrame, frameNumber: voiceFrame, payload: opus, now: at) }
        sink &+= receiver.poll(now: at).count
        voiceFrame &+= 1
    })

    table.print(title: "Media plane, one core (\(fmt(seconds)) s per row)")
    if sink == 42 { print("") }
}
