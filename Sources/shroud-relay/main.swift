import CShroudIO
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import ShroudNet
import ShroudRelayCore
import ShroudStore

// shroud-relay: the blind relay. Configuration comes from flags, then the environment, then a
// `.env` file in the working directory (DESIGN.md §5). Exit status: 0 after a clean shutdown,
// 1 when the relay cannot run (e.g. the port is taken), 2 on a configuration or usage error.

let relayVersion = "0.1.0"

/// Relay pipe frames are about 1 MiB, and each is copied into a few fresh arrays and buffers on its
/// way through. Served by `mmap` (glibc's default for blocks this size until it adapts), every
/// one cost page faults and the kernel zeroing its pages: a quarter of the relay's CPU per GiB
/// piped (measured with `GLIBC_TUNABLES`, docs/PERFORMANCE.md). Blocks up to `mmapThreshold`
/// come from the heap instead, and up to `trimThreshold` free bytes per heap stay for reuse.
enum RelayMemory {
    static let mmapThreshold: Int32 = 4 << 20
    static let trimThreshold: Int32 = 16 << 20
}
_ = shroud_malloc_keep_large_blocks(RelayMemory.mmapThreshold, RelayMemory.trimThreshold)

let usage = """
    usage: shroud-relay [options]

    Options (each may also be set as an environment variable or in ./.env):
      --host ADDR                   SC_HOST (default 0.0.0.0)
      --port N                      SC_PORT (default 8443; 0 picks a free port)
      --media-port N                SC_MEDIA_PORT (default: the same as --port)
      --database-url URL            SC_DATABASE_URL (default sqlite://./data/shroud.db)
      --tls-cert PATH               SC_TLS_CERT
      --tls-key PATH                SC_TLS_KEY
      --max-connections N           SC_MAX_CONNECTIONS (default 2000)
      --max-connections-per-ip N    SC_MAX_CONNECTIONS_PER_IP (default 10)
      --message-ttl DURATION        SC_MESSAGE_TTL (default 30d; e.g. 3600, 90m, 24h, 30d)
      --ice-stun-url URL            SC_ICE_STUN_URL
      --ice-turn-url URL            SC_ICE_TURN_URL
      --ice-turn-secret SECRET      SC_ICE_TURN_SECRET
      --admin-token TOKEN           SC_ADMIN_TOKEN
      --log-level LEVEL             trace|debug|info|notice|warning|error (default info)
      --frames-per-commit N         frames the relay stores under one SQLite commit (default 512;
                                    1 commits each frame alone, for comparison)
      --version                     print the version and exit
      -h, --help                    print this help and exit
    """

func fail(_ message: String, status: Int32) -> Never {
    FileHandle.standardError.write(Data("shroud-relay: \(message)\n".utf8))
    exit(status)
}

let flagKeys: [String: RelayConfiguration.Key] = Dictionary(uniqueKeysWithValues: RelayConfiguration.Key.allCases.map {
    ("--" + $0.rawValue.dropFirst(3).lowercased().replacingOccurrences(of: "_", with: "-"), $0)
})
    .merging(["--tls-cert": .tlsCert, "--tls-key": .tlsKey], uniquingKeysWith: { $1 })

var flags: [RelayConfiguration.Key: String] = [:]
var logLevel = Logger.Level.info
var framesPerCommit = RelaySessionDriver.defaultFramesPerCommit
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    let (name, inlineValue): (String, String?) = {
        if let eq = argument.firstIndex(of: "="), argument.hasPrefix("--") {
            return (String(argument[..<eq]), String(argument[argument.index(after: eq)...]))
        }
        return (argument, nil)
    }()
    switch name {
    case "-h", "--help":
        print(usage)
        exit(0)
    case "--version":
        print("shroud-relay \(relayVersion)")
        exit(0)
    case "--frames-per-commit":
        guard let text = inlineValue ?? arguments.popFirst(), let value = Int(text), value >= 1 else {
            fail("--frames-per-commit needs a positive integer", status: 2)
        }
        framesPerCommit = value
    case "--log-level":
        guard let text = inlineValue ?? arguments.popFirst(), let level = Logger.Level(rawValue: text) else {
            fail("--log-level needs one of trace, debug, info, notice, warning, error", status: 2)
        }
        logLevel = level
    default:
        guard let key = flagKeys[name] else { fail("unknown option \(argument) (see --help)", status: 2) }
        guard let value = inlineValue ?? arguments.popFirst() else { fail("\(name) needs a value", status: 2) }
        flags[key] = value
    }
}

let dotEnvText: String?
do {
    let path = FileManager.default.currentDirectoryPath + "/.env"
    dotEnvText = FileManager.default.fileExists(atPath: path) ? try String(contentsOfFile: path, encoding: .utf8) : nil
} catch {
    fail("cannot read .env: \(error.localizedDescription)", status: 2)
}

let configuration: RelayConfiguration
do {
    configuration = try RelayConfiguration.resolve(flags: flags, environment: ProcessInfo.processInfo.environment, dotEnv: dotEnvText)
} catch {
    fail("\(error)", status: 2)
}

let chosenLogLevel = logLevel
// TLS: the certificate and key are read once, at start; a bad file is a configuration error.
// (Renewed certificates take effect on restart: docs/OPERATIONS.md, TLS.)
var tlsContext: NIOSSLContext?
if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
    do {
        tlsContext = try RelayTLS.serverContext(certificatePath: certificate, keyPath: key)
    } catch {
        fail("\(error)", status: 2)
    }
}
let serverTLS = tlsContext

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = chosenLogLevel
    return handler
}
let logger = Logger(label: "shroud-relay")

// Two event-loop threads: one per core on the machines the relay targets (a Raspberry Pi has four,
// but the relay's work per message is small; more threads mostly cost memory).
let group = MultiThreadedEventLoopGroup(numberOfThreads: min(2, System.coreCount))

// Storage: SQLite today; PostgreSQL is accepted by the configuration but not implemented yet.
guard let databasePath = SQLiteRelayStore.path(fromDatabaseURL: configuration.databaseURL) else {
    fail("SC_DATABASE_URL \(configuration.databaseURL): only sqlite://PATH is supported by this version", status: 2)
}
let store: SQLiteRelayStore
let relayBinding: String
do {
    store = try SQLiteRelayStore(path: databasePath)
    var random = SystemRandomNumberGenerator()
    relayBinding = try RelayBinding.loadOrCreate(directory: (databasePath as NSString).deletingLastPathComponent.isEmpty
                                                 ? "." : (databasePath as NSString).deletingLastPathComponent, random: &random)
} catch {
    fail("\(error)", status: 1)
}
// The core runs on one event loop; connections on any loop hop onto it.
let relay = Relay(store: store, relayBinding: relayBinding, limits: RelayLimits(configuration: configuration),
                  random: SystemRandomNumberGenerator())
let sessions = RelaySessionDriver(relay: relay, loop: group.next(), logger: logger, framesPerCommit: framesPerCommit)
// The media plane: UDP on SC_MEDIA_PORT (default SC_PORT), its own thread, the rooms shared with
// the session core.
let mediaPlane: MediaPlaneServer
do {
    mediaPlane = try MediaPlaneServer(host: configuration.host, port: configuration.mediaPort, router: relay.media,
                                      deliverToSessions: { batch in sessions.deliverMedia(batch) })
} catch {
    fail("\(error)", status: 1)
}
relay.mediaPort = mediaPlane.port
sessions.setDatagramSender { address, bytes in mediaPlane.send(bytes, to: address) }
mediaPlane.start()
logger.info("storage", metadata: ["database": "\(databasePath)", "relay": "\(relayBinding)"])

let systemd = SystemdNotifier(environment: ProcessInfo.processInfo.environment)
let http = HTTPEndpointServer(
    host: configuration.host, port: configuration.port,
    routes: HTTPRoutes(version: relayVersion, configuration: configuration, metricsText: RelayMetricsExporter().render),
    group: group, logger: logger, sessions: sessions, tls: serverTLS,
    onBound: { address in
        logger.info("listening", metadata: [
            "address": "\(address.ipAddress ?? configuration.host)", "port": "\(address.port ?? configuration.port)",
            "media_port": "\(mediaPlane.port)",
            "version": "\(relayVersion)", "tls": "\(serverTLS != nil)",
        ])
        systemd.ready(status: "listening on port \(address.port ?? configuration.port)")
    })
let services = ServiceGroup(configuration: .init(
    services: [.init(service: http, successTerminationBehavior: .gracefullyShutdownGroup,
                     failureTerminationBehavior: .gracefullyShutdownGroup)],
    gracefulShutdownSignals: [.sigterm, .sigint],
    logger: logger))

do {
    try await services.run()
    systemd.stopping()
    mediaPlane.stop()
    try await group.shutdownGracefully()
    logger.info("stopped")
} catch {
    fail("\(error)", status: 1)
}
