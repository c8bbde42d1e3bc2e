import Foundation
import NIOSSL

/// Why TLS could not be set up or a TLS connection failed, in one line.
public struct TLSSetupError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// TLS for the session transport and the HTTP endpoints (swift-nio-ssl, TLS 1.2 and 1.3): the
/// relay's server context from PEM files, and the client's context that verifies the relay.
public enum RelayTLS {
    /// The environment variable naming a PEM file of CA certificates the client trusts in
    /// addition to the system's roots (for a relay with a self-signed or private CA).
    public static let caFileVariable = "SHROUD_CA_FILE"

    /// The relay's context: `certificatePath` holds the certificate chain in PEM, leaf first
    /// (Let's Encrypt's `fullchain.pem`), `keyPath` its private key in PEM. Each problem — a
    /// missing or unreadable file, no certificate in it, a key that is not the certificate's —
    /// is one line naming the file.
    public static func serverContext(certificatePath: String, keyPath: String) throws -> NIOSSLContext {
        try requireReadable(certificatePath, what: "TLS certificate")
        try requireReadable(keyPath, what: "TLS key")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw TLSSetupError("TLS certificate \(certificatePath) is not a PEM certificate (\(error))")
        }
        guard !chain.isEmpty else { throw TLSSetupError("TLS certificate \(certificatePath) holds no PEM certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw TLSSetupError("TLS key \(keyPath) is not an unencrypted PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                     privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("TLS key \(keyPath) does not belong to the certificate \(certificatePath) (\(error))")
        }
    }

    /// The client's context: full verification (chain and host name) against the system's roots
    /// plus the CA certificates in `caFile` (PEM), if given.
    public static func clientContext(caFile: String?) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let caFile {
            try requireReadable(caFile, what: caFileVariable)
            let authorities: [NIOSSLCertificate]
            do {
                authorities = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw TLSSetupError("\(caFileVariable) \(caFile) is not a PEM certificate bundle (\(error))")
            }
            guard !authorities.isEmpty else { throw TLSSetupError("\(caFileVariable) \(caFile) holds no PEM certificate") }
            configuration.additionalTrustRoots = [.certificates(authorities)]
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("cannot set up TLS: \(error)")
        }
    }

    /// A short reason for a failed TLS connection, or nil if `error` is not a TLS failure.
    public static func failureReason(_ error: Error, host: String) -> String? {
        let text = String(describing: error)
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") {
            return "the relay's TLS certificate is not trusted (for a relay with its own CA, set \(caFileVariable) to that CA's PEM file)"
        }
        if error is NIOSSLExtraError, text.contains("hostname") || text.contains("Hostname") {
            return "the relay's TLS certificate is not valid for \(host)"
        }
        if error is NIOSSLError || error is BoringSSLError {
            return "TLS handshake failed (\(text.prefix(200)))"
        }
        return nil
    }

    private static func requireReadable(_ path: String, what: String) throws {
        guard FileManager.default.fileExists(atPath: path) else { throw TLSSetupError("\(what) \(path) does not exist") }
        guard FileManager.default.isReadableFile(atPath: path) else { throw TLSSetupError("\(what) \(path) is not readable") }
    }
}
