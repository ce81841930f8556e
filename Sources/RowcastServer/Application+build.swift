import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import RowcastCore
import RowcastWire
import ServiceLifecycle

/// Composes the server in one place, for `rowcast serve`, `rowcast demo` and the tests:
/// the routes, the broadcaster, the capture service that feeds it, and any other
/// `services` (the demo's writer). `onServerRunning` gets the port once the server
/// listens. Run it with ``RowcastApplication/runUntilSignalled()``, or with
/// HummingbirdTesting in tests.
package func buildApplication(
    options: ServerOptions,
    source: any CaptureSource,
    services: [any Service] = [],
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in },
    window: OpenedWindowLog? = nil,
    snapshots: (any SnapshotSource)? = nil,
    logger: Logger
) -> RowcastApplication {
    let broadcaster = Broadcaster(
        options: options, origin: window?.origin ?? source.origin, metrics: ServerMetrics(replication: options.slot != nil),
        log: window?.log, restored: window?.restored ?? [], lostBefore: window?.lostBefore,
        onLogFailure: { line in logger.error("\(line); the slot now trails the resume window again, which holds back the database's WAL for the window's age (fix: free the disk and restart serve)") },
        onDivergence: { line in logger.warning("\(line)") },
        catalog: source.state, onRulesDropped: { line in logger.warning("\(line)") }
    )
    if let snapshots {
        broadcaster.snapshots.withLock {
            $0 = SnapshotRunner(
                source: snapshots, capture: source.state, mode: source.mode, limits: options.snapshots, logger: logger,
                requestRead: { source.requestRead() }
            )
        }
    }
    let limits = ConnectionLimits(
        total: options.maxConnections, perAddress: options.maxConnectionsPerAddress, metrics: broadcaster.metrics, logger: logger
    )
    let router = makeRouter(options: options, source: source, broadcaster: broadcaster, limits: limits)
    let app = Application(
        router: router,
        server: .rowcast(
            webSocketRouter: router,
            configuration: .init(
                maxFrameSize: options.maxClientFrameSize,
                autoPing: options.webSocketPingInterval.map { .enabled(timePeriod: $0) } ?? .disabled
            ),
            idleTimeout: options.idleTimeout, limits: limits
        ),
        configuration: .init(address: .hostname(options.host, port: options.port), serverName: "rowcast", backlog: options.listenBacklog),
        services: [CaptureService(source: source, sink: broadcaster)] + services,
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? options.port) },
        logger: logger
    )
    return RowcastApplication(app: app, broadcaster: broadcaster)
}

/// The composed server: a Hummingbird application (so tests drive it with
/// HummingbirdTesting) that knows the order its parts must stop in.
package struct RowcastApplication: ApplicationProtocol {
    package typealias Composed = Application<RouterResponder<RowcastRequestContext>>
    let app: Composed
    let broadcaster: Broadcaster

    package var responder: Composed.Responder { get async throws { try await app.responder } }
    package var server: HTTPServerBuilder { app.server }
    package var eventLoopGroup: any EventLoopGroup { app.eventLoopGroup }
    package var configuration: ApplicationConfiguration { app.configuration }
    package var logger: Logger { app.logger }
    package var services: [any Service] { app.services }
    package var processesRunBeforeServerStart: [@Sendable () async throws -> Void] { app.processesRunBeforeServerStart }
    package func onServerRunning(_ channel: any Channel) async { await app.onServerRunning(channel) }

    /// Runs until SIGINT or SIGTERM, then stops in the order that protects clients and
    /// the acknowledgement: clients first (each WebSocket session writes what was
    /// queued, then closes with 1001 and its last cursor; SSE streams end; up to 5 s),
    /// then the HTTP server, then the other services, and last the capture, which
    /// confirms to the slot what the resume window let go (Docs/architecture.md, "The
    /// acknowledgement"). A connection that never drains cannot hold this for ever:
    /// past 30 s what remains is cancelled, and the capture still confirms as it stops.
    package func runUntilSignalled() async throws {
        // A group stops its services in reverse: ClientShutdownService before the app.
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: self), .init(service: ClientShutdownService(broadcaster: broadcaster, waitForClients: .seconds(5), eventLoop: eventLoopGroup.any()))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        configuration.maximumGracefulShutdownDuration = .seconds(30)
        try await ServiceGroup(configuration: configuration).run()
    }
}

/// The routes: the page and `/healthz` for anyone; `/ws`, `/events`, `/status` and
/// `/metrics` behind the credentials check, and `/socket.io/`, whose CONNECT checks
/// them. Every route checks `Host` first.
func makeRouter(options: ServerOptions, source: any CaptureSource, broadcaster: Broadcaster, limits: ConnectionLimits) -> Router<RowcastRequestContext> {
    let metrics = broadcaster.metrics ?? ServerMetrics(replication: options.slot != nil)
    let router = Router(context: RowcastRequestContext.self)
    let guardian = RequestGuard(listening: options.host, extraHosts: options.allowedHosts, origins: options.allowedOrigins)
    // First: every request takes its address's turn, also one refused for its Host.
    let addressPace = AddressPace(perSecond: options.requestsPerSecondPerAddress)
    broadcaster.whenClosing { addressPace.shutDown() }
    router.add(middleware: AddressPaceMiddleware(pace: addressPace, metrics: broadcaster.metrics))
    router.add(middleware: HostCheckMiddleware(guardian: guardian))
    router.add(middleware: RequestBodyDeadline(timeout: options.idleTimeout, maxSize: options.maxClientFrameSize))
    let page = ByteBuffer(bytes: PackageResources.index_html)
    let socketIO = SocketIOServer(
        broadcaster: broadcaster, mode: source.mode, capture: source.state, auth: options.auth, settings: options.socketIO,
        maxPayload: options.maxClientFrameSize, stalledClientGrace: options.stalledClientGrace,
        messagesPerSecond: options.clientMessagesPerSecond, addressPace: addressPace, bodyTimeout: options.idleTimeout,
        logger: Logger(label: "rowcast.socket.io")
    )

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

    let authenticated = router.group().add(middleware: AuthMiddleware(authenticator: options.auth))
    authenticated.get("/events") { request, context in
        try guardian.checkOrigin(request)
        return try ServerSentEvents.response(
            for: request, access: context.access, broadcaster: broadcaster, capture: source.state, heartbeat: options.serverSentEventsHeartbeat,
            channel: context.channel, stalledClientGrace: options.stalledClientGrace, addressPace: addressPace,
            cors: corsHeaders(for: request)
        )
    }
    authenticated.get("/status") { _, context in
        try context.access.requireWhole("/status")
        return Response(
            status: .ok,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: StatusReport.json(source: source, broadcaster: broadcaster, socketIO: socketIO, connections: limits, slot: options.slot)))
        )
    }
    authenticated.get("/metrics") { _, context in
        try context.access.requireWhole("/metrics")
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: metrics.render(source: source, window: broadcaster.windowStats)))
        )
    }
    router.ws("/ws", shouldUpgrade: { request, _ in
        try guardian.checkOrigin(request)
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
            stalledClientGrace: options.stalledClientGrace, messagesPerSecond: options.clientMessagesPerSecond, addressPace: addressPace,
            logger: context.logger
        )
        try await session.run(inbound: inbound, outbound: outbound)
    }
    addSocketIO(socketIO, to: router, guardian: guardian)
    return router
}

/// `/socket.io/`: Engine.IO's long-polling (`GET`, `POST`, and `OPTIONS` for a
/// preflight) and its WebSocket. Credentials are checked by the Socket.IO CONNECT (the
/// client's `auth` payload, or the handshake's `?token=`), not per request.
private func addSocketIO(_ socketIO: SocketIOServer, to router: Router<RowcastRequestContext>, guardian: RequestGuard) {
    let upgrade = WebSocketUpgradeMiddleware<RowcastRequestContext> { _, _ in .upgrade([:]) } onUpgrade: { inbound, outbound, context in
        try await socketIO.serveWebSocket(
            request: context.request, inbound: inbound, outbound: outbound, channel: context.requestContext.channel
        )
    }
    let polling: @Sendable (Request, RowcastRequestContext) async throws -> Response = { request, context in
        try guardian.checkOrigin(request)
        if request.method == .get, request.headers[.upgrade]?.lowercased() == "websocket" {
            return try await upgrade.handle(request, context: context) { _, _ in Response(status: .ok) }
        }
        return try await socketIO.respond(to: request, channel: context.channel, cors: corsHeaders(for: request))
    }
    router.get("/socket.io", use: polling)
    router.post("/socket.io", use: polling)
    router.on("/socket.io", method: .options) { request, _ in
        try guardian.checkOrigin(request)
        var headers = corsHeaders(for: request)
        headers[.accessControlAllowMethods] = "GET, POST, OPTIONS"
        if let wanted = request.headers[.accessControlRequestHeaders] { headers[.accessControlAllowHeaders] = wanted }
        headers[.accessControlMaxAge] = "86400"
        return Response(status: .noContent, headers: headers)
    }
}

/// A page on another origin reads long-poll answers and an EventSource's stream only
/// with these (its origin was allowed by ``RequestGuard/checkOrigin(_:)`` first).
private func corsHeaders(for request: Request) -> HTTPFields {
    guard let origin = request.headers[.origin] else { return [:] }
    return [.accessControlAllowOrigin: origin, .accessControlAllowCredentials: "true", .vary: "Origin"]
}

extension ClientAccess {
    /// `/status` and `/metrics` count the records and clients of every table: a
    /// credential limited to some tables would learn of the others' activity there.
    func requireWhole(_ route: String) throws(HTTPError) {
        guard tables != nil else { return }
        throw HTTPError(.forbidden, message: "\(route) counts every table's records; it needs a credential without a tables claim (the operator's --token, or a JWT without tables)")
    }
}

/// Authenticates every request of a route group and puts what it may see in the
/// context; without valid credentials the answer is 401 with `WWW-Authenticate`.
struct AuthMiddleware: RouterMiddleware {
    let authenticator: ClientAuthenticator

    func handle(_ request: Request, context: RowcastRequestContext, next: (Request, RowcastRequestContext) async throws -> Response) async throws -> Response {
        var context = context
        context.access = try await authenticator.authenticate(request)
        return try await next(request, context)
    }
}
