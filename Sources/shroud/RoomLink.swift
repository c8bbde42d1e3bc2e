import Foundation
import ShroudCrypto
import ShroudMedia
import ShroudNet
import ShroudStore
import ShroudWire

/// The media link of `voice join`, `screen share` and `screen watch`: the room joined with its
/// purpose and layer cap, UDP bound to the relay's media plane (or the WebSocket when UDP does not
/// get through, or when asked), datagrams in through `onDatagram` on the transport's thread, out
/// through `send`.
final class RoomLink: @unchecked Sendable {
    let streamBase: UInt32
    let transportName: String
    private let udp: UDPMediaTransport?
    private let fallback: SessionMediaTransport?
    private let client: MessagingClient
    private let channel: ChannelID
    private var left = false

    init(client: MessagingClient, channel local: LocalChannel, purpose: RoomPurpose, maxLayer: UInt8, overWebSocket: Bool,
         mediaPort portOverride: UInt16?, out: Output, onDatagram: @escaping @Sendable ([UInt8]) -> Void) throws {
        self.client = client
        channel = local.id
        var overSession = overWebSocket
        var (token, stream, mediaPort) = try Self.join(client, local, purpose: purpose, maxLayer: maxLayer, overSession: overSession)
        var udp: UDPMediaTransport?
        if !overSession {
            let transport = try UDPMediaTransport(relayHost: try resolveIPAddress(client.session.address.host),
                                                  relayPort: portOverride ?? mediaPort, token: token)
            transport.start(onDatagram: onDatagram)
            if transport.waitUntilBound(timeout: VoiceCommand.udpBindTimeout) {
                udp = transport
            } else {
                transport.stop()
                out.note("UDP to the relay did not get through; media goes over the WebSocket.")
                _ = try? client.session.request(.leaveRoom(channel: local.id))
                overSession = true
                (token, stream, mediaPort) = try Self.join(client, local, purpose: purpose, maxLayer: maxLayer, overSession: true)
            }
        }
        self.udp = udp
        if overSession {
            fallback = SessionMediaTransport(connection: client.session.mediaConnection)
            client.session.onMediaDatagram = onDatagram
        } else {
            fallback = nil
        }
        streamBase = stream
        transportName = overSession ? "websocket" : "udp"
    }

    func send(_ datagram: [UInt8]) {
        if let udp { udp.send(datagram) } else { fallback?.send(datagram) }
    }

    var roundTrip: Duration? { udp?.roundTrip }

    /// Stops the transport and, unless the relay already took us out, leaves the room.
    func leave(politely: Bool) {
        guard !left else { return }
        left = true
        udp?.stop()
        client.session.onMediaDatagram = nil
        if politely { _ = try? client.session.request(.leaveRoom(channel: channel)) }
    }

    private static func join(_ client: MessagingClient, _ local: LocalChannel, purpose: RoomPurpose, maxLayer: UInt8,
                             overSession: Bool) throws -> (MediaToken, UInt32, UInt16) {
        let reply: RelayMessage
        do {
            reply = try client.session.request(.joinRoom(channel: local.id, transport: overSession ? .session : .datagram,
                                                         purpose: purpose, maxLayer: maxLayer))
        } catch let refusal as RelayRefusal where refusal.code == .notMember || refusal.code == .notFound {
            throw Failure("you are not a member of channel \"\(local.name)\" (you left or were removed)")
        } catch let refusal as RelayRefusal {
            let what = switch purpose {
            case .voice: "call"
            case .screenShare: "screen share"
            case .screenWatch: "screen watch"
            }
            throw Failure("the relay refused the \(what): \(refusal.text)")
        }
        guard case let .roomJoined(channel, token, stream, _, port) = reply, channel == local.id else {
            throw Failure("the relay answered joinRoom with something else")
        }
        return (token, stream, port)
    }
}

/// Ends a run on SIGINT/SIGTERM through `stop` (the run then leaves the room cleanly).
final class StopSignals {
    private let sources: [DispatchSourceSignal]
    init(_ stop: @escaping @Sendable () -> Void) {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let queue = DispatchQueue(label: "shroud.screen.signals")
        sources = [SIGINT, SIGTERM].map { DispatchSource.makeSignalSource(signal: $0, queue: queue) }
        for source in sources {
            source.setEventHandler(handler: stop)
            source.resume()
        }
    }
    func cancel() { for source in sources { source.cancel() } }
}

func milliseconds(_ duration: Duration) -> Double {
    (Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) * 1e-15)
}
