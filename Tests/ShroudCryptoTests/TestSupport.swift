import ShroudWire
import Foundation
@testable import ShroudCrypto

enum TestResource {
    /// A JSON file from Tests/ShroudCryptoTests/Resources (copied into the bundle as "Resources").
    static func json(_ name: String) throws -> Any {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Resources") else {
            throw CryptoError.invalidInput("test resource \(name).json not found")
        }
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url))
    }

    /// The repository root, for checking committed documents against the code.
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}

extension Array where Element == UInt8 {
    init(hex: String) {
        self = Hex.decode(hex) ?? []
    }
    var hexString: String { Hex.encode(self) }
}

/// Secure bytes from hex, for vectors.
func secure(_ hexText: String) -> SecureBytes { SecureBytes(copying: [UInt8](hex: hexText)) }
