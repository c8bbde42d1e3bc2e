#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd about the relay's state through the `sd_notify` protocol (`Type=notify` units):
/// one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by `NOTIFY_SOCKET`. A name that
/// starts with `@` is in the abstract namespace. Without `NOTIFY_SOCKET` (not run by systemd) every
/// call does nothing, so the relay behaves the same outside systemd.
public struct SystemdNotifier: Sendable {
    /// The longest socket path `sockaddr_un` holds.
    static let maximumPathLength = 107

    public let socketPath: String?

    public init(environment: [String: String]) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
    }

    /// `READY=1`: the listener is bound and the relay serves requests.
    @discardableResult
    public func ready(status: String) -> Bool { send("READY=1\nSTATUS=\(status)\nMAINPID=\(getpid())\n") }

    /// `STOPPING=1`: a graceful shutdown has begun.
    @discardableResult
    public func stopping() -> Bool { send("STOPPING=1\n") }

    /// Sends one notification; false when there is no socket or it could not be reached (systemd
    /// then times out the start and says so, which is the right place for that error).
    @discardableResult
    public func send(_ message: String) -> Bool {
        guard let socketPath, socketPath.utf8.count <= Self.maximumPathLength,
              socketPath.hasPrefix("/") || socketPath.hasPrefix("@") else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in pathBytes.enumerated() { raw[i] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count)
        let sent = message.withCString { text in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, text, strlen(text), Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
        return sent >= 0
    }
}
