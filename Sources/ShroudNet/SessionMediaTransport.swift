import Foundation
import NIOCore
import NIOWebSocket
import ShroudWire
import Synchronization

/// The WebSocket fallback for media (docs/PROTOCOL.md §4.7): after `joinRoom` with transport
/// `session`, datagrams travel as `mediaDatagram` frames on the client's authenticated session.
/// The receive thread takes every frame from the connection; media goes to `onDatagram`, anything
/// else to `onOtherFrame` (membership notices, `roomLeft`).
public final class SessionMediaTransport: @unchecked Sendable {
    private let connection: SessionClientConnection
    private let running = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    public init(connection: SessionClientConnection) {
        self.connection = connection
    }

    public func start(onDatagram: @escaping @Sendable ([UInt8]) -> Void,
                      onOtherFrame: @escaping @Sendable (SessionFrame) -> Void = { _ in }) {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Thread { [self] in
            while running.load(ordering: .acquiring) {
                do {
                    let frame = try connection.nextBlocking(timeout: 0.1)
                    if case let .mediaDatagram(datagram) = frame.message { onDatagram(datagram) } else { onOtherFrame(frame) }
                } catch ChannelError.connectTimeout {
                    continue
                } catch {
                    // Closed, or a frame that does not parse: media stops; the caller sees the session end.
                    break
                }
            }
            finished.signal()
        }.start()
    }

    /// Sends one datagram as a `mediaDatagram` frame without waiting for the write.
    public func send(_ datagram: [UInt8]) {
        let channel = connection.channel
        let data = channel.allocator.buffer(bytes: SessionFrame(.mediaDatagram(datagram)).serialize())
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: data), promise: nil)
    }

    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
    }
}
