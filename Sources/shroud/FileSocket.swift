import Foundation

/// A connected TCP socket on blocking system calls with deadlines: the file transfer moves one
/// stream of large frames, so plain `read`/`write` on 1 MiB buffers beats any event loop here.
/// Owns its descriptor and closes it in deinit.
final class StreamSocket {
    let fd: Int32
    /// Large kernel buffers keep the pipe full between the two processes' cipher work.
    static let socketBufferBytes: Int32 = 4 << 20

    init(adopting fd: Int32) {
        self.fd = fd
        var size = Self.socketBufferBytes
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Connects to `HOST:PORT` (an IPv4 address, `[IPv6 address]`, or a name) within `timeout` seconds.
    static func connect(to candidate: String, timeout: Double) throws -> StreamSocket {
        guard let colon = candidate.lastIndex(of: ":"), let port = UInt16(candidate[candidate.index(after: colon)...]), port > 0 else {
            throw Failure("candidate '\(candidate)' is not HOST:PORT")
        }
        var host = String(candidate[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw Failure("cannot resolve '\(host)'")
        }
        defer { freeaddrinfo(result) }
        // A name can resolve to several addresses (IPv6 and IPv4): try each in turn, as a
        // browser would, and report the last failure if none answers.
        var failure = Failure("cannot resolve '\(host)'")
        var next: UnsafeMutablePointer<addrinfo>? = info
        while let address = next {
            do {
                return try connect(to: address.pointee, naming: candidate, timeout: timeout)
            } catch let error as Failure {
                failure = error
            }
            next = address.pointee.ai_next
        }
        throw failure
    }

    /// One resolved address, within `timeout` seconds.
    private static func connect(to address: addrinfo, naming candidate: String, timeout: Double) throws -> StreamSocket {
        let fd = socket(address.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket: \(String(cString: strerror(errno)))") }
        let socket = StreamSocket(adopting: fd)
        if Glibc.connect(fd, address.ai_addr, address.ai_addrlen) != 0 {
            guard errno == EINPROGRESS else { throw Failure("connect \(candidate): \(String(cString: strerror(errno)))") }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&pfd, 1, Int32(timeout * 1000)) == 1 else { throw Failure("connect \(candidate): timed out") }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else { throw Failure("connect \(candidate): \(String(cString: strerror(error)))") }
        }
        socket.setBlocking()
        return socket
    }

    func setBlocking() {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
    }

    /// Waits until the socket is readable; false on timeout.
    func waitReadable(timeout: Double) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, Int32(max(0, timeout) * 1000)) == 1
    }

    /// Fills `buffer` completely, or throws (peer closed, error, or nothing for `idle` seconds).
    func readExactly(_ buffer: UnsafeMutableRawBufferPointer, idle: Double) throws {
        var done = 0
        while done < buffer.count {
            guard waitReadable(timeout: idle) else { throw Failure("the peer sent nothing for \(Int(idle)) s") }
            guard let base = buffer.baseAddress else { return }
            let n = recv(fd, base + done, buffer.count - done, Int32(MSG_WAITALL))
            if n == 0 { throw PeerClosed() }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw Failure("reading from the peer: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    func writeAll(_ buffer: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            guard let base = buffer.baseAddress else { return }
            let n = send(fd, base + done, buffer.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET { throw PeerClosed() }
                throw Failure("writing to the peer: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}

struct PeerClosed: Error, CustomStringConvertible {
    var description: String { "the peer closed the connection" }
}

/// A listening TCP socket on every address, IPv6 and IPv4 (one dual-stack socket; IPv4 alone
/// where the kernel has no IPv6), port chosen by the kernel unless given.
final class StreamListener {
    let fd: Int32
    let port: UInt16
    /// Whether the socket also accepts IPv6 connections (then IPv6 candidates are offered).
    let dualStack: Bool

    init(port requested: UInt16) throws {
        if let (fd, port) = Self.listen(family: AF_INET6, port: requested) {
            (self.fd, self.port, dualStack) = (fd, port, true)
        } else if let (fd, port) = Self.listen(family: AF_INET, port: requested) {
            (self.fd, self.port, dualStack) = (fd, port, false)
        } else {
            throw Failure("cannot listen for the direct connection: \(String(cString: strerror(errno)))")
        }
    }

    /// A bound, listening socket and its port, or nil (errno says why).
    private static func listen(family: Int32, port requested: UInt16) -> (Int32, UInt16)? {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var storage = sockaddr_storage()
        var length: socklen_t
        if family == AF_INET6 {
            // Dual stack: IPv4 peers arrive as ::ffff:a.b.c.d on the same socket.
            var zero: Int32 = 0
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_addr = in6addr_any
            address.sin6_port = requested.bigEndian
            withUnsafeBytes(of: &address) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
        } else {
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = INADDR_ANY
            address.sin_port = requested.bigEndian
            withUnsafeBytes(of: &address) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
        }
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(fd, address, length) == 0 && Glibc.listen(fd, 8) == 0 && getsockname(fd, address, &length) == 0
            }
        }
        guard ok else {
            let saved = errno
            close(fd)
            errno = saved
            return nil
        }
        let port = withUnsafeBytes(of: &storage) { raw in
            family == AF_INET6 ? raw.load(as: sockaddr_in6.self).sin6_port : raw.load(as: sockaddr_in.self).sin_port
        }
        return (fd, UInt16(bigEndian: port))
    }

    deinit { close(fd) }

    /// The next connection within `timeout` seconds, else nil.
    func accept(timeout: Double) -> StreamSocket? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(max(0, timeout) * 1000)) == 1 else { return nil }
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { return nil }
        _ = fcntl(client, F_SETFD, FD_CLOEXEC)
        return StreamSocket(adopting: client)
    }

    /// `ADDRESS:PORT` for every up IPv4 interface, then `[ADDRESS]:PORT` for every up IPv6 address
    /// that is not link-local (those need an interface name the peer does not share); loopback last
    /// (tried in order; at most `FileTransferLimits`' candidate count the client offers, 8).
    func candidates() -> [String] {
        var addresses: [String] = [], addresses6: [String] = []
        var loopback: [String] = [], loopback6: [String] = []
        var list: UnsafeMutablePointer<ifaddrs>?
        if getifaddrs(&list) == 0 {
            var cursor = list
            while let entry = cursor {
                defer { cursor = entry.pointee.ifa_next }
                guard let address = entry.pointee.ifa_addr, entry.pointee.ifa_flags & UInt32(IFF_UP) != 0 else { continue }
                let family = Int32(address.pointee.sa_family)
                guard family == AF_INET || (family == AF_INET6 && dualStack) else { continue }
                if family == AF_INET6 {
                    let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                    let first = withUnsafeBytes(of: bytes) { ($0[0], $0[1]) }
                    if first.0 == 0xfe, first.1 & 0xc0 == 0x80 { continue }  // fe80::/10
                }
                let size = family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
                var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                guard getnameinfo(address, socklen_t(size), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
                let numeric = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let isLoopback = entry.pointee.ifa_flags & UInt32(IFF_LOOPBACK) != 0
                if family == AF_INET6 {
                    let text = "[\(numeric)]:\(port)"
                    if isLoopback { loopback6.append(text) } else { addresses6.append(text) }
                } else {
                    let text = numeric + ":\(port)"
                    if isLoopback { loopback.append(text) } else { addresses.append(text) }
                }
            }
            freeifaddrs(list)
        }
        return Array((addresses + addresses6 + loopback + loopback6).prefix(Self.maximumCandidates))
    }

    /// Candidates offered at most (the offer may hold `FileTransferLimits.maximumCandidates`).
    static let maximumCandidates = 8
}

/// A reliable byte stream between the two ends of a transfer: a direct TCP connection or a relay pipe.
protocol TransferStream: AnyObject {
    /// Fills `buffer` completely, or throws (`PeerClosed`, or nothing for `idle` seconds).
    func readExactly(_ buffer: UnsafeMutableRawBufferPointer, idle: Double) throws
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws
}

extension TransferStream {
    func readExactly(_ count: Int, idle: Double) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try readExactly($0, idle: idle) }
        return bytes
    }

    func writeAll(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try writeAll($0) } }
}

extension StreamSocket: TransferStream {}
