import Crypto
import Foundation
import ShroudCrypto
import ShroudWire

/// An identity card: the 128-byte `PublicIdentity.sessionEncoding` (Ed25519 key, X25519 key, and
/// the Ed25519 signature binding them), published so that a contact who knows only the Ed25519 id
/// can learn the X25519 identity key that X3DH and the sealed-sender layer need. The session
/// protocol's `bundle` carries only the Ed25519 key, so the card travels as the encrypted-metadata
/// blob of an *open channel* whose id is derived from the Ed25519 key:
///
///     channel id = SHA-256("shroud/v1/identity-card" ‖ 0x00 ‖ signing key)[0..16]
///     metadata   = BucketPadding(sessionEncoding)   (256 bytes)
///
/// The relay cannot substitute another X25519 key: `PublicIdentity(parsingSessionEncoding:)`
/// checks the binding signature, and the reader checks the Ed25519 key is the contact's.
enum IdentityCard {
    static let channelLabel = Array("shroud/v1/identity-card".utf8)

    static func channel(for signingKey: [UInt8]) throws -> ChannelID {
        try ChannelID(Array(SHA256.hash(data: channelLabel + [0] + signingKey).prefix(ChannelID.size)))
    }

    static func metadata(_ identity: PublicIdentity) throws -> [UInt8] {
        try BucketPadding.pad(identity.sessionEncoding)
    }

    /// Parses a card and checks it belongs to `signingKey`.
    static func parse(_ metadata: [UInt8], expecting signingKey: [UInt8]) throws -> PublicIdentity {
        let identity: PublicIdentity
        do {
            identity = try PublicIdentity(parsingSessionEncoding: try BucketPadding.unpad(metadata))
        } catch {
            throw Failure("the contact's identity card does not parse: \(oneLine(error))")
        }
        guard identity.signingKey == signingKey else {
            throw Failure("the identity card on the relay belongs to another identity: refusing")
        }
        return identity
    }
}
