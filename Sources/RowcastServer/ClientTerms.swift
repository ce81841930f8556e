import Foundation
import NIOCore
import NIOWebSocket
import RowcastCore
import RowcastWire

/// What every transport's session does alike (`/ws`, `/events`, `/socket.io/`): how a
/// request is carried out, when an ended client's connection is closed outright, when a
/// credential expires, and what the client is told.
extension Broadcaster.EndReason {
    /// How long an ended client's connection may take to close by itself (the writer
    /// sends what it must, then closes) before it is closed outright: its peer may have
    /// stopped reading, and then nothing written ever leaves. A shutdown writes out
    /// what was queued first, so it gets twice as long.
    func grace(_ stalledClientGrace: Duration) -> Duration {
        self == .shuttingDown ? stalledClientGrace * 2 : stalledClientGrace
    }

    /// The close code and reason a WebSocket client gets when the broadcaster ended
    /// it, with the cursor of the last update written to it.
    func closeFrame(lastCursor: String?) -> (WebSocketErrorCode, String) {
        let last = "last cursor \(lastCursor ?? "none")"
        switch self {
        case .tooSlow: return (.unknown(1013), closeReason("too slow; \(last)"))
        case .credentialExpired: return (.policyViolation, closeReason("\(Self.expiredMessage); \(last)"))
        case .shuttingDown: return (.goingAway, closeReason("server shutting down; \(last)"))
        case .slotLost: return (.unknown(1012), closeReason("replication slot lost, changes missed: reload; \(last)"))
        }
    }

    /// The `error` an expired client gets where its transport can carry one (SSE,
    /// Socket.IO) before the stream ends.
    static let expired = ServerMessage.error(code: "unauthorized", message: expiredMessage)
    private static let expiredMessage = "token expired; reconnect with a fresh one"
}

extension Broadcaster {
    /// Registers a client whose connection is `channel`: once the broadcaster ends it,
    /// the connection is closed after the reason's grace unless it closed by itself.
    func register(
        framing: Framing, closing channel: any Channel, grace stalledClientGrace: Duration, account: ScanAccount? = nil
    ) -> Registration {
        let registration = register(framing: framing, onEnd: { reason in
            channel.closeUnlessClosed(after: reason.grace(stalledClientGrace))
        }, account: account, closeNow: { channel.close(promise: nil) })
        channel.closeFuture.whenComplete { [weak self] _ in self?.connectionClosed(registration.id) }
        return registration
    }

    /// Ends `client` when its credential expires, on a timer of `eventLoop` (not the
    /// cooperative pool's clock); nil for a credential that never does. The caller
    /// cancels it when the client leaves first.
    func expire(_ client: UInt64, when access: ClientAccess, on eventLoop: any EventLoop) -> Scheduled<Void>? {
        guard let expires = access.expires else { return nil }
        return eventLoop.scheduleTask(in: TimeAmount(.untilDate(expires))) { [self] in expire(client) }
    }
}

extension ClientMessage {
    /// What a request did, for the session that must remember or answer it.
    enum Outcome {
        case subscribed(Subscription)
        case unsubscribed
        /// A `ping`: answer `pong` with this data.
        case pong(String)
    }

    /// What ``apply(for:access:capture:broadcaster:)`` would refuse, short of an expired
    /// cursor (which only the broadcaster knows): a transport that answers before it
    /// registers the client (SSE's status line) checks first.
    func check(access: ClientAccess, capture: CaptureState) throws(ClientMessageError) {
        switch self {
        case .readyForData: _ = try access.restrict(.everything).checkingRules(by: capture)
        case .subscribe(let wanted, _, _, _): _ = try access.restrict(wanted).checkCaptured(by: capture)
        case .unsubscribe, .ping: break
        }
    }

    /// Carries out a client's request, for every protocol alike: the subscription is
    /// narrowed to what the client may see, and only then checked against what is
    /// captured, so that no answer names a table or column the credential hides (a
    /// hidden table is refused exactly as one that does not exist).
    func apply(for client: UInt64, access: ClientAccess, capture: CaptureState, broadcaster: Broadcaster) throws(ClientMessageError) -> Outcome {
        switch self {
        case .readyForData:
            let allowed = try access.restrict(.everything).checkingRules(by: capture)
            broadcaster.subscribe(client, to: allowed)
            return .subscribed(allowed)
        case .subscribe(let wanted, let since, let last, let snapshot):
            let allowed = try access.restrict(wanted).checkCaptured(by: capture)
            if snapshot {
                guard let runner = broadcaster.snapshots.withLock({ $0 }) else {
                    throw .snapshot(code: "snapshot_failed", message: "this server takes no snapshots")
                }
                try runner.start(client, subscription: allowed, broadcaster: broadcaster)
                return .subscribed(allowed)
            }
            if !broadcaster.subscribe(client, to: allowed, since: since, last: last) {
                throw .cursorExpired(since, slotLost: since.map { broadcaster.wasLost(before: $0) } ?? false)
            }
            return .subscribed(allowed)
        case .unsubscribe:
            broadcaster.unsubscribe(client)
            return .unsubscribed
        case .ping(let data):
            return .pong(data)
        }
    }
}

/// A close frame's reason is at most 123 bytes of UTF-8.
func closeReason(_ text: String) -> String {
    var reason = Substring(text)
    while reason.utf8.count > 123 { reason = reason.dropLast() }
    return String(reason)
}
