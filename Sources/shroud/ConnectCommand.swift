import ArgumentParser
import Foundation
import ShroudCrypto
import ShroudStore

/// `shroud connect`: one authenticated round with the relay — pins its binding on first use,
/// remembers it as the profile's server, and publishes prekeys when the relay runs low, so that
/// contacts can start sessions with this profile while it is offline.
struct ConnectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Authenticate to the relay and publish prekeys when it holds few; print what was done.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        var random = SystemRandom()
        let profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
        defer { profile.lock() }
        let address = try global.relayAddress(profile.store)
        let session = try RelaySession(address: address, identity: profile.identity, profile: profile.store)
        defer { session.close() }
        let prekeys = SQLitePreKeyStore(profile: profile.store, secrets: profile.secrets)
        let outcome = try PrekeyMaintenance.topUp(session: session, identity: profile.identity, profile: profile.store,
                                                  prekeys: prekeys, now: nowSeconds(), random: &random)
        global.output.emit("Connected to \(address.text) (\(session.binding)): published \(outcome.oneTimePublished) one-time prekeys"
                           + (outcome.signedPublished ? " and a signed prekey" : "") + "; the relay holds \(outcome.relayCount).",
                           ["server": address.text, "relay": session.binding, "one_time_published": outcome.oneTimePublished,
                            "signed_published": outcome.signedPublished, "one_time_prekeys": Int(outcome.relayCount)])
    }
}
