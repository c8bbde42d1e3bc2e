import Foundation
import ShroudRelayCore
import ShroudWire

/// The relay's own name in authentication transcripts: `shroud-relay:` followed by 32 hex digits
/// of a random id created on first start and kept in `relay-id` next to the database. A client
/// pins it on first use; a signature made for one relay is then useless to any other relay, which
/// has another id (docs/PROTOCOL.md §1, "Authentication").
public enum RelayBinding {
    public static let fileName = "relay-id"
    public static let prefix = "shroud-relay:"

    /// Reads the id from `directory`, creating it (0600) with `random` bytes if missing.
    public static func loadOrCreate<R: RandomNumberGenerator>(directory: String, random: inout R) throws -> String {
        let path = directory + "/" + fileName
        let files = FileManager.default
        if let data = files.contents(atPath: path) {
            guard let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
                  text.hasPrefix(prefix), text.count == prefix.count + 32,
                  text.dropFirst(prefix.count).allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw RelayStoreError.storage("\(path) is not a relay id (expected \(prefix) and 32 hex digits)")
            }
            return text
        }
        do {
            try files.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw RelayStoreError.storage("cannot create \(directory): \(error.localizedDescription)")
        }
        let id = prefix + Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255, using: &random) })
        guard files.createFile(atPath: path, contents: Data((id + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw RelayStoreError.storage("cannot write \(path)")
        }
        return id
    }
}
