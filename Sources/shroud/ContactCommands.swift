import ArgumentParser
import Foundation
import ShroudCrypto
import ShroudStore

struct ContactCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contact",
        abstract: "Contacts pinned on first use, and safety numbers to verify them.",
        subcommands: [Add.self, List.self, Verify.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pin NAME to the identity ID (as printed by 'shroud id show').")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "A local name for the contact.") var name: String
        @Argument(help: "The contact's identity id (sid1…).") var id: String
        @Flag(help: "Re-pin NAME to a new ID; the contact must then be verified again before sending.")
        var replace = false

        func run() throws {
            let identityID: IdentityID
            do { identityID = try IdentityID(parsing: id) } catch { throw Failure(oneLine(error)) }
            let store = try ProfileStore(home: global.resolvedHome, create: false)
            let own = try loadPublicIdentity(store)
            guard own.signingKey != identityID.signingKey else { throw Failure("that is this profile's own identity") }
            let book = ContactBook(profile: store)
            let outcome = try book.add(name: name, id: identityID, replace: replace)
            let fields: [String: Any] = ["name": name, "id": identityID.text]
            switch outcome {
            case .added:
                global.output.emit("Added \(name) (\(identityID.text)), unverified: compare safety numbers with 'shroud contact verify \(name)'.",
                                   fields.merging(["verified": false, "trust": ContactTrust.unverified.rawValue, "added": true]) { $1 })
            case .alreadyPresent:
                let contact = try book.contact(named: name)
                global.output.emit("\(name) is already pinned to \(identityID.text).",
                                   fields.merging(["verified": contact?.isVerified ?? false,
                                                   "trust": contact?.trust.rawValue ?? "", "added": false]) { $1 })
            case let .replaced(previous):
                // Loud even in JSON mode: a key change is what an attacker would hope goes unnoticed.
                FileHandle.standardError.write(Data(("WARNING: the identity of \(name) changed from \(previous.text) to \(identityID.text). "
                    + "Nothing will be sent to \(name) until you run 'shroud contact verify \(name)'.\n").utf8))
                global.output.emit("Re-pinned \(name) to \(identityID.text) (changed, unverified).",
                                   fields.merging(["verified": false, "trust": ContactTrust.changed.rawValue,
                                                   "previous_id": previous.text, "added": false]) { $1 })
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List contacts with their ids and whether they are verified.")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let store = try ProfileStore(home: global.resolvedHome, create: false)
            let contacts = try ContactBook(profile: store).all()
            if global.json {
                for contact in contacts {
                    var fields: [String: Any] = ["name": contact.name, "id": contact.id.text, "verified": contact.isVerified,
                                                 "trust": contact.trust.rawValue]
                    if let previous = contact.previousID { fields["previous_id"] = previous.text }
                    global.output.emit(nil, fields)
                }
                return
            }
            guard !contacts.isEmpty else {
                global.output.note("No contacts yet: add one with 'shroud contact add NAME ID'.")
                return
            }
            let width = max(4, contacts.map(\.name.count).max() ?? 0)
            print("NAME".padding(toLength: width, withPad: " ", startingAt: 0) + "  " +
                  "ID".padding(toLength: IdentityID.textLength, withPad: " ", startingAt: 0) + "  STATUS")
            for contact in contacts {
                let status: String
                switch contact.trust {
                case .verified: status = "verified"
                case .unverified: status = "unverified"
                case .changed: status = "CHANGED, unverified"
                }
                print(contact.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + contact.id.text + "  " + status)
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the safety number shared with NAME; once it matches on both devices, mark NAME verified.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The contact to verify.") var name: String
        @Flag(help: "Mark verified without asking (the numbers were compared).") var yes = false

        func run() throws {
            let store = try ProfileStore(home: global.resolvedHome, create: false)
            let own = try loadPublicIdentity(store)
            let book = ContactBook(profile: store)
            guard let contact = try book.contact(named: name) else { throw ContactError.unknown(name: name) }
            let number = SafetyNumber.between(own.id, contact.id)
            if !global.json {
                if let previous = contact.previousID {
                    print("The identity of \(name) changed (was \(previous.text)).")
                }
                print("Safety number with \(name) (\(contact.id.text)):")
                print("")
                let groups = number.split(separator: " ")
                for row in stride(from: 0, to: groups.count, by: 4) {
                    print("    " + groups[row..<min(row + 4, groups.count)].joined(separator: " "))
                }
                print("")
            }
            if !yes {
                guard let answer = Terminal.ask("Do these 60 digits match the ones \(name) sees? [y/N] ") else {
                    throw Failure("no terminal to confirm on: compare the numbers with \(name), then run again with --yes")
                }
                guard ["y", "yes"].contains(answer.trimmingCharacters(in: .whitespaces).lowercased()) else {
                    throw Failure("not verified: \(name) stays \(contact.trust == .changed ? "changed, unverified" : contact.trust.rawValue)")
                }
            }
            try book.markVerified(name: name, id: contact.id)
            global.output.emit("\(name) is verified.", ["name": name, "id": contact.id.text, "safety_number": number,
                                                        "verified": true, "trust": ContactTrust.verified.rawValue])
        }
    }
}
