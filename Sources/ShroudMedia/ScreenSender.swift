import ShroudCrypto
import ShroudWire

/// The sharer's pipeline after capture (issue 6, item 1): one picture → `SimulcastEncoder` (the
/// top layer and a 360p layer) → SFrame per frame with the provider's current key → packets of
/// each layer's stream (stream base + layer, keyframe flag and layer in the routing header).
/// Feedback from the relay goes the other way: a keyframe request makes that layer's next frame a
/// keyframe; a receiver report adapts that layer's bitrate (`BitrateController`).
///
/// One SFrame sender serves every layer: its counter is unique across them, so no nonce repeats
/// under the key, and a watcher moved between layers sees one increasing counter sequence.
/// Not thread-safe: the capture thread owns it; feedback is queued to that thread by the caller.
public final class ScreenSender {
    public struct Statistics: Equatable, Sendable {
        public init() {}
        public var captures = 0
        public var packets = 0
        public var keyframeRequests = 0
        /// Keyframe requests for a stream that is not ours.
        public var foreignRequests = 0
        public var receiverReports = 0
        public var bitrateChanges = 0
        /// Datagrams from the relay that did not parse, or that a sharer does not expect.
        public var malformed = 0
    }

    public let streamBase: UInt32
    public let encoder: SimulcastEncoder
    public private(set) var statistics = Statistics()
    private let keys: MediaKeyProvider
    private var sframe: SFrameSender?
    private var packetizers: [UInt8: MediaPacketizer] = [:]
    private var frameNumbers: [UInt8: UInt32] = [:]

    /// - Parameters:
    ///   - streamBase: the first of the 8 stream ids the relay assigned (`roomJoined.streamID`);
    ///     layer L goes out as `streamBase + L`.
    public init(top: VideoQuality, fps: Int, streamBase: UInt32, keys: MediaKeyProvider, threads: Int = 1) throws {
        guard streamBase <= UInt32.max - UInt32(MediaPacket.maxLayer) else {
            throw MediaError.codec("stream base \(streamBase) leaves no room for the layers")
        }
        self.streamBase = streamBase
        self.keys = keys
        encoder = try SimulcastEncoder(top: top, fps: fps, threads: threads) { streamBase + UInt32($0) }
        for layer in encoder.layers {
            packetizers[layer.layer] = try MediaPacketizer(streamID: layer.streamID)
            frameNumbers[layer.layer] = 0
        }
    }

    /// Encodes, seals and packetizes one capture; returns the datagrams to send, layer by layer.
    public func datagrams(for capture: BorrowedScreenFrame) throws -> [[UInt8]] {
        try packets(try encoder.encode(capture))
    }

    public func datagrams(for picture: I420Frame) throws -> [[UInt8]] {
        try packets(try encoder.encode(picture))
    }

    private func packets(_ frames: [SimulcastEncoder.LayerFrame]) throws -> [[UInt8]] {
        statistics.captures += 1
        guard let (keyID, baseKey) = keys.currentSendKey() else { throw MediaError.codec("no screen key to send with yet") }
        if let sframe {
            if sframe.keyID != keyID { try sframe.rotate(keyID: keyID, baseKey: baseKey) }
        } else {
            sframe = try SFrameSender(keyID: keyID, baseKey: baseKey)
        }
        guard let sframe else { throw MediaError.codec("no screen key to send with yet") }
        var out: [[UInt8]] = []
        for frame in frames {
            guard var packetizer = packetizers[frame.layer], let number = frameNumbers[frame.layer] else { continue }
            let sealed = try sframe.seal(frame.frame.data)
            let packets = try packetizer.packetize(frame: sealed, frameNumber: number, isKeyframe: frame.frame.isKeyframe,
                                                   layer: frame.layer)
            packetizers[frame.layer] = packetizer
            frameNumbers[frame.layer] = number &+ 1
            for packet in packets { out.append(packet.serialized()) }
        }
        statistics.packets += out.count
        return out
    }

    /// One datagram from the relay: a keyframe request or a receiver report about one of our
    /// streams. Anything else is counted as malformed and dropped (a sharer receives no media).
    public func feedback(_ datagram: [UInt8], now: Duration) {
        guard let parsed = try? MediaDatagram(parsing: datagram) else { statistics.malformed += 1; return }
        switch parsed {
        case let .keyframeRequest(request):
            if encoder.keyframeRequested(streamID: request.streamID) {
                statistics.keyframeRequests += 1
            } else {
                statistics.foreignRequests += 1
            }
        case let .receiverReport(report):
            statistics.receiverReports += 1
            let jitter = Duration.microseconds(Int64(report.jitterMicroseconds))
            if (try? encoder.receiverReport(streamID: report.streamID, fractionLost: report.fractionLost, jitter: jitter, now: now)) != nil {
                statistics.bitrateChanges += 1
            }
        case .media, .nack:
            statistics.malformed += 1
        }
    }
}
