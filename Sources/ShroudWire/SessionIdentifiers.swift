/// Fixed-size byte strings of the session protocol (docs/PROTOCOL.md §1, "Field types").
/// Each type checks its length when built from bytes, so a value that exists always serializes
/// to exactly `size` bytes and no serializer has to trust a caller.
public protocol FixedSizeBytes: Hashable, Sendable, CustomStringConvertible {
    static var size: Int { get }
    static var fieldName: String { get }
    var bytes: [UInt8] { get }
    init(validated bytes: [UInt8])
}

extension FixedSizeBytes {
    /// Builds the value from exactly `size` bytes, or throws `WireError.invalid`.
    public init(_ bytes: [UInt8]) throws {
        guard bytes.count == Self.size else {
            throw WireError.invalid(field: Self.fieldName, reason: "expected \(Self.size) bytes, got \(bytes.count)")
        }
        self.init(validated: bytes)
    }

    init(reading reader: inout ByteReader) throws {
        self.init(validated: try reader.readBytes(Self.size, Self.fieldName))
    }

    /// Short hexadecimal form for logs: the first 8 bytes.
    public var description: String {
        Hex.encode(bytes.prefix(8))
    }
}

extension ByteWriter {
    mutating func write<T: FixedSizeBytes>(_ value: T) { write(bytes: value.bytes) }
}

/// An Ed25519 public key: a client's identity on the relay, and a direct message's recipient.
public struct IdentityKey: FixedSizeBytes {
    public static let size = 32
    public static let fieldName = "identity key"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// An X25519 prekey public key (signed or one-time).
public struct PrekeyPublicKey: FixedSizeBytes {
    public static let size = 32
    public static let fieldName = "prekey"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// An Ed25519 signature (auth answer, signed prekey).
public struct Ed25519Signature: FixedSizeBytes {
    public static let size = 64
    public static let fieldName = "signature"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// A channel's identifier: 16 random bytes chosen by the creating client. It says nothing about
/// the channel; its name lives in the encrypted metadata.
public struct ChannelID: FixedSizeBytes {
    public static let size = 16
    public static let fieldName = "channel id"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// A relay pipe's rendezvous: 16 bytes both ends derive from a secret they share (the file
/// transfer key); knowing it is the right to join the pipe.
public struct PipeID: FixedSizeBytes {
    public static let size = 16
    public static let fieldName = "pipe id"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// A queued message's identifier: 16 random bytes chosen by the relay.
public struct MessageID: FixedSizeBytes {
    public static let size = 16
    public static let fieldName = "message id"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// A channel invite: 16 random bytes chosen by the relay; knowing it is the right to join.
public struct InviteToken: FixedSizeBytes {
    public static let size = 16
    public static let fieldName = "invite token"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// The relay's challenge nonce: 32 random bytes per connection.
public struct ChallengeNonce: FixedSizeBytes {
    public static let size = 32
    public static let fieldName = "nonce"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

extension SessionErrorCode {
    /// In `pipeClosed` only: the other end left the pipe or its session ended (no error).
    public static let pipeEnded = SessionErrorCode(rawValue: 0)
}

/// A media-plane binding token: 16 random bytes chosen by the relay in `roomJoined`. Sent in a
/// bind datagram from the client's UDP address, it ties that address to the room participant.
public struct MediaToken: FixedSizeBytes {
    public static let size = 16
    public static let fieldName = "media token"
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}
