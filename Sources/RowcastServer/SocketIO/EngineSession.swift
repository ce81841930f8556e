import Foundation
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import RowcastCore
import RowcastWire
import Synchronization

/// One Engine.IO session and the Socket.IO socket it carries in the default namespace.
///
/// Every packet for the client, from the CONNECT answer to pings and `update`s, goes
/// through its broadcaster queue, in order. A long-poll takes what is queued; after an
/// upgrade (or from the start, WebSocket only) a ``ChannelFrameWriter`` writes it to the
/// WebSocket on the connection's event loop, as for `/ws`. Timers (heartbeat,
/// credential expiry) run on one event loop; no task per session.
final class EngineSession: Sendable {
    enum Transport: Sendable, Equatable {
        case polling
        /// The client probed a WebSocket; long-polls are answered with a noop until it
        /// moves or gives the probe up.
        case probing
        case webSocket
    }

    /// The socket in the default namespace, once the client's CONNECT was accepted.
    struct Socket: Sendable {
        let sid: String
        let pid: String
        let access: ClientAccess
        var subscription: Subscription?
    }

    private struct State {
        var transport: Transport
        var webSocket: (any Channel)?
        var polling = false
        var closed = false
        var socket: Socket?
        var pingTimer: Scheduled<Void>?
        var pongDeadline: Scheduled<Void>?
        var expiry: Scheduled<Void>?
        var endTimer: Scheduled<Void>?
        var joinDeadline: Scheduled<Void>?
    }

    let sid = SocketIOFrame.randomID()
    let client: Broadcaster.Registration
    private let server: SocketIOServer
    /// The handshake's credential (`?token=` or `Authorization`), for a CONNECT without one.
    private let credential: String?
    private let eventLoop: any EventLoop
    private let state: Mutex<State>

    init(server: SocketIOServer, credential: String?, eventLoop: any EventLoop, webSocket: (any Channel)?) {
        self.server = server
        self.credential = credential
        self.eventLoop = eventLoop
        state = Mutex(State(transport: webSocket == nil ? .polling : .webSocket, webSocket: webSocket))
        let relay = EndRelay()
        client = server.broadcaster.register(framing: .socketIO) { reason in relay.session?.ended(reason) }
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
            sid: sid, upgrades: !isOnWebSocket, pingInterval: server.settings.pingInterval, pingTimeout: server.settings.pingTimeout,
            maxPayload: server.maxPayload
        )
    }

    var isOnWebSocket: Bool { state.withLock { $0.transport == .webSocket } }

    /// The socket's private id, once it joined.
    var pid: String? { state.withLock { $0.socket?.pid } }

    private func send(_ packet: ByteBuffer) {
        server.broadcaster.send(packet, to: client.id)
    }

    /// A `42["error",{…}]` event, when a socket joined (before, there is no one to tell).
    func refuse(_ message: String, code: String = "bad_frame") {
        guard state.withLock({ $0.socket != nil }) else { return }
        send(SocketIOFrame.error(code: code, message: message))
    }

    // MARK: - Heartbeat

    /// A session that has not joined the namespace by then is closed.
    func startJoinDeadline() {
        state.withLock { state in
            guard !state.closed else { return }
            state.joinDeadline = eventLoop.scheduleTask(in: TimeAmount(server.settings.connectTimeout)) { [self] in
                guard pid == nil else { return }
                server.logger.debug("socket.io session \(sid): no successful CONNECT within connectTimeout; closing it")
                close()
            }
        }
    }

    func startHeartbeat() {
        state.withLock { state in
            guard !state.closed else { return }
            state.pingTimer = eventLoop.scheduleTask(in: TimeAmount(server.settings.pingInterval)) { [self] in ping() }
        }
    }

    private func ping() {
        let sent = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.pongDeadline = eventLoop.scheduleTask(in: TimeAmount(server.settings.pingTimeout)) { [self] in
                server.logger.debug("socket.io session \(sid): no pong within pingTimeout; closing it")
                close()
            }
            return true
        }
        if sent { send(SocketIOFrame.ping) }
    }

    private func ponged() {
        let answered = state.withLock { state -> Bool in
            guard let deadline = state.pongDeadline else { return false }
            deadline.cancel()
            state.pongDeadline = nil
            return true
        }
        if answered { startHeartbeat() }
    }

    // MARK: - Packets from the client

    /// One Engine.IO packet from the client, whichever transport brought it.
    func receive(_ text: Substring.UTF8View) async {
        do throws(SocketIOPacketError) {
            switch try EnginePacket.parse(text) {
            case .close:
                server.logger.debug("socket.io session \(sid): the client closed it")
                close()
            case .ping(let data): send(ByteBuffer(string: "3" + data))
            case .pong: ponged()
            case .message(let packet): await receive(packet)
            case .upgrade, .noop: break
            }
        } catch {
            refuse(error.message)
        }
    }

    private func receive(_ packet: SocketIOPacket) async {
        switch packet {
        case .connect(let namespace, let auth):
            guard namespace == "/" else {
                send(SocketIOFrame.connectError(namespace: namespace, message: "Invalid namespace: rowcast serves the default namespace, io(url)"))
                return
            }
            await connect(auth)
        case .disconnect(let namespace):
            guard namespace == "/" else { return }
            // The client left the namespace on purpose: nothing to recover.
            server.broadcaster.unsubscribe(client.id)
            state.withLock { state in
                state.socket = nil
                state.expiry?.cancel()
            }
        case .event(let namespace, let ack, let name, let data):
            guard namespace == "/", let socket = state.withLock({ $0.socket }) else { return }
            do throws(ClientMessageError) {
                let message = try ClientMessage.parse(event: name, data: data.map(JSONText.init))
                switch try message.apply(for: client.id, access: socket.access, capture: server.capture, broadcaster: server.broadcaster) {
                case .subscribed(let subscription):
                    state.withLock { $0.socket?.subscription = subscription }
                case .unsubscribed:
                    state.withLock { $0.socket?.subscription = nil }
                case .pong(let data):
                    send(Framing.socketIO.frame(.pong(echoing: data)) ?? SocketIOFrame.noop)
                }
                if let ack { send(SocketIOFrame.ack(ack, error: nil)) }
            } catch {
                refuse(error.message, code: error.code)
                if let ack { send(SocketIOFrame.ack(ack, error: error)) }
            }
        case .ack:
            break
        }
    }

    /// CONNECT: authenticate (the `auth` payload's `token`, else the handshake's), then
    /// recover the session the client names, or start a new one.
    private func connect(_ auth: SocketIOAuth) async {
        guard state.withLock({ $0.socket == nil }) else { return }
        let access: ClientAccess
        do throws(AuthFailure) {
            access = try await server.auth.authenticate(credential: auth.token ?? credential)
        } catch {
            let message = auth.token == nil && credential == nil
                ? "authentication required: pass io(url, { auth: { token } }), or ?token= in the URL"
                : error.message
            send(SocketIOFrame.connectError(namespace: "/", message: "unauthorized: " + message))
            return
        }
        var socket = Socket(sid: SocketIOFrame.randomID(), pid: SocketIOFrame.randomID(), access: access, subscription: nil)
        var recovered = false
        if let pid = auth.pid, let offset = auth.offset.flatMap(Cursor.init), let held = server.takeRecoverable(pid: pid, for: self) {
            let reply = SocketIOFrame.connected(sid: held.sid, pid: pid)
            if let subscription = held.subscription {
                if let allowed = try? access.restrict(subscription),
                    server.broadcaster.subscribe(client.id, to: allowed, since: offset, announcing: .message(reply))
                {
                    socket = Socket(sid: held.sid, pid: pid, access: access, subscription: allowed)
                    recovered = true
                }
            } else {
                send(reply)
                socket = Socket(sid: held.sid, pid: pid, access: access, subscription: nil)
                recovered = true
            }
        }
        if auth.pid != nil {
            (recovered ? server.metrics?.socketIORecovered : server.metrics?.socketIONotRecovered)?.increment()
        }
        if !recovered { send(SocketIOFrame.connected(sid: socket.sid, pid: socket.pid)) }
        let closed = state.withLock { state -> Bool in
            guard !state.closed else { return true }
            state.socket = socket
            state.joinDeadline?.cancel()
            state.joinDeadline = nil
            if let expires = access.expires {
                state.expiry = eventLoop.scheduleTask(in: TimeAmount(.untilDate(expires))) { [server, client] in server.broadcaster.expire(client.id) }
            }
            return false
        }
        guard !closed else { return }
        send(Framing.socketIO.frame(.connected(mode: server.mode)) ?? SocketIOFrame.noop)
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
        enum Start { case wait, noop, moved, overlap }
        let start = state.withLock { state -> Start in
            switch state.transport {
            case .webSocket: return .moved
            case .probing: return .noop
            case .polling:
                if state.polling { return .overlap }
                state.polling = true
                return .wait
            }
        }
        switch start {
        case .wait: break
        case .noop: return .packets([SocketIOFrame.noop])
        case .moved: return .refused("Bad request: the session moved to WebSocket")
        case .overlap:
            server.logger.debug("socket.io session \(sid): two long-polls at once; closing it")
            close()
            return .refused("Bad request: two long-polls at once for one session")
        }
        let batch = await client.queue.next(limit: Self.packetsPerPoll)
        state.withLock { $0.polling = false }
        guard let batch else {
            close()
            return .packets(finalPackets())
        }
        var packets: [ByteBuffer] = []
        packets.reserveCapacity(batch.count)
        var bytes = 0
        for item in batch {
            bytes += item.bytes.readableBytes
            packets.append(item.bytes)
        }
        // Out of the queue: the answer is written at once (what waits to be taken is
        // what the byte budget bounds).
        client.wrote(bytes: bytes)
        // Cut off or expired while this batch waited: what is queued is dropped, as on `/ws`.
        if let reason = client.endReason, reason != .shuttingDown {
            close()
            return .packets(finalPackets())
        }
        return .packets(packets.isEmpty ? [SocketIOFrame.noop] : packets)
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

    /// The broadcaster ended the client (too slow, expired, shutting down).
    private func ended(_ reason: Broadcaster.EndReason) {
        let grace = reason == .shuttingDown ? server.stalledClientGrace * 2 : server.stalledClientGrace
        let webSocket = state.withLock { state -> (any Channel)? in
            if state.transport != .webSocket {
                // A waiting long-poll answers at once; otherwise the next one gets the
                // close, and a client that never polls again is forgotten after `grace`.
                state.endTimer = eventLoop.scheduleTask(in: TimeAmount(grace)) { [self] in close() }
            }
            return state.transport == .webSocket ? state.webSocket : nil
        }
        webSocket?.closeUnlessClosed(after: grace)
    }

    // MARK: - Upgrade to WebSocket

    /// A WebSocket with this session's id arrived: only a polling session may move.
    func beginProbe() -> Bool {
        state.withLock { $0.transport == .polling && !$0.closed }
    }

    /// The client's `2probe` was answered: release the waiting long-poll with a noop.
    func probed() {
        state.withLock { $0.transport = .probing }
        client.queue.interrupt()
    }

    /// The client's `5`: from now on every packet goes over `webSocket`.
    func completeUpgrade(webSocket: any Channel) -> Bool {
        let moved = state.withLock { state -> Bool in
            guard !state.closed, state.transport != .webSocket else { return false }
            state.transport = .webSocket
            state.webSocket = webSocket
            return true
        }
        if moved { client.queue.interrupt() }
        return moved
    }

    /// A WebSocket of this session closed: the one that carries it ends the session
    /// (Engine.IO's transport close); a probe that never moved it leaves it polling.
    func webSocketEnded(_ channel: any Channel) {
        let carried = state.withLock { state -> Bool in
            if state.webSocket === channel { return true }
            if state.transport == .probing { state.transport = .polling }
            return false
        }
        if carried { close() }
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

    // MARK: - End

    /// Ends the session: its queue finishes (a waiting long-poll answers with Engine.IO's
    /// close, a WebSocket closes), and a joined socket stays recoverable for a while.
    func close() {
        let socket = state.withLock { state -> Socket?? in
            guard !state.closed else { return .none }
            state.closed = true
            for timer in [state.pingTimer, state.pongDeadline, state.expiry, state.endTimer, state.joinDeadline] { timer?.cancel() }
            return .some(state.socket)
        }
        guard let socket else { return }
        server.closed(self, socket: socket)
        server.broadcaster.unregister(client.id)
    }
}
