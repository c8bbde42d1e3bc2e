import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing
@testable import ShroudNet

/// The client's own masked framing (used for relay pipe data) is what SwiftNIO's encoder would
/// send and what its decoder reads back, for every length class and any split into parts.
@Suite struct WebSocketClientFramingTests {
    /// NIO's encoder output for the same frame and key.
    func nioEncoded(_ payload: [UInt8], key: WebSocketMaskingKey) throws -> [UInt8] {
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        let allocator = ByteBufferAllocator()
        try channel.writeOutbound(WebSocketFrame(fin: true, opcode: .binary, maskKey: key, data: allocator.buffer(bytes: payload)))
        var bytes: [UInt8] = []
        while let part = try channel.readOutbound(as: ByteBuffer.self) { bytes += Array(part.readableBytesView) }
        _ = try channel.finish()
        return bytes
    }

    @Test func sameBytesAsNIOsEncoderForEveryLengthClassAndSplit() throws {
        var generator = SystemRandomNumberGenerator()
        let allocator = ByteBufferAllocator()
        for length in Array(0...40) + [125, 126, 127, 65535, 65536, (1 << 20) + 29] {
            let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let key = WebSocketMaskingKey.random(using: &generator)
            let expected = try nioEncoded(payload, key: key)
            // Whole, and split at offsets that are and are not multiples of four.
            for cut in Set([0, 1, 3, 4, 5, 26, length / 2, length].filter { $0 <= length }) {
                let frame = payload.withUnsafeBytes { raw in
                    WebSocketClientFraming.maskedBinaryFrame([UnsafeRawBufferPointer(rebasing: raw[0..<cut]), UnsafeRawBufferPointer(rebasing: raw[cut...])],
                                                           key: Array(key), allocator: allocator)
                }
                #expect(Array(frame.readableBytesView) == expected, "length \(length) cut \(cut)")
            }
        }
    }

    @Test func nioDecoderReadsItBack() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 21)))
        let payload = (0..<100_003).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let frame = payload.withUnsafeBytes {
            WebSocketClientFraming.maskedBinaryFrame([$0], key: [9, 8, 7, 6], allocator: ByteBufferAllocator())
        }
        try channel.writeInbound(frame)
        let decoded = try #require(try channel.readInbound(as: WebSocketFrame.self))
        #expect(decoded.opcode == .binary && decoded.fin)
        #expect(decoded.maskKey == WebSocketMaskingKey([9, 8, 7, 6]))
        #expect(decoded.unmaskedBytes == payload)
        _ = try channel.finish()
    }
}
