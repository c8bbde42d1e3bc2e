import ArgumentParser
import Foundation
import ShroudCrypto
import ShroudStore
import ShroudWire

struct IdentityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "id",
        abstract: "Your identity, its recovery phrase, and Shamir shares of it.",
        subcommands: [New.self, Restore.self, Show.self, Split.self, Combine.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a new identity and print its 24-word recovery phrase once.")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let store = try ProfileStore(home: global.resolvedHome, create: true)
            guard try store.identity() == nil else { throw ProfileError.identityExists(home: store.home) }
            let passphrase = try Passphrase.read(confirm: true)
            var random = SystemRandom()
            let phrase = RecoveryPhrase.generate(using: &random)
            let identity = try save(phrase, passphrase: passphrase, in: store, random: &random)
            let id = try IdentityID(signingKey: identity.signingKey)
            global.output.emit(nil, ["id": id.text, "public_key": Hex.encode(identity.signingKey), "recovery_phrase": phrase.text])
            guard !global.json else { return }
            print("Identity:   \(id.text)")
            print("Public key: \(Hex.encode(identity.signingKey))")
            print("")
            print("Recovery phrase. Write it down now: it is shown only this once, and it restores this")
            print("identity on any machine with 'shroud id restore'.")
            print("")
            for row in stride(from: 0, to: phrase.words.count, by: 6) {
                let cells = (row..<min(row + 6, phrase.words.count)).map {
                    String("\($0 + 1).".padding(toLength: 4, withPad: " ", startingAt: 0)) + phrase.words[$0].padding(toLength: 9, withPad: " ", startingAt: 0)
                }
                print("  " + cells.joined(separator: " "))
            }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recreate an identity from its recovery phrase, read from standard input.")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let phrase = try RecoveryPhrase(parsing: readStandardInput())
            let store = try ProfileStore(home: global.resolvedHome, create: true)
            guard try store.identity() == nil else { throw ProfileError.identityExists(home: store.home) }
            let passphrase = try Passphrase.read(confirm: true)
            var random = SystemRandom()
            let identity = try save(phrase, passphrase: passphrase, in: store, random: &random)
            let id = try IdentityID(signingKey: identity.signingKey)
            global.output.emit("Restored identity \(id.text)", ["id": id.text, "public_key": Hex.encode(identity.signingKey)])
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print this profile's identity.")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let store = try ProfileStore(home: global.resolvedHome, create: false)
            let identity = try loadPublicIdentity(store)
            let id = try IdentityID(signingKey: identity.signingKey)
            global.output.emit(nil, ["id": id.text, "public_key": Hex.encode(identity.signingKey)])
            guard !global.json else { return }
            print("Identity:   \(id.text)")
            print("Public key: \(Hex.encode(identity.signingKey))")
        }
    }

    struct Split: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Split the recovery secret into Shamir shares, any THRESHOLD of which restore it.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "How many shares to make (2-255).") var shares: Int
        @Option(help: "How many shares are needed to restore (2-shares).") var threshold: Int

        func validate() throws {
            guard shares >= Shamir.minimumThreshold, shares <= Shamir.maximumShares else {
                throw ValidationError("--shares must be between \(Shamir.minimumThreshold) and \(Shamir.maximumShares)")
            }
            guard threshold >= Shamir.minimumThreshold, threshold <= shares else {
                throw ValidationError("--threshold must be between \(Shamir.minimumThreshold) and --shares (\(shares))")
            }
        }

        func run() throws {
            let store = try ProfileStore(home: global.resolvedHome, create: false)
            _ = try loadPublicIdentity(store)
            var random = SystemRandom()
            let secrets = try ProfileVault.unlock(store, passphrase: try Passphrase.read(confirm: false), random: &random)
            defer { secrets.lock() }
            guard let entropy = try secrets.secret(named: ProfileVault.recoveryEntropyName) else {
                throw ProfileError.corrupt("the recovery secret is missing")
            }
            for share in try Shamir.split(secret: entropy, threshold: threshold, shares: shares, random: &random) {
                global.output.emit(share.text, ["share": share.text, "index": share.index, "threshold": share.threshold])
            }
        }
    }

    struct Combine: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read Shamir shares from standard input (one per line) and print the recovery phrase.")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let lines = readStandardInput().split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !lines.isEmpty else { throw Failure("no shares on standard input") }
            let shares = try lines.enumerated().map { index, line in
                do { return try ShamirShare(parsing: line) } catch {
                    throw Failure("share on line \(index + 1): \(oneLine(error))")
                }
            }
            let phrase = try RecoveryPhrase(entropy: try Shamir.combine(shares))
            global.output.emit(phrase.text, ["recovery_phrase": phrase.text])
        }
    }
}

/// Derives the identity from `phrase`, seals the recovery entropy with a new storage key under
/// `passphrase` (ProfileVault), and stores both in one transaction.
private func save(_ phrase: RecoveryPhrase, passphrase: String, in store: ProfileStore,
                  random: inout some RandomSource) throws -> PublicIdentity {
    let keys = try phrase.identity()
    defer { keys.wipe() }
    let sealed = try ProfileVault.sealNew(recoveryEntropy: phrase.entropy, passphrase: passphrase, random: &random)
    let identity = keys.publicIdentity
    try store.createIdentity(
        StoredIdentity(signingKey: identity.signingKey, agreementKey: identity.agreementKey,
                       agreementSignature: identity.agreementSignature, createdAt: Date()),
        sealedSecretName: ProfileVault.sealedSecretName, sealedSecret: sealed.serialized())
    return identity
}

/// The profile's public identity, with its key binding checked.
func loadPublicIdentity(_ store: ProfileStore) throws -> PublicIdentity {
    guard let stored = try store.identity() else { throw ProfileError.noIdentity(home: store.home) }
    do {
        return try PublicIdentity(signingKey: stored.signingKey, agreementKey: stored.agreementKey,
                                  agreementSignature: stored.agreementSignature)
    } catch {
        throw ProfileError.corrupt("the stored identity does not verify: \(oneLine(error))")
    }
}
