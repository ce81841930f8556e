/// The rules of one Engine.IO session, as a value: events in, actions out.
///
/// It decides the transport (long-polling, a WebSocket probe, the WebSocket), the
/// heartbeat (the server's ping every `pingInterval`, the client's pong within
/// `pingTimeout`), how long a session may go without joining the namespace, when a
/// joined socket's credential expires, and how a session ends. It performs no I/O and
/// reads no clock: the shell around it (`EngineSession` in RowcastServer) runs on one
/// event loop, feeds it events, arms and cancels the timers it names, and carries out
/// the other actions in order. So every rule is tested without a socket or a timer,
/// as ``ReplicationSession``'s are.
package struct EngineIOSession: Sendable {
    package struct Settings: Sendable, Equatable {
        package var pingInterval: Duration
        package var pingTimeout: Duration
        /// How long a session may go without a successful CONNECT (socket.io's `connectTimeout`).
        package var connectTimeout: Duration

        package init(pingInterval: Duration, pingTimeout: Duration, connectTimeout: Duration) {
            self.pingInterval = pingInterval
            self.pingTimeout = pingTimeout
            self.connectTimeout = connectTimeout
        }
    }

    package enum Transport: Sendable, Equatable {
        case polling
        /// The client probed a WebSocket: long-polls are answered with a noop until it
        /// moves (`5`) or gives the probe up.
        case probing
        case webSocket
    }

    /// The session's timers; the shell keeps at most one of each armed.
    package enum Timer: Sendable, Hashable, CaseIterable {
        /// The next ping is due.
        case ping
        /// The client's pong is overdue.
        case pong
        /// The session has not joined the namespace in time.
        case join
        /// The joined socket's credential expires.
        case credential
        /// The broadcaster ended the client and no long-poll came to learn it.
        case ended
    }

    /// Why the session ended, for the log.
    package enum Cause: Sendable, Equatable {
        case clientClosed
        case noPong
        case neverJoined
        case overlappingPolls
        case transportClosed
        /// The client's queue ended (cut off, expired, shutting down), and its last
        /// long-poll was answered or none came within the grace.
        case queueEnded
        case server
    }

    package enum Event: Sendable, Equatable {
        /// The session exists: its first transport is open.
        case opened
        case timerFired(Timer)
        /// Engine.IO packets from the client other than messages.
        case clientClose
        case clientPing(String)
        case clientPong
        /// The socket joined the namespace; its credential expires after `expiresIn` (nil: never).
        case joined(expiresIn: Duration?)
        /// The socket left the namespace on purpose.
        case left
        /// A long-poll `GET` arrived; the answer is ``pollDecision``.
        case pollArrived
        /// The waiting long-poll took its packets and is being answered.
        case pollAnswered
        /// A WebSocket with this session's id sent `2probe` and was answered.
        case probed
        /// The client's `5` on the probing WebSocket: it carries the session from now on.
        case upgraded
        /// A WebSocket of this session closed; `carrier` when it was the one carrying it.
        case webSocketClosed(carrier: Bool)
        /// The broadcaster ended the client's queue; its connection may take `grace` to close.
        case queueEnded(grace: Duration)
        /// The server closes it (its queue was drained after an end, the server stops).
        case close(Cause)
    }

    package enum Action: Sendable, Equatable {
        case arm(Timer, after: Duration)
        case disarm(Timer)
        /// Queue Engine.IO's ping, `2`.
        case sendPing
        /// Queue the answer to the client's ping, `3` and its data.
        case sendPong(String)
        /// Answer a waiting long-poll at once (empty: the client moves to WebSocket).
        case releasePoll
        /// End the credential's client (the broadcaster's expiry).
        case expireCredential
        /// Close the WebSocket that carries the session after `grace` unless it closed.
        case closeWebSocket(after: Duration)
        /// The session is over: forget it (keep the socket recoverable), unregister the client.
        case end(Cause)
    }

    /// What a long-poll `GET` does.
    package enum PollDecision: Sendable, Equatable {
        /// Wait for the client's packets.
        case wait
        /// Answer at once with a noop (a probe is under way).
        case noop
        /// Answer with Engine.IO's error, `message`.
        case refuse(String)
    }

    package let settings: Settings
    package private(set) var transport: Transport
    package private(set) var isClosed = false
    /// A long-poll is waiting for packets.
    package private(set) var isPolling = false
    /// The timers armed now.
    package private(set) var armed: Set<Timer> = []
    /// The answer to the last ``Event/pollArrived``.
    package private(set) var pollDecision: PollDecision = .wait

    package init(settings: Settings, onWebSocket: Bool) {
        self.settings = settings
        self.transport = onWebSocket ? .webSocket : .polling
    }

    /// Whether a WebSocket with this session's id may start a probe.
    package var acceptsProbe: Bool { !isClosed && transport == .polling }

    package mutating func handle(_ event: Event) -> [Action] {
        guard !isClosed else {
            // A long-poll racing the end: its queue has finished, so it gets the final packets.
            if event == .pollArrived { pollDecision = .wait }
            return []
        }
        switch event {
        case .opened:
            return [arm(.ping, after: settings.pingInterval), arm(.join, after: settings.connectTimeout)]
        case .timerFired(let timer):
            guard armed.remove(timer) != nil else { return [] }
            switch timer {
            case .ping: return [arm(.pong, after: settings.pingTimeout), .sendPing]
            case .pong: return close(.noPong)
            case .join: return close(.neverJoined)
            case .credential: return [.expireCredential]
            case .ended: return close(.queueEnded)
            }
        case .clientClose:
            return close(.clientClosed)
        case .clientPing(let data):
            return [.sendPong(data)]
        case .clientPong:
            // A pong nobody waits for (a client's own timing) changes nothing.
            guard armed.contains(.pong) else { return [] }
            return [disarm(.pong), arm(.ping, after: settings.pingInterval)].compactMap { $0 }
        case .joined(let expiresIn):
            var actions = [disarm(.join)].compactMap { $0 }
            if let expiresIn { actions.append(arm(.credential, after: expiresIn)) }
            return actions
        case .left:
            return [disarm(.credential)].compactMap { $0 }
        case .pollArrived:
            switch transport {
            case .webSocket:
                pollDecision = .refuse("Bad request: the session moved to WebSocket")
                return []
            case .probing:
                pollDecision = .noop
                return []
            case .polling:
                guard !isPolling else {
                    pollDecision = .refuse("Bad request: two long-polls at once for one session")
                    return close(.overlappingPolls)
                }
                isPolling = true
                pollDecision = .wait
                return []
            }
        case .pollAnswered:
            isPolling = false
            return []
        case .probed:
            guard transport == .polling else { return [] }
            transport = .probing
            return [.releasePoll]
        case .upgraded:
            guard transport != .webSocket else { return [] }
            transport = .webSocket
            return [.releasePoll]
        case .webSocketClosed(let carrier):
            if carrier { return close(.transportClosed) }
            if transport == .probing { transport = .polling }
            return []
        case .queueEnded(let grace):
            // On WebSocket the writer closes after what it must send; otherwise a waiting
            // long-poll answers at once, or the next one does, and a client that never
            // polls again is forgotten after `grace`.
            if transport == .webSocket { return [.closeWebSocket(after: grace)] }
            return [arm(.ended, after: grace)]
        case .close(let cause):
            return close(cause)
        }
    }

    private mutating func arm(_ timer: Timer, after delay: Duration) -> Action {
        armed.insert(timer)
        return .arm(timer, after: delay)
    }

    private mutating func disarm(_ timer: Timer) -> Action? {
        armed.remove(timer).map { .disarm($0) }
    }

    private mutating func close(_ cause: Cause) -> [Action] {
        isClosed = true
        let timers = Timer.allCases.filter { armed.contains($0) }
        armed = []
        return timers.map { .disarm($0) } + [.end(cause)]
    }
}
