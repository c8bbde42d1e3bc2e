/// The pairwise session layer over the stores: start a session from a bundle, encrypt to a remote
/// identity, decrypt what arrives. Every store write happens after the message authenticated, so a
/// forged or replayed message changes nothing (DESIGN.md §1.5): no session, no consumed prekey, no
/// pinned identity.
public enum SessionCipher {
    /// Runs X3DH against a fetched bundle and makes the new session current for that identity.
    public static func startSession(with bundle: PreKeyBundle, identities: some IdentityStore, sessions: some SessionStore,
                                    random: inout some RandomSource) throws {
        try identities.acceptOnFirstUse(bundle.identity)
        let session = try Session.initiate(identity: identities.localIdentity, bundle: bundle, random: &random)
        var record = try sessions.sessionRecord(for: bundle.identity.signingKey) ?? SessionRecord()
        record.adopt(session)
        try sessions.storeSessionRecord(record, for: bundle.identity.signingKey)
    }

    public static func hasSession(with remoteSigningKey: [UInt8], sessions: some SessionStore) throws -> Bool {
        try sessions.sessionRecord(for: remoteSigningKey)?.current != nil
    }

    public static func encrypt(_ plaintext: [UInt8], to remoteSigningKey: [UInt8], identities: some IdentityStore,
                               sessions: some SessionStore) throws -> SessionMessage {
        guard var record = try sessions.sessionRecord(for: remoteSigningKey), var session = record.current else {
            throw CryptoError.invalidInput("no session with identity \(identityHexPrefix(remoteSigningKey)); fetch its prekey bundle first")
        }
        if case .blocked = try identities.check(session.remoteIdentity) {
            throw SessionTrustError.blocked(signingKey: remoteSigningKey)
        }
        let message = try session.encrypt(plaintext, localIdentity: identities.localIdentity.publicIdentity)
        record.current = session
        try sessions.storeSessionRecord(record, for: remoteSigningKey)
        return message
    }

    /// Decrypts a session message. `remoteSigningKey` names the sender for ratchet messages (an
    /// initial message names its sender itself; if both are given they must agree).
    public static func decrypt(_ message: SessionMessage, from remoteSigningKey: [UInt8]?, identities: some IdentityStore,
                               preKeys: some PreKeyStore, signedPreKeys: some SignedPreKeyStore,
                               sessions: some SessionStore, now: UInt64,
                               random: inout some RandomSource) throws -> (sender: PublicIdentity, plaintext: [UInt8]) {
        switch message {
        case let .ratchet(ratchetMessage):
            guard let remoteSigningKey, var record = try sessions.sessionRecord(for: remoteSigningKey) else {
                throw CryptoError.authenticationFailed("no session with the sender")
            }
            let plaintext = try record.decrypt(ratchetMessage, now: now, random: &random)
            guard let sender = record.current?.remoteIdentity ?? record.archived.first?.remoteIdentity else {
                throw CryptoError.authenticationFailed("no session with the sender")
            }
            if case .blocked = try identities.check(sender) { throw SessionTrustError.blocked(signingKey: sender.signingKey) }
            try sessions.storeSessionRecord(record, for: remoteSigningKey)
            return (sender, plaintext)

        case let .preKey(initial):
            let sender = initial.initiator
            if let remoteSigningKey, remoteSigningKey != sender.signingKey {
                throw CryptoError.authenticationFailed("initial message names another sender than the one it came from")
            }
            switch try identities.check(sender) {
            case .changed: throw SessionTrustError.identityChanged(signingKey: sender.signingKey)
            case .blocked: throw SessionTrustError.blocked(signingKey: sender.signingKey)
            case .unknown, .trusted: break
            }
            var record = try sessions.sessionRecord(for: sender.signingKey) ?? SessionRecord()
            // A repeated initial message (sent before our reply arrived) belongs to a session we have.
            let known = (record.current.map { [$0] } ?? []) + record.archived
            if known.contains(where: { $0.baseKey == initial.ephemeralKey }) {
                let plaintext = try record.decrypt(initial.message, now: now, random: &random)
                try sessions.storeSessionRecord(record, for: sender.signingKey)
                return (sender, plaintext)
            }
            guard let signedPreKey = try signedPreKeys.signedPreKey(id: initial.signedPreKeyId) else {
                throw CryptoError.invalidInput("initial message names unknown or expired signed prekey \(initial.signedPreKeyId)")
            }
            var oneTimePreKey: OneTimePreKey?
            if let id = initial.oneTimePreKeyId {
                guard let key = try preKeys.oneTimePreKey(id: id) else {
                    throw CryptoError.invalidInput("initial message names one-time prekey \(id), which is unknown or already used")
                }
                oneTimePreKey = key
            }
            let (session, plaintext) = try Session.respond(identity: identities.localIdentity, message: initial,
                                                           signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey,
                                                           now: now, random: &random)
            // Authenticated: now commit everything.
            record.adopt(session)
            try sessions.storeSessionRecord(record, for: sender.signingKey)
            if let id = initial.oneTimePreKeyId { try preKeys.removeOneTimePreKey(id: id) }
            if case .unknown = try identities.check(sender) { try identities.pin(sender, decision: .pinnedOnFirstUse) }
            return (sender, plaintext)
        }
    }
}
