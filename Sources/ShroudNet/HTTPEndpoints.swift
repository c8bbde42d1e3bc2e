import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ServiceLifecycle
import ShroudRelayCore

/// Upper bound on an HTTP request head plus body the relay reads before answering; the endpoints
/// here take no body, so anything larger is a client error.
public let maxHTTPRequestBytes = 16 * 1024

/// Serves the relay's HTTP endpoints on SwiftNIO and stops on graceful shutdown (SIGTERM/SIGINT
/// through ServiceLifecycle). The decisions are made by `HTTPRoutes`; this type only moves bytes.
public final class HTTPEndpointServer: Service, Sendable {
    private let host: String
    private let port: Int
    private let routes: HTTPRoutes
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let onBound: @Sendable (SocketAddress) -> Void
    private let sessions: RelaySessionDriver?
    private let tls: NIOSSLContext?

    /// With `tls`, every connection is TLS first (HTTPS and `wss://` on the one port); a client
    /// that does not complete the handshake is closed without an HTTP answer.
    /// With `sessions`, a GET of `/ws` with a WebSocket upgrade becomes a session connection on the
    /// same port; everything else is answered by `routes`.
    public init(host: String, port: Int, routes: HTTPRoutes, group: MultiThreadedEventLoopGroup,
                logger: Logger, sessions: RelaySessionDriver? = nil, tls: NIOSSLContext? = nil, onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }) {
        self.sessions = sessions
        self.tls = tls
        self.host = host
        self.port = port
        self.routes = routes
        self.group = group
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let routes = self.routes
        let logger = self.logger
        let sessions = self.sessions
        let tls = self.tls
        sessions?.start()
        defer { sessions?.stop() }
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    let endpoints = HTTPEndpointHandler(routes: routes, logger: logger, sessions: sessions)
                    var upgrade: NIOHTTPServerUpgradeConfiguration?
                    if let sessions {
                        let upgrader = NIOWebSocketServerUpgrader(
                            maxFrameSize: SessionTransportLimits.maximumMessageSize, automaticErrorHandling: true,
                            shouldUpgrade: { channel, head in
                                let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                                return channel.eventLoop.makeSucceededFuture(path == sessionWebSocketPath ? HTTPHeaders() : nil)
                            },
                            upgradePipelineHandler: { channel, _ in
                                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addSessionHandlers(driver: sessions) }
                            })
                        upgrade = (upgraders: [upgrader], completionHandler: { context in
                            // The HTTP endpoints handler has no business on a WebSocket.
                            context.pipeline.removeHandler(name: HTTPEndpointHandler.name, promise: nil)
                        })
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withServerUpgrade: upgrade, withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(endpoints, name: HTTPEndpointHandler.name)
                }
            }
            .bind(host: host, port: port)
            .get()
        if let address = channel.localAddress { onBound(address) }
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
        // Sessions end before the event loops do (their close callbacks need the relay's loop).
        try? await sessions?.closeAllConnections().get()
    }
}

/// Answers one request at a time on a connection (HTTP/1.1 keep-alive).
final class HTTPEndpointHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    static let name = "shroud-http-endpoints"

    private let routes: HTTPRoutes
    private let logger: Logger
    private let sessions: RelaySessionDriver?
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(routes: HTTPRoutes, logger: Logger, sessions: RelaySessionDriver? = nil) {
        self.routes = routes
        self.logger = logger
        self.sessions = sessions
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(request):
            head = request
            bodyBytes = 0
        case let .body(buffer):
            bodyBytes += buffer.readableBytes
        case .end:
            guard let request = head else { return }
            head = nil
            let response: HTTPRoutes.Response
            let authorization = request.headers.first(name: "Authorization")
            if bodyBytes > maxHTTPRequestBytes {
                response = .init(status: 413, contentType: "application/json", body: #"{"error":"request too large"}"#)
            } else if HTTPRoutes.isAdminRoute(request.uri), let sessions {
                // Statistics live with the relay core on its own loop: fetch them, then answer.
                let routes = self.routes
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                sessions.withRelay { $0.statistics }.hop(to: context.eventLoop).whenComplete { result in
                    let (handler, context) = bound.value
                    let answer = routes.respond(method: request.method.rawValue, path: request.uri, authorization: authorization,
                                                statistics: try? result.get())
                    handler.write(answer, for: request, context: context)
                }
                return
            } else {
                response = routes.respond(method: request.method.rawValue, path: request.uri, authorization: authorization)
            }
            write(response, for: request, context: context)
        }
    }

    private func write(_ response: HTTPRoutes.Response, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: request.version, status: .init(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: response.body.utf8.count)
            buffer.writeString(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("http connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
