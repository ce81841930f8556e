import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import RowcastCore
import RowcastWire
import Synchronization

/// Socket.IO v4 at `/socket.io/`, for pages written against `socket.io-client`.
///
/// Engine.IO 4 carries the packets: HTTP long-polling (`GET` waits for packets, `POST`
/// brings the client's), its upgrade to WebSocket, or WebSocket alone; heartbeats are
/// the server's `2` and the client's `3`. Above it, the default namespace speaks
/// rowcast's events: `connected`, `ready for data`, `subscribe`, `unsubscribe`,
/// `update`, `subscribed`, `error`, with the same credentials, filters and slow-client
/// rules as `/ws`. Every packet a client receives goes through its broadcaster queue,
/// so `update`s are the shared bytes built once per record.
///
/// Connection state recovery: the CONNECT answer carries a private id (`pid`) and each
/// `update` ends with the record's cursor, which `socket.io-client` keeps as its
/// offset. A client that comes back within ``SocketIOSettings/recoveryWindow`` with both gets
/// its subscription back and every matching record after the offset, once; otherwise
/// `socket.recovered` is false. Sessions live in this process: after a restart, or on
/// another node, a page resumes with `subscribe` and `since` instead.
final class SocketIOServer: Sendable {
    let broadcaster: Broadcaster
    let mode: CaptureMode
    let capture: CaptureState
    let auth: ClientAuthenticator
    let settings: SocketIOSettings
    let maxPayload: Int
    let stalledClientGrace: Duration
    /// `--client-messages-per-second`: each session's packets are taken no faster.
    let messagesPerSecond: Int
    /// Window scans (recoveries, `subscribe` with `since` or `last`) are charged to the
    /// client's address too.
    let addressPace: AddressPace
    /// `--idle-timeout`: a POST's body must be whole within it (``RequestBodyDeadline``).
    let bodyTimeout: Duration
    let logger: Logger
    var metrics: ServerMetrics? { broadcaster.metrics }

    /// A disconnected session a client may recover, by its pid.
    struct Recoverable: Sendable {
        let sid: String
        let subscription: Subscription?
        let until: ContinuousClock.Instant
    }

    private struct State {
        var sessions: [String: EngineSession] = [:]
        /// Sessions whose socket joined, by its pid.
        var joined: [String: EngineSession] = [:]
        /// Sessions not joined yet (by sid: the address they came from), and each
        /// address's, oldest first.
        var pending: [String: ClientAddress] = [:]
        var pendingPerAddress: [ClientAddress: [String]] = [:]
        var recoverable: [String: Recoverable] = [:]
        var pruneAt = 1024
    }

    private let state = Mutex(State())

    init(
        broadcaster: Broadcaster, mode: CaptureMode, capture: CaptureState, auth: ClientAuthenticator, settings: SocketIOSettings,
        maxPayload: Int, stalledClientGrace: Duration, messagesPerSecond: Int, addressPace: AddressPace, bodyTimeout: Duration, logger: Logger
    ) {
        self.messagesPerSecond = messagesPerSecond
        self.addressPace = addressPace
        self.bodyTimeout = bodyTimeout
        self.broadcaster = broadcaster
        self.mode = mode
        self.capture = capture
        self.auth = auth
        self.settings = settings
        self.maxPayload = maxPayload
        self.stalledClientGrace = stalledClientGrace
        self.logger = logger
    }

    /// Engine.IO sessions open now.
    var sessionCount: Int { state.withLock { $0.sessions.count } }

    // MARK: - HTTP long-polling

    /// `GET` opens a session (no `sid`) or waits for its packets; `POST` delivers the
    /// client's.
    func respond(to request: Request, channel: any Channel, cors: HTTPFields) async throws -> Response {
        WebSocketFramePace.install(on: channel, messagesPerSecond: messagesPerSecond) { [metrics] in metrics?.messagesPaced.increment() }
        let query = request.uri.queryParameters
        guard query["EIO"] == "4" else {
            return Self.refusal(5, "Unsupported protocol version: rowcast speaks Engine.IO 4 (socket.io-client 3 and 4)", cors: cors)
        }
        guard query["transport"] == "polling" else {
            if query["transport"] == "websocket" {
                return Self.refusal(3, "Bad request: transport=websocket needs a WebSocket upgrade", cors: cors)
            }
            return Self.refusal(0, "Transport unknown: use polling or websocket", cors: cors)
        }
        guard let sid = query["sid"].map(String.init) else {
            guard request.method == .get else { return Self.refusal(2, "Bad handshake method: a session opens with GET", cors: cors) }
            guard let session = open(request: request, channel: channel, webSocket: nil) else {
                return Self.refusal(3, Self.tooManyPending, status: .serviceUnavailable, cors: cors)
            }
            return Self.text([session.openPacket], cors: cors)
        }
        guard let session = state.withLock({ $0.sessions[sid] }) else {
            return Self.refusal(1, "Session ID unknown: it ended (closed, timed out or cut off); the client reconnects", cors: cors)
        }
        if request.method == .post {
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: maxPayload, within: bodyTimeout, channel: channel)
            } catch {
                logger.debug("socket.io session \(sid): a POST over maxPayload, or not whole within --idle-timeout; closing it")
                await session.close(.server)
                return Self.refusal(3, "Bad request: a payload over maxPayload (\(maxPayload) bytes)", status: .contentTooLarge, cors: cors)
            }
            let packets = EnginePacket.split(payload: Array(body.readableBytesView))
            // Clients send what they queued (python-engineio decodes at most 16 a payload);
            // thousands of one-byte packets are no client's, and each waits its turn.
            guard packets.count <= Self.maxPacketsPerPayload else {
                logger.debug("socket.io session \(sid): a POST of \(packets.count) packets; closing it")
                await session.close(.server)
                return Self.refusal(3, "Bad request: more than \(Self.maxPacketsPerPayload) packets in one payload", cors: cors)
            }
            for packet in packets {
                // The client left, or the session ended: the rest is not handled.
                guard channel.isActive else { break }
                await session.receive(packet)
            }
            return Self.text([ByteBuffer(string: "ok")], cors: cors)
        }
        switch await session.poll() {
        case .packets(let packets):
            var parts: [ByteBuffer] = []
            parts.reserveCapacity(packets.count * 2)
            for (index, packet) in packets.enumerated() {
                if index > 0 { parts.append(Self.separator) }
                parts.append(packet)
            }
            return Self.text(parts, cors: cors)
        case .refused(let message):
            return Self.refusal(3, message, cors: cors)
        }
    }

    private static let separator = ByteBuffer(bytes: [0x1E])

    /// The most packets one POST may carry.
    static let maxPacketsPerPayload = 256

    private static func text(_ parts: [ByteBuffer], cors: HTTPFields) -> Response {
        var headers = cors
        headers[.contentType] = "text/plain; charset=UTF-8"
        return Response(status: .ok, headers: headers, body: ResponseBody(contentsOf: parts))
    }

    /// Engine.IO's error answer: `{"code": N, "message": M}` with 400.
    static func refusal(_ code: Int, _ message: String, status: HTTPResponse.Status = .badRequest, cors: HTTPFields) -> Response {
        var writer = JSONWriter(capacity: 64 + message.utf8.count)
        writer.appendASCII(#"{"code":"#)
        writer.appendInteger(code)
        writer.appendASCII(#","message":"#)
        writer.appendString(message)
        writer.append(byte: UInt8(ascii: "}"))
        var headers = cors
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: writer.bytes)))
    }

    // MARK: - WebSocket

    /// A WebSocket at `/socket.io/`: a session of its own (`transport=websocket`
    /// without `sid`), or the upgrade of a polling session (with its `sid`): the client
    /// probes (`2probe`, answered `3probe`), the pending poll is answered with a noop,
    /// and after the client's `5` every packet goes over the WebSocket.
    func serveWebSocket(
        request: Request, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel
    ) async throws {
        WebSocketFramePace.install(on: channel, messagesPerSecond: messagesPerSecond) { [metrics] in metrics?.messagesPaced.increment() }
        let query = request.uri.queryParameters
        guard query["EIO"] == "4" else {
            try await outbound.close(.protocolError, reason: "rowcast speaks Engine.IO 4 (socket.io-client 3 and 4)")
            return
        }
        let session: EngineSession
        let fresh: Bool
        if let sid = query["sid"].map(String.init) {
            guard let existing = state.withLock({ $0.sessions[sid] }), await existing.beginProbe() else {
                try await outbound.close(.policyViolation, reason: "Session ID unknown")
                return
            }
            session = existing
            fresh = false
        } else {
            guard let opened = open(request: request, channel: channel, webSocket: channel) else {
                try await outbound.close(.unknown(1013), reason: closeReason(Self.tooManyPending))
                return
            }
            session = opened
            try await outbound.write(.text(String(buffer: session.openPacket)))
            fresh = true
        }

        let writer = ChannelFrameWriter(channel: channel, client: session.client)
        let moved = MovedFlag(fresh)
        if fresh {
            writer.start()
        } else {
            // A probe has pingTimeout to move the session (socket.io-client sends `5`
            // right after `3probe`); one that never does is closed, whatever became
            // of its session meanwhile.
            channel.eventLoop.scheduleTask(in: TimeAmount(settings.pingTimeout)) {
                if !moved.value.load(ordering: .relaxed) { channel.close(promise: nil) }
            }
        }
        await withThrowingTaskGroup(of: Void.self) { group in
            // The session's queue ended (cut off, expired, closed, shutting down).
            group.addTask {
                await writer.finished()
                if !Task.isCancelled { try await session.finish(outbound: outbound, lastCursor: writer.lastCursor) }
            }
            group.addTask { [maxPayload] in
                for try await message in inbound.messages(maxSize: maxPayload) {
                    guard case .text(let text) = message else {
                        await session.refuse("binary packets are not supported; rowcast speaks JSON text")
                        continue
                    }
                    if !moved.value.load(ordering: .relaxed) {
                        // The probe: only `2probe` and `5` mean anything until the client moved.
                        if text == "2probe" {
                            try await outbound.write(.text("3probe"))
                            await session.probed()
                        } else if text == "5", await session.completeUpgrade(webSocket: channel) {
                            moved.value.store(true, ordering: .relaxed)
                            writer.start()
                        }
                        continue
                    }
                    await session.receive(text[...].utf8)
                    guard channel.isActive else { break }
                }
            }
            // Either ends the connection: the client left, or the writer closed it.
            _ = try? await group.next()
            group.cancelAll()
        }
        await session.webSocketEnded(channel)
    }

    // MARK: - Sessions

    /// What a handshake refused for too many sessions waiting to join says.
    static let tooManyPending = "Too many sessions waiting to join from this address: send CONNECT on the sessions you opened, or retry later"

    /// A new session, unless its address has too many waiting to join (nil: refuse the
    /// handshake). When the server holds its most pending sessions in all, the oldest
    /// of the address holding the most is closed to make room: many addresses (a few
    /// hosts, an IPv6 /64 counting as one) that fill the total cannot lock newcomers
    /// out, and a client waiting alone is shed only after every address holds as many.
    private func open(request: Request, channel: any Channel, webSocket: (any Channel)?) -> EngineSession? {
        let address = ClientAddress(channel.remoteAddress)
        let sid = SocketIOFrame.randomID()
        // Counted in at once (the session is built outside the lock): concurrent
        // handshakes cannot pass the limits together.
        let admission = state.withLock { state -> (admitted: Bool, shed: EngineSession?) in
            guard state.pendingPerAddress[address, default: []].count < settings.maxPendingSessionsPerAddress else { return (false, nil) }
            var shed: EngineSession?
            if state.pending.count >= settings.maxPendingSessions {
                guard let heaviest = state.pendingPerAddress.max(by: { $0.value.count < $1.value.count }), let oldest = heaviest.value.first
                else { return (false, nil) }
                settle(oldest, in: &state)
                shed = state.sessions[oldest]
            }
            state.pending[sid] = address
            state.pendingPerAddress[address, default: []].append(sid)
            return (true, shed)
        }
        guard admission.admitted else {
            metrics?.socketIOPendingRefused.increment()
            logger.debug("socket.io handshake from \(address) refused: too many sessions waiting to join from it")
            return nil
        }
        if let shed = admission.shed {
            logger.debug("socket.io: \(settings.maxPendingSessions) sessions waiting to join; closing the oldest of the address with the most")
            shed.eventLoop.execute { shed.feed(.close(.neverJoined)) }
        }
        let session = EngineSession(
            sid: sid, server: self, address: address, credential: ClientAuthenticator.credential(in: request), eventLoop: channel.eventLoop,
            webSocket: webSocket
        )
        let count = state.withLock { state in
            state.sessions[session.sid] = session
            return state.sessions.count
        }
        metrics?.socketIOSessions.set(count)
        session.start()
        return session
    }

    /// A session no longer waits to join (it joined, it ended, or it was shed).
    private func settle(_ sid: String, in state: inout State) {
        guard let address = state.pending.removeValue(forKey: sid) else { return }
        state.pendingPerAddress[address]?.removeAll { $0 == sid }
        if state.pendingPerAddress[address]?.isEmpty == true { state.pendingPerAddress[address] = nil }
    }

    /// Forgets a closed session; keeps what it needs to be recovered, if it had joined.
    func closed(_ session: EngineSession, socket: EngineSession.Socket?, subscription: Subscription?) {
        let now = ContinuousClock.now
        let count = state.withLock { state in
            state.sessions.removeValue(forKey: session.sid)
            settle(session.sid, in: &state)
            if let socket {
                if state.joined[socket.pid] === session { state.joined.removeValue(forKey: socket.pid) }
                state.recoverable[socket.pid] = Recoverable(sid: socket.sid, subscription: subscription, until: now + settings.recoveryWindow)
                if state.recoverable.count >= state.pruneAt {
                    state.recoverable = state.recoverable.filter { $0.value.until > now }
                    state.pruneAt = max(1024, state.recoverable.count * 2)
                }
            }
            return state.sessions.count
        }
        metrics?.socketIOSessions.set(count)
    }

    /// A session's socket joined with `pid` (on the session's loop, before it can end).
    func joined(_ session: EngineSession, pid: String) {
        state.withLock { state in
            state.joined[pid] = session
            settle(session.sid, in: &state)
        }
    }

    /// The session a reconnecting client held, once: from those that ended, or one
    /// whose old connection this server has not noticed dead yet (it is closed first).
    func takeRecoverable(pid: String, for taker: EngineSession) async -> Recoverable? {
        let (found, stale) = state.withLock { state -> (Recoverable?, EngineSession?) in
            if let found = state.recoverable.removeValue(forKey: pid) {
                return (found.until > .now ? found : nil, nil)
            }
            return (nil, state.joined[pid].flatMap { $0 === taker ? nil : $0 })
        }
        guard let stale else { return found }
        await stale.close(.server)
        return state.withLock { $0.recoverable.removeValue(forKey: pid) }
    }
}

/// Whether a WebSocket carries its session yet (a probe's deadline reads it).
private final class MovedFlag: Sendable {
    let value: Atomic<Bool>
    init(_ moved: Bool) { value = Atomic(moved) }
}
