import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import RowcastCore
import ServiceLifecycle

/// What `rowcast serve` needs beyond the capture source.
public struct ServerOptions: Sendable {
    public var host: String
    public var port: Int
    /// Frames that may wait for one client before it is cut off.
    public var clientQueueLimit: Int
    /// Bytes of frames that may wait for one client before it is cut off.
    public var clientQueueBytes: Int = 64 << 20
    /// How long a cut-off or expired client's connection may take to close before it
    /// is closed outright (its peer may never read the close frame).
    public var stalledClientGrace: Duration = .seconds(5)
    /// The resume window's byte budget.
    public var resumeWindowBytes: Int = 64 << 20
    /// The largest frame a client may send.
    public var maxClientFrameSize: Int
    /// Recent records kept so that clients can resume with `since`.
    public var resumeWindow: Int
    /// Replication: the slot, reported by `/status`.
    public var slot: String?
    /// How often `/events` sends a comment line on a quiet stream.
    public var heartbeatSeconds: Double = 15
    /// Browser origins allowed on `/ws` and `/events` besides the page's own (`*`
    /// allows any). Requests without an `Origin` header (not from a browser) pass.
    public var allowedOrigins: Set<String> = []
    /// Host names requests may name besides the address rowcast listens on and
    /// loopback names (a proxy's public name, say).
    public var allowedHosts: [String] = []
    /// Who may connect to `/ws`, `/events`, `/status` and `/metrics`, and what they see.
    public var auth: ClientAuthenticator = .disabled

    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        clientQueueLimit: Int = 4096,
        maxClientFrameSize: Int = 64 * 1024,
        resumeWindow: Int = 1000,
        slot: String? = nil
    ) {
        self.host = host
        self.port = port
        self.clientQueueLimit = clientQueueLimit
        self.maxClientFrameSize = maxClientFrameSize
        self.resumeWindow = resumeWindow
        self.slot = slot
    }
}

/// Composes the server: routes, the broadcaster, and the capture service that feeds it,
/// plus any other `services` to run alongside; `onServerRunning` gets the port once
/// the server listens. The tests run this; `rowcast serve` runs ``serve(options:source:onServerRunning:logger:)``,
/// which orders the same parts for a graceful shutdown.
public func buildApplication(
    options: ServerOptions,
    source: any CaptureSource,
    services: [any Service] = [],
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in },
    logger: Logger
) -> some ApplicationProtocol {
    let broadcaster = Broadcaster(options: options, origin: source.origin)
    return makeApplication(
        options: options, source: source, broadcaster: broadcaster,
        services: [CaptureService(source: source, sink: broadcaster), ClientShutdownService(broadcaster: broadcaster)] + services,
        onServerRunning: onServerRunning, logger: logger
    )
}

/// Runs capture, server and any other `services` until SIGINT or SIGTERM, then shuts
/// down in this order: clients first (WebSocket sessions close with 1001 and their
/// last cursor, SSE streams end), then the HTTP server, then the capture, which
/// confirms to the slot what was delivered.
public func serve(
    options: ServerOptions,
    source: any CaptureSource,
    services: [any Service] = [],
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in },
    logger: Logger
) async throws {
    let broadcaster = Broadcaster(options: options, origin: source.origin)
    let app = makeApplication(
        options: options, source: source, broadcaster: broadcaster, services: [],
        onServerRunning: onServerRunning, logger: logger
    )
    // ServiceGroup shuts services down in reverse order, each after the one before ended.
    var configuration = ServiceGroupConfiguration(
        services: [.init(service: CaptureService(source: source, sink: broadcaster))]
            + services.map { .init(service: $0) }
            + [
                .init(service: app),
                .init(service: ClientShutdownService(broadcaster: broadcaster, waitForClients: .seconds(5))),
            ],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger
    )
    // A connection that never drains (a stalled client) must not hold shutdown for
    // ever: past this, services are cancelled, and the capture still confirms what it
    // delivered as it stops.
    configuration.maximumGracefulShutdownDuration = .seconds(30)
    try await ServiceGroup(configuration: configuration).run()
}

extension Broadcaster {
    convenience init(options: ServerOptions, origin: Cursor?) {
        self.init(
            queueLimit: options.clientQueueLimit, queueBytes: options.clientQueueBytes,
            resumeWindow: options.resumeWindow, resumeWindowBytes: options.resumeWindowBytes, origin: origin,
            metrics: ServerMetrics(replication: options.slot != nil)
        )
    }
}

func makeApplication(
    options: ServerOptions,
    source: any CaptureSource,
    broadcaster: Broadcaster,
    services: [any Service],
    onServerRunning: @escaping @Sendable (Int) async -> Void,
    logger: Logger
) -> some ApplicationProtocol {
    let metrics = broadcaster.metrics ?? ServerMetrics(replication: options.slot != nil)
    let router = Router(context: RowcastRequestContext.self)
    let guardian = RequestGuard(listening: options.host, extraHosts: options.allowedHosts, origins: options.allowedOrigins)
    router.add(middleware: HostCheckMiddleware(guardian: guardian))
    let page = ByteBuffer(bytes: PackageResources.index_html)

    router.get("/") { _, _ in
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: page))
    }
    router.get("/healthz") { _, _ in
        let connected = source.state.isConnected
        let body = connected ? "ok\n" : "capture disconnected: \(source.state.lastError ?? "starting")\n"
        return Response(
            status: connected ? .ok : .serviceUnavailable,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: body))
        )
    }
    @Sendable func checkOrigin(_ request: Request) throws {
        try guardian.checkOrigin(request)
    }
    router.get("/events") { request, context in
        try checkOrigin(request)
        let access = try await options.auth.authenticate(request)
        return try ServerSentEvents.response(
            for: request, access: access, broadcaster: broadcaster, capture: source.state, heartbeatSeconds: options.heartbeatSeconds,
            channel: context.channel, stalledClientGrace: options.stalledClientGrace
        )
    }
    router.get("/status") { request, _ in
        _ = try await options.auth.authenticate(request)
        return Response(
            status: .ok,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: StatusReport.json(source: source, broadcaster: broadcaster, slot: options.slot)))
        )
    }
    router.get("/metrics") { request, _ in
        _ = try await options.auth.authenticate(request)
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: metrics.render(source: source)))
        )
    }
    router.ws("/ws", shouldUpgrade: { request, _ in
        try checkOrigin(request)
        return .upgrade([:])
    }) { inbound, outbound, context in
        // A refused upgrade can only be a bare 400 in this stack, and browsers hide the
        // status of a failed handshake anyway: so credentials are checked after the
        // upgrade, and a failure closes with 1008 and a reason a page can act on.
        let access: ClientAccess
        do throws(AuthFailure) {
            access = try await options.auth.authenticate(context.request)
        } catch {
            try await outbound.close(.policyViolation, reason: closeReason("unauthorized: " + error.message))
            return
        }
        let session = WebSocketSession(
            broadcaster: broadcaster, mode: source.mode, access: access,
            capture: source.state, maxFrameSize: options.maxClientFrameSize, channel: context.requestContext.channel,
            stalledClientGrace: options.stalledClientGrace, logger: context.logger
        )
        try await session.run(inbound: inbound, outbound: outbound)
    }

    return Application(
        router: router,
        server: .http1WebSocketUpgrade(
            webSocketRouter: router,
            configuration: .init(ws: .init(maxFrameSize: options.maxClientFrameSize))
        ),
        configuration: .init(address: .hostname(options.host, port: options.port), serverName: "rowcast"),
        services: services,
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? options.port) },
        logger: logger
    )
}

/// A close frame's reason is at most 123 bytes of UTF-8.
func closeReason(_ text: String) -> String {
    var reason = Substring(text)
    while reason.utf8.count > 123 { reason = reason.dropLast() }
    return String(reason)
}
