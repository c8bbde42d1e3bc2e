import Foundation
import ShroudTestSupport
import Testing

/// Runs the real binaries built by `swift build` (tools/test exports SHROUD_BIN_DIR; otherwise
/// the default debug folder next to this package).
enum Binaries {
    static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["SHROUD_BIN_DIR"], !dir.isEmpty { return dir }
        let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return package.appendingPathComponent(".build/debug").path
    }

    static func path(_ name: String) -> String { directory + "/" + name }

    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }
}

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var lines: [String] { stdout.split(separator: "\n").map(String.init) }

    /// The JSON objects printed in --json mode, one per line.
    var jsonLines: [[String: Any]] {
        lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let command: String
    var description: String { "timed out: \(command)" }
}

/// A temporary directory removed when the value is released.
final class TemporaryDirectory {
    let path: String
    init(_ label: String = "shroud-e2e") {
        path = NSTemporaryDirectory() + "\(label)-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs a command to completion with input on stdin, killing it after `timeout` seconds.
@discardableResult
func run(_ executable: String, _ arguments: [String], stdin: String = "", environment: [String: String] = [:],
         directory: String? = nil, timeout: Double = 60) throws -> RunResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let input = Pipe(), output = Pipe(), errors = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = errors
    try runWithSignalsUnblocked(process)
    input.fileHandleForWriting.write(Data(stdin.utf8))
    try? input.fileHandleForWriting.close()

    // Drain both pipes concurrently so a chatty child never blocks on a full pipe.
    let collected = OutputCollector()
    let group = DispatchGroup()
    for (handle, isError) in [(output.fileHandleForReading, false), (errors.fileHandleForReading, true)] {
        group.enter()
        DispatchQueue.global().async {
            let data = handle.readDataToEndOfFile()
            collected.set(data, isError: isError)
            group.leave()
        }
    }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        throw TimedOut(command: ([executable] + arguments).joined(separator: " "))
    }
    process.waitUntilExit()
    group.wait()
    return RunResult(status: process.terminationStatus, stdout: collected.text(isError: false), stderr: collected.text(isError: true))
}

final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var out = Data(), err = Data()
    func set(_ data: Data, isError: Bool) { lock.lock(); if isError { err = data } else { out = data }; lock.unlock() }
    func text(isError: Bool) -> String { lock.lock(); defer { lock.unlock() }; return String(decoding: isError ? err : out, as: UTF8.self) }
}

/// A long-running process (the relay) whose stderr is watched for a line.
final class BackgroundProcess {
    let process = Process()
    private let errors = Pipe()
    private let collected = LineBuffer()

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        let buffer = collected
        errors.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if !data.isEmpty { buffer.append(data) }
        }
        try runWithSignalsUnblocked(process)
    }

    /// Waits until stderr has a line containing `marker`; returns that line.
    func waitForLine(containing marker: String, timeout: Double = 30) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = collected.lines().first(where: { $0.contains(marker) }) { return line }
            if !process.isRunning { break }
            usleep(20_000)
        }
        throw TimedOut(command: "waiting for '\(marker)' in: \(collected.lines().joined(separator: " | "))")
    }

    var stderrLines: [String] { collected.lines() }

    /// Sends `signal` and waits for the exit status.
    func stop(_ signal: Int32 = SIGTERM, timeout: Double = 15) -> Int32? {
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit(); return nil }
        errors.fileHandleForReading.readabilityHandler = nil
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }
}

final class LineBuffer: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func append(_ more: Data) { lock.lock(); data.append(more); lock.unlock() }
    func lines() -> [String] {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}

/// Starts a long-running command (e.g. `shroud listen`) whose standard output is collected line by
/// line while it runs; standard error is discarded. The caller stops it (SIGTERM or SIGKILL).
func startCollectingOutput(_ executable: String, _ arguments: [String],
                           environment extra: [String: String] = [:]) throws -> (process: Process, lines: LineBuffer) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    let lines = LineBuffer()
    output.fileHandleForReading.readabilityHandler = { handle in
        let data = handle.availableData
        if !data.isEmpty { lines.append(data) }
    }
    try runWithSignalsUnblocked(process)
    return (process, lines)
}

/// Starts `shroud-impair` in front of a relay's media port with the voice tests' impairment
/// (10 % loss, 30 ms jitter, 5 % reordered by 30 ms, seed 7) and returns it with the port it listens
/// on, read from its first output line `{"listening":PORT}`. The caller terminates it.
func startVoiceImpairment(target mediaPort: Int, seconds: Int) throws -> (process: Process, port: Int) {
    let proxy = Process()
    proxy.executableURL = URL(fileURLWithPath: Binaries.path("shroud-impair"))
    proxy.arguments = ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:\(mediaPort)", "--loss", "0.1", "--jitter-ms", "30",
                       "--reorder", "0.05", "--reorder-ms", "30", "--seed", "7", "--duration", "\(seconds)"]
    let output = Pipe()
    proxy.standardOutput = output
    try runWithSignalsUnblocked(proxy)
    var firstLine = Data()
    while !firstLine.contains(UInt8(ascii: "\n")) {
        let chunk = output.fileHandleForReading.availableData
        guard !chunk.isEmpty else { break }
        firstLine += chunk
    }
    let text = String(decoding: firstLine, as: UTF8.self)
    guard let port = Int(text.split(separator: "\n").first.map { $0.filter(\.isNumber) } ?? "") else {
        if proxy.isRunning { proxy.terminate(); proxy.waitUntilExit() }
        throw TimedOut(command: "shroud-impair did not say its port: \(text)")
    }
    return (proxy, port)
}

/// A plain HTTP/1.0 GET over a loopback TCP socket; returns (status line, body).
func httpGet(port: Int, path: String, headers: [String] = []) throws -> (status: String, body: String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TimedOut(command: "socket") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw TimedOut(command: "connect to port \(port)") }
    let request = "GET \(path) HTTP/1.0\r\nHost: localhost\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n"
    _ = request.withCString { send(fd, $0, strlen($0), 0) }
    var response = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        response.append(contentsOf: buffer[0..<n])
    }
    let text = String(decoding: response, as: UTF8.self)
    let parts = text.components(separatedBy: "\r\n\r\n")
    return (parts.first?.components(separatedBy: "\r\n").first ?? "", parts.dropFirst().joined(separator: "\r\n\r\n"))
}
