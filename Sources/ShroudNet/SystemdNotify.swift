#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tells systemd the service state (`sd_notify` protocol): one datagram to the Unix socket named
/// by `NOTIFY_SOCKET`. Without that variable (not started by systemd with `Type=notify`) it does
/// nothing. A leading `@` names an abstract socket.
public enum SystemdNotify {
    /// The longest socket path `sockaddr_un` holds.
    static let maximumPathLength = 107

    @discardableResult
    public static func send(_ state: String, socketPath: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) }) -> Bool {
        guard let socketPath, !socketPath.isEmpty else { return false }
        var path = Array(socketPath.utf8)
        guard path.count <= maximumPathLength, path[0] == UInt8(ascii: "/") || path[0] == UInt8(ascii: "@") else { return false }
        if path[0] == UInt8(ascii: "@") { path[0] = 0 }
        #if canImport(Glibc)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.enumerated() { raw[index] = byte }
        }
        // The address length counts only the used part of sun_path, which matters for abstract names.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sockaddrPointer, length) }
            }
        }
        return sent == message.count
    }
}
