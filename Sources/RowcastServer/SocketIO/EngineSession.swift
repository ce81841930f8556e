import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import RowcastCore
import RowcastWire
import Synchronization

/// One Engine.IO session and the Socket.IO socket it carries in the default namespace:
/// the shell that runs ``EngineIOSession``'s rules.
///
/// Everything the session holds lives on one event loop (the one its first request
/// came in on): every event is fed to the state machine there, and its actions are
/// carried out there, timers included, so the session needs no lock. Requests from
/// other loops hop onto it. Every packet for the client, from the CONNECT answer to
/// pings and `update`s, goes through its broadcaster queue, in order: a long-poll takes
/// what is queued; after an upgrade (or from the start, WebSocket only) a
/// ``ChannelFrameWriter`` writes it to the WebSocket, as for `/ws`.
final class EngineSession: Sendable {
    /// The socket in the default namespace, once the client's CONNECT was accepted.
    struct Socket: Sendable {
        let sid: String
        let pid: String
        let access: ClientAccess
    }

    /// What the session holds, on its event loop only.
    struct Held {
        var machine: EngineIOSession
        var timers: [EngineIOSession.Timer: Scheduled<Void>] = [:]
        var socket: Socket?
        /// A CONNECT is being authenticated: another one meanwhile is ignored, so that
        /// one session never joins twice.
        var joining = false
        /// The WebSocket that carries the session, once it does.
        var webSocket: (any Channel)?
        /// When the client's next packet is taken, whichever transport brings it.
        var pace: MessagePace
    }

    let sid: String
    let client: Broadcaster.Registration
    let server: SocketIOServer
    /// Where the handshake came from: the address its window scans are charged to.
    let address: ClientAddress
    /// The handshake's credential (`?token=` or `Authorization`), for a CONNECT without one.
    let credential: String?
    let eventLoop: any EventLoop
    /// Whether the session began on a WebSocket (its open packet offers no upgrade).
    private let beganOnWebSocket: Bool
    let held: NIOLoopBoundBox<Held>

    init(sid: String, server: SocketIOServer, address: ClientAddress, credential: String?, eventLoop: any EventLoop, webSocket: (any Channel)?) {
        self.address = address
        self.sid = sid
        self.server = server
        self.credential = credential
        self.eventLoop = eventLoop
        self.beganOnWebSocket = webSocket != nil
        let machine = EngineIOSession(settings: server.settings.engine, onWebSocket: webSocket != nil)
        held = .makeBoxSendingValue(
            Held(machine: machine, webSocket: webSocket, pace: MessagePace(perSecond: server.messagesPerSecond)), eventLoop: eventLoop
        )
        let relay = EndRelay()
        client = server.broadcaster.register(
            framing: .socketIO, onEnd: { reason in relay.session?.ended(reason) }, account: ScanAccount(pace: server.addressPace, address: address)
        )
        relay.session = self
    }

    /// Lets the broadcaster's end callback reach the session it belongs to, without
    /// holding it (the session holds the registration that holds the callback).
    private final class EndRelay: Sendable {
        private struct Weak { weak var session: EngineSession? }
        private let target = Mutex(Weak())

        var session: EngineSession? {
            get { target.withLock { $0.session } }
            set { target.withLock { $0.session = newValue } }
        }
    }

    var openPacket: ByteBuffer {
        SocketIOFrame.open(
            sid: sid, upgrades: !beganOnWebSocket, pingInterval: server.settings.pingInterval, pingTimeout: server.settings.pingTimeout,
            maxPayload: server.maxPayload
        )
    }

    // MARK: - The loop

    /// Runs `body` on the session's event loop; nil once the loop is gone (shutdown).
    func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        if eventLoop.inEventLoop { return body() }
        return try? await eventLoop.submit(body).get()
    }

    /// On the loop: one event through the state machine, and its actions carried out.
    func feed(_ event: EngineIOSession.Event) {
        let actions = held.value.machine.handle(event)
        for action in actions { run(action) }
    }

    private func run(_ action: EngineIOSession.Action) {
        switch action {
        case .arm(let timer, let delay):
            held.value.timers[timer]?.cancel()
            held.value.timers[timer] = eventLoop.scheduleTask(in: TimeAmount(delay)) { [self] in
                held.value.timers[timer] = nil
                feed(.timerFired(timer))
            }
        case .disarm(let timer):
            held.value.timers.removeValue(forKey: timer)?.cancel()
        case .sendPing:
            send(SocketIOFrame.ping)
        case .sendPong(let data):
            send(ByteBuffer(string: "3" + data))
        case .releasePoll:
            client.queue.interrupt()
        case .expireCredential:
            server.broadcaster.expire(client.id)
        case .closeWebSocket(let grace):
            held.value.webSocket?.closeUnlessClosed(after: grace)
        case .end(let cause):
            if let why = cause.logLine { server.logger.debug("socket.io session \(sid): \(why); closing it") }
            // The broadcaster holds the subscription, and hands it back for recovery.
            let subscription = server.broadcaster.unregister(client.id)
            server.closed(self, socket: held.value.socket, subscription: subscription)
        }
    }

    /// Charges what the client's replays and `last` matched in the window to its pace
    /// (its address's pace was charged as the scan went).
    func chargeScans() async {
        let examined = client.takeExamined()
        guard examined > 0 else { return }
        _ = await onLoop { [self] in held.value.pace.charge(examined: examined) }
    }

    /// A packet from the client waits its turn (``MessagePace``), on the session's loop.
    /// False once the session ended (before or during the wait): packets read ahead of
    /// their turn are dropped then, so none is handled after the client left and none
    /// holds shutdown.
    func paced() async -> Bool {
        // What its replays matched in the window since (a replay reads on as the client drains) counts too.
        await chargeScans()
        guard let (delay, open) = await onLoop({ [self] in (held.value.pace.wait(now: .now()), !held.value.machine.isClosed) }),
            open, client.endReason == nil
        else { return false }
        guard let delay else { return true }
        server.metrics?.messagesPaced.increment()
        // The server's shutdown ends the wait.
        await server.addressPace.hold(delay, on: eventLoop)
        return await onLoop({ [self] in !held.value.machine.isClosed }) == true && client.endReason == nil
    }

    /// Queued for the client, in order with its updates.
    func send(_ packet: ByteBuffer) {
        server.broadcaster.send(packet, to: client.id)
    }

    /// Starts the heartbeat and the deadline for joining the namespace.
    func start() {
        eventLoop.execute { [self] in feed(.opened) }
    }

    /// Ends the session: its queue finishes (a waiting long-poll answers with Engine.IO's
    /// close, a WebSocket closes), and a joined socket stays recoverable for a while.
    func close(_ cause: EngineIOSession.Cause) async {
        _ = await onLoop { [self] in feed(.close(cause)) }
    }

    /// The broadcaster ended the client (too slow, expired, shutting down); called under
    /// its lock, so this only schedules.
    private func ended(_ reason: Broadcaster.EndReason) {
        let grace = reason.grace(server.stalledClientGrace)
        eventLoop.execute { [self] in feed(.queueEnded(grace: grace)) }
    }

    // MARK: - Long-polling

    enum PollAnswer {
        /// Packets to join with 0x1E.
        case packets([ByteBuffer])
        case refused(String)
    }

    /// The most packets one long-poll answer carries: python-engineio refuses a payload
    /// of more than 16 (`Payload.max_decode_packets`) and drops the connection; the
    /// rest go in the next answer, which the client asks for at once.
    static let packetsPerPoll = 16

    /// A long-poll: waits for packets (a ping comes every pingInterval).
    func poll() async -> PollAnswer {
        let decision = await onLoop { [self] in
            feed(.pollArrived)
            return held.value.machine.pollDecision
        }
        switch decision ?? .wait {
        case .wait: break
        case .noop: return .packets([SocketIOFrame.noop])
        case .refuse(let message): return .refused(message)
        }
        let batch = await client.queue.next(limit: Self.packetsPerPoll)
        _ = await onLoop { [self] in feed(.pollAnswered) }
        guard let batch else {
            await close(.queueEnded)
            return .packets(finalPackets())
        }
        let bytes = batch.reduce(0) { $0 + $1.bytes.readableBytes }
        // Out of the queue: the answer is written at once (what waits to be taken is
        // what the byte budget bounds).
        client.wrote(bytes: bytes)
        // Cut off or expired while this batch waited: what is queued is dropped, as on `/ws`.
        if let reason = client.endReason, reason != .shuttingDown {
            await close(.queueEnded)
            return .packets(finalPackets())
        }
        return .packets(batch.isEmpty ? [SocketIOFrame.noop] : batch.map(\.bytes))
    }

    /// What the client gets once its queue ended: on an expired credential, an `error`
    /// and the namespace's disconnect (the page reconnects with a fresh token); then
    /// Engine.IO's close, after which `socket.io-client` reconnects and recovers.
    private func finalPackets() -> [ByteBuffer] {
        guard client.endReason == .credentialExpired else { return [SocketIOFrame.close] }
        return [
            Framing.socketIO.frame(Broadcaster.EndReason.expired) ?? SocketIOFrame.noop,
            SocketIOFrame.disconnect, SocketIOFrame.close,
        ]
    }

    // MARK: - Upgrade to WebSocket

    /// A WebSocket with this session's id arrived: only a polling session may move.
    func beginProbe() async -> Bool {
        await onLoop { [self] in held.value.machine.acceptsProbe } ?? false
    }

    /// The client's `2probe` was answered: release the waiting long-poll with a noop.
    func probed() async {
        _ = await onLoop { [self] in feed(.probed) }
    }

    /// The client's `5`: from now on every packet goes over `webSocket`.
    func completeUpgrade(webSocket: any Channel) async -> Bool {
        await onLoop { [self] in
            guard !held.value.machine.isClosed, held.value.machine.transport != .webSocket else { return false }
            held.value.webSocket = webSocket
            feed(.upgraded)
            return true
        } ?? false
    }

    /// A WebSocket of this session closed: the one that carries it ends the session
    /// (Engine.IO's transport close); a probe that never moved it leaves it polling.
    func webSocketEnded(_ channel: any Channel) async {
        _ = await onLoop { [self] in feed(.webSocketClosed(carrier: held.value.webSocket === channel)) }
    }

    /// After the WebSocket writer took the last queued packet: the final packets and
    /// the close frame, with a reason like `/ws`'s.
    func finish(outbound: WebSocketOutboundWriter, lastCursor: String?) async throws {
        guard let reason = client.endReason else {
            try await outbound.close(.normalClosure, reason: nil)
            return
        }
        if reason == .tooSlow { server.logger.info("cutting off a socket.io client that fell behind; last cursor \(lastCursor ?? "none")") }
        if reason == .credentialExpired {
            for packet in finalPackets() { try await outbound.write(.text(String(buffer: packet))) }
        }
        let (code, text) = reason.closeFrame(lastCursor: lastCursor)
        try await outbound.close(code, reason: text)
    }
}

extension EngineIOSession.Cause {
    /// What the debug log says about a session ending this way.
    var logLine: String? {
        switch self {
        case .clientClosed: "the client closed it"
        case .noPong: "no pong within pingTimeout"
        case .neverJoined: "no successful CONNECT within connectTimeout"
        case .overlappingPolls: "two long-polls at once"
        case .transportClosed: "its WebSocket closed"
        case .queueEnded, .server: nil
        }
    }
}
