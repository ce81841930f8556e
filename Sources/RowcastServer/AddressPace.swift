import Hummingbird
import NIOCore
import RowcastWire
import ServiceLifecycle
import Synchronization

/// How fast one address's HTTP requests are taken (`--requests-per-second-per-address`):
/// as many as the rate at once, then one every `1/rate` seconds, over all of the
/// address's connections (an IPv6 /64 is one address, as for the connection limits).
/// A request that comes early waits its turn before it is handled: its connection reads
/// nothing more meanwhile, so a client that floods (Engine.IO handshakes, `/events`
/// with `last`, upgrades) is slowed by TCP's back-pressure whatever number of
/// connections it spreads the flood over, and costs the server nothing while it waits.
/// WebSocket frames and Socket.IO packets are paced per connection instead
/// (``MessagePace``, ``WebSocketFramePace``).
final class AddressPace: Sendable {
    private struct State {
        var paces: [ClientAddress: MessagePace] = [:]
        /// Above this many addresses, those whose pace is back to a full burst are forgotten.
        var pruneAbove = 1024
        /// Waits for a turn under way, by number: the server's shutdown ends them.
        var waits: [UInt64: Scheduled<Void>] = [:]
        var lastWait: UInt64 = 0
        /// The server is shutting down: nothing waits any more.
        var closing = false
    }

    /// A request's turn: at once, after a wait, refused with the seconds to retry in, or
    /// none: the server is shutting down.
    enum Turn: Equatable {
        case now
        case after(TimeAmount)
        case refused(seconds: Int)
        case closing
    }

    /// The longest a request, or a message that scans the window, waits for its turn:
    /// a request that would wait longer is held that long, then refused, and takes no
    /// turn (its connection would sit unread for longer, a client that left unseen; a
    /// scan is refused at once, as a WebSocket's pongs are read with its messages and
    /// past about 30 s the ping closes it).
    static let maxWait: TimeAmount = .seconds(10)

    private let rate: Int
    private let state = Mutex(State())

    /// - Parameter rate: requests a second from one address; 0: no limit.
    init(perSecond rate: Int) {
        self.rate = rate
    }

    /// Takes a request from `address` arriving at `now`: at once, after a wait, or
    /// refused when the wait would be longer than ``maxWait`` (taking no turn).
    func turn(for address: ClientAddress, now: NIODeadline = .now()) -> Turn {
        guard rate > 0 else { return .now }
        return state.withLock { state in
            guard !state.closing else { return .closing }
            if state.paces.count > state.pruneAbove {
                state.paces = state.paces.filter { !$0.value.isIdle(now: now) }
                state.pruneAbove = max(1024, state.paces.count * 2)
            }
            var pace = state.paces[address, default: MessagePace(perSecond: rate)]
            if let owed = pace.peek(now: now), owed > Self.maxWait { return .refused(seconds: Self.seconds(owed)) }
            let delay = pace.wait(now: now)
            state.paces[address] = pace
            return delay.map { .after($0) } ?? .now
        }
    }

    private static func seconds(_ owed: TimeAmount) -> Int { Int(owed.nanoseconds / 1_000_000_000) + 1 }

    /// Waits `delay` on a timer of `eventLoop`, or until the server shuts down (``shutDown()``).
    func hold(_ delay: TimeAmount, on eventLoop: any EventLoop) async {
        let timer = eventLoop.scheduleTask(in: delay) {}
        let number = state.withLock { state -> UInt64? in
            guard !state.closing else { return nil }
            state.lastWait += 1
            state.waits[state.lastWait] = timer
            return state.lastWait
        }
        guard let number else {
            timer.cancel()
            return
        }
        try? await timer.futureResult.get()
        state.withLock { _ = $0.waits.removeValue(forKey: number) }
    }

    /// The server is shutting down: every wait for a turn ends now, and none starts.
    /// (A request's task does not hear the server's graceful shutdown: an upgrade is
    /// decided outside it.)
    func shutDown() {
        let waits = state.withLock { state in
            state.closing = true
            defer { state.waits = [:] }
            return Array(state.waits.values)
        }
        for wait in waits { wait.cancel() }
    }

    var isShuttingDown: Bool { state.withLock { $0.closing } }

    /// Charges window records matched for a client of `address` (a replay, a `last`):
    /// every ``MessagePace/recordsPerTurn`` cost the address a turn, so what one address
    /// can make the server match is bounded however many connections it spreads over.
    func charge(_ address: ClientAddress, examined records: Int, now: NIODeadline = .now()) {
        guard rate > 0, records >= MessagePace.recordsPerTurn else { return }
        state.withLock { $0.paces[address, default: MessagePace(perSecond: rate)].charge(examined: records, now: now, atMost: 60) }
    }

    /// Records a scan paid for ahead, and when the address's schedule ran until once
    /// they were charged: what is given back later is only what is still ahead.
    struct Prepayment {
        var records = 0
        var until = NIODeadline.uptimeNanoseconds(0)
    }

    /// Gives back records charged ahead (``settle(_:reserving:on:counted:)``) that a
    /// scan did not match, as far as the time they bought is still ahead.
    func refund(_ address: ClientAddress, _ unused: Prepayment) {
        guard rate > 0 else { return }
        state.withLock { $0.paces[address]?.refund(examined: unused.records, until: unused.until) }
    }

    /// Before a message that scans the window: takes a turn of the address, as a
    /// request does, so it waits until the address's earlier scans are paid for, and
    /// charges ahead the `records` the scan may match (at most a minute's worth), in
    /// the same critical section: scans that an address starts at once wait for each
    /// other, or are refused, before any of them runs. When the wait would be longer
    /// than ``maxWait`` it takes no turn and throws: the client is told to retry,
    /// and stays connected. Returns the records charged ahead: the scan draws on them,
    /// charges what it matches beyond them, and gives back what it did not use.
    /// The server's shutdown ends the wait.
    func settle(
        _ address: ClientAddress, reserving records: Int, on eventLoop: any EventLoop, counted: (() -> Void)? = nil
    ) async throws(ClientMessageError) -> Prepayment {
        guard rate > 0 else { return Prepayment() }
        let now = NIODeadline.now()
        let (delay, paid) = try state.withLock { state throws(ClientMessageError) -> (TimeAmount?, Prepayment) in
            var pace = state.paces[address, default: MessagePace(perSecond: rate)]
            if let owed = pace.peek(now: now), owed > Self.maxWait { throw .tooManyScans(seconds: Self.seconds(owed)) }
            let delay = pace.wait(now: now)
            let turns = pace.charge(examined: records, now: now, atMost: 60)
            state.paces[address] = pace
            return (delay, Prepayment(records: turns * MessagePace.recordsPerTurn, until: pace.dueTime ?? now))
        }
        if let delay {
            counted?()
            await hold(delay, on: eventLoop)
        }
        return paid
    }

    /// Addresses with a pace held (for tests of the pruning).
    var addressesHeld: Int { state.withLock { $0.paces.count } }
}

/// Holds each request until its address's turn (``AddressPace``), on the connection's
/// event loop's timer, or, when that would be more than ``AddressPace/maxWait`` away,
/// holds it that long and refuses it with 429 and `Retry-After` (taking no turn). The
/// server's shutdown ends the wait, and the request is answered 503 then (as is any
/// that comes after); a client that left meanwhile is not answered at all (a
/// handshake would open a session for no one).
struct AddressPaceMiddleware: RouterMiddleware {
    typealias Context = RowcastRequestContext
    let pace: AddressPace
    let metrics: ServerMetrics?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        switch pace.turn(for: ClientAddress(context.channel.remoteAddress)) {
        case .now:
            break
        case .closing:
            throw HTTPError(.serviceUnavailable, message: "the server is shutting down")
        case .refused(let seconds):
            // Held as long as a request may wait, then refused: a refusal costs its
            // connection the longest wait, or a client could be refused as fast as it
            // asks (pipelined on keep-alive connections: 43,000 a second).
            metrics?.requestsPaced.increment()
            await pace.hold(AddressPace.maxWait, on: context.channel.eventLoop)
            guard context.channel.isActive else { throw HTTPError(.serviceUnavailable, message: "the client left while its request was held") }
            if pace.isShuttingDown { throw HTTPError(.serviceUnavailable, message: "the server is shutting down") }
            throw HTTPError(
                .tooManyRequests, headers: [.retryAfter: String(max(1, seconds - 10))],
                message: "too many requests from this address: retry in \(max(1, seconds - 10)) s (--requests-per-second-per-address)"
            )
        case .after(let delay):
            metrics?.requestsPaced.increment()
            await pace.hold(delay, on: context.channel.eventLoop)
            guard context.channel.isActive else { throw HTTPError(.serviceUnavailable, message: "the client left while its request waited its turn") }
            if pace.isShuttingDown { throw HTTPError(.serviceUnavailable, message: "the server is shutting down") }
        }
        return try await next(request, context)
    }
}
