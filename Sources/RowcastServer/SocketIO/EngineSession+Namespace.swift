import NIOCore
import RowcastCore
import RowcastWire

/// The packets a session receives, and the Socket.IO namespace above Engine.IO.
extension EngineSession {
    /// One Engine.IO packet from the client, whichever transport brought it.
    func receive(_ text: Substring.UTF8View) async {
        guard await paced() else { return }
        do throws(SocketIOPacketError) {
            switch try EnginePacket.parse(text) {
            case .close: _ = await onLoop { [self] in feed(.clientClose) }
            case .ping(let data): _ = await onLoop { [self] in feed(.clientPing(data)) }
            case .pong: _ = await onLoop { [self] in feed(.clientPong) }
            case .message(let packet): await receive(packet)
            case .upgrade, .noop: break
            }
        } catch {
            await refuse(error.message)
        }
    }

    /// A `42["error",{…}]` event, when a socket joined (before, there is no one to tell).
    func refuse(_ message: String, code: String = "bad_frame", reason: String? = nil) async {
        guard await socket != nil else { return }
        send(SocketIOFrame.error(code: code, message: message, reason: reason))
    }

    /// Waits until what the client's address owes for window scans is within its burst,
    /// and pays ahead for the scan from `since` (or for the newest `last`) about to run.
    private func settleScans(since: Cursor?, last: Int? = nil) async throws(ClientMessageError) {
        let records = server.broadcaster.recordsToScan(since: since, last: last)
        client.prepay(try await server.addressPace.settle(address, reserving: records, on: eventLoop) { [server] in server.metrics?.messagesPaced.increment() })
    }

    /// The joined socket, read on the loop.
    private var socket: Socket? {
        get async { await onLoop { [self] in held.value.socket } ?? nil }
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
            _ = await onLoop { [self] in
                held.value.socket = nil
                feed(.left)
            }
        case .event(let namespace, let ack, let name, let data):
            guard namespace == "/", let socket = await socket else { return }
            do throws(ClientMessageError) {
                let message = try ClientMessage.parse(event: name, data: data.map(JSONText.init))
                // A scan of the window waits until its address's earlier scans are paid for.
                if case .subscribe(_, let since, let last, _) = message, message.scansWindow { try await settleScans(since: since, last: last) }
                defer { client.scanDone() }
                let outcome = try message.apply(for: client.id, access: socket.access, capture: server.capture, broadcaster: server.broadcaster)
                if message.scansWindow { await chargeScans() }
                if case .pong(let data) = outcome { send(Framing.socketIO.frame(.pong(echoing: data)) ?? SocketIOFrame.noop) }
                if let ack { send(SocketIOFrame.ack(ack, error: nil)) }
            } catch {
                await refuse(error.message, code: error.code, reason: error.reason)
                if let ack { send(SocketIOFrame.ack(ack, error: error)) }
            }
        case .ack:
            break
        }
    }

    /// CONNECT: authenticate (the `auth` payload's `token`, else the handshake's), then
    /// recover the session the client names, or start a new one.
    private func connect(_ auth: SocketIOAuth) async {
        // One CONNECT at a time, and none once joined (several POSTs may carry one each).
        let first = await onLoop { [self] () -> Bool in
            guard held.value.socket == nil, !held.value.joining else { return false }
            held.value.joining = true
            return true
        }
        guard first == true else { return }
        let access: ClientAccess
        do throws(AuthFailure) {
            access = try await server.auth.authenticate(credential: auth.token ?? credential)
        } catch {
            _ = await onLoop { [self] in held.value.joining = false }
            let message = auth.token == nil && credential == nil
                ? "authentication required: pass io(url, { auth: { token } }), or ?token= in the URL"
                : error.message
            send(SocketIOFrame.connectError(namespace: "/", message: "unauthorized: " + message))
            return
        }
        var socket = Socket(sid: SocketIOFrame.randomID(), pid: SocketIOFrame.randomID(), access: access)
        var recovered = false
        // An address that owes too many scans recovers nothing now: the client starts afresh.
        let offset = auth.offset.flatMap(Cursor.init)
        let mayScan = auth.pid == nil || offset == nil ? true : ((try? await settleScans(since: offset)) != nil)
        defer { client.scanDone() }
        if mayScan, let pid = auth.pid, let offset, let held = await server.takeRecoverable(pid: pid, for: self) {
            let reply = SocketIOFrame.connected(sid: held.sid, pid: pid)
            if let subscription = held.subscription {
                // Narrowed by the credential it reconnected with, row rules included.
                if let allowed = try? access.restrict(subscription).checkingRules(by: server.capture),
                    server.broadcaster.subscribe(client.id, to: allowed, since: offset, announcing: .message(reply))
                {
                    socket = Socket(sid: held.sid, pid: pid, access: access)
                    recovered = true
                }
            } else {
                send(reply)
                socket = Socket(sid: held.sid, pid: pid, access: access)
                recovered = true
            }
        }
        if auth.pid != nil {
            (recovered ? server.metrics?.socketIORecovered : server.metrics?.socketIONotRecovered)?.increment()
            await chargeScans()
        }
        if !recovered { send(SocketIOFrame.connected(sid: socket.sid, pid: socket.pid)) }
        let joined = socket
        let expiresIn = access.expires.map { Duration.untilDate($0) }
        let open = await onLoop { [self] in
            held.value.joining = false
            guard !held.value.machine.isClosed else { return false }
            held.value.socket = joined
            feed(.joined(expiresIn: expiresIn))
            // On the loop, so that it cannot follow this session's end.
            server.joined(self, pid: joined.pid)
            return true
        }
        guard open == true else { return }
        send(Framing.socketIO.frame(.connected(mode: server.mode)) ?? SocketIOFrame.noop)
    }
}
