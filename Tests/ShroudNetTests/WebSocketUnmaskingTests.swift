import NIOCore
import NIOWebSocket
import Testing
@testable import ShroudNet

/// The relay's word-at-a-time unmasking gives exactly SwiftNIO's byte-by-byte result.
@Suite struct WebSocketUnmaskingTests {
    @Test func matchesNIOForEveryLengthAndOffset() {
        var generator = SystemRandomNumberGenerator()
        let allocator = ByteBufferAllocator()
        for length in Array(0...40) + [1 << 20, (1 << 20) + 3] {
            let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let key = WebSocketMaskingKey.random(using: &generator)
            var masked = allocator.buffer(bytes: payload)
            masked.webSocketMask(key)
            let frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: key, data: masked)
            #expect(frame.unmaskedBytes == Array(frame.unmaskedData.readableBytesView), "length \(length)")
            #expect(frame.unmaskedBytes == payload, "length \(length)")
            // A buffer whose readable bytes start mid-way (the decoder's slices do).
            var shifted = allocator.buffer(bytes: [0xAA, 0xBB, 0xCC] + Array(masked.readableBytesView))
            shifted.moveReaderIndex(forwardBy: 3)
            #expect(WebSocketFrame(fin: true, opcode: .binary, maskKey: key, data: shifted).unmaskedBytes == payload)
        }
        let plain = WebSocketFrame(fin: true, opcode: .binary, data: allocator.buffer(bytes: [1, 2, 3]))
        #expect(plain.unmaskedBytes == [1, 2, 3])
    }
}
