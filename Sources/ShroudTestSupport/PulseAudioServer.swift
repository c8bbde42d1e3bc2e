import Foundation
import ShroudMedia

/// A private PulseAudio daemon with one null sink (`vsink`, 48 kHz) whose clock paces playback
/// and capture like a sound card. Its socket and state live in a temporary directory; the daemon
/// is terminated in `stop()` or at the latest in `deinit`.
public final class PulseAudioServer {
    public let directory: URL
    /// The native-protocol socket, for an ALSA `type pulse` PCM's `server "unix:…"` field.
    public let socketPath: String
    private let process: Process

    public init() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("shroud-pulse-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        socketPath = directory.appendingPathComponent("native").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/pulseaudio")
        process.arguments = [
            "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
            "--log-target=stderr",
            "-L", "module-native-protocol-unix auth-anonymous=1 socket=\(socketPath)",
            "-L", "module-null-sink sink_name=vsink rate=48000",
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["XDG_RUNTIME_DIR"] = directory.path
        environment["HOME"] = directory.path
        process.environment = environment
        let logPath = directory.appendingPathComponent("pulse.log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = FileHandle.nullDevice
        try runWithSignalsUnblocked(process)
        self.process = process
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: socketPath) {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw MediaError.device("PulseAudio did not start (log: \(logPath))")
            }
            usleep(20_000)
        }
    }

    /// ALSA configuration text for a capture PCM on `vsink.monitor` and a playback PCM on `vsink`.
    public func alsaConfiguration(capture: String, playback: String) -> String {
        """
        pcm.\(capture) { type pulse server "unix:\(socketPath)" device "vsink.monitor" }
        pcm.\(playback) { type pulse server "unix:\(socketPath)" device "vsink" }
        """
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }
}
