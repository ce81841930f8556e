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
    }

    private let rate: Int
    private let state = Mutex(State())

    /// - Parameter rate: requests a second from one address; 0: no limit.
    init(perSecond rate: Int) {
        self.rate = rate
    }

    /// Takes a request from `address` arriving at `now`: how long it must wait first, or nil.
    func wait(for address: ClientAddress, now: NIODeadline = .now()) -> TimeAmount? {
        guard rate > 0 else { return nil }
        return state.withLock { state in
            if state.paces.count > state.pruneAbove {
                state.paces = state.paces.filter { !$0.value.isIdle(now: now) }
                state.pruneAbove = max(1024, state.paces.count * 2)
            }
            return state.paces[address, default: MessagePace(perSecond: rate)].wait(now: now)
        }
    }

    /// Charges window records matched for a client of `address` (a replay, a `last`):
    /// every ``MessagePace/recordsPerTurn`` cost the address a turn, so what one address
    /// can make the server match is bounded however many connections it spreads over.
    func charge(_ address: ClientAddress, examined records: Int, now: NIODeadline = .now()) {
        guard rate > 0, records >= MessagePace.recordsPerTurn else { return }
        state.withLock { $0.paces[address, default: MessagePace(perSecond: rate)].charge(examined: records, now: now, atMost: 60) }
    }

    /// The longest a scan waits for its address's turn: a WebSocket's pongs are read
    /// with its messages, and past about 30 s the server's ping closes it.
    static let maxScanWait: TimeAmount = .seconds(10)

    /// Gives back records charged ahead (``settle(_:reserving:on:counted:)``) that a
    /// scan did not match.
    func refund(_ address: ClientAddress, examined records: Int) {
        guard rate > 0 else { return }
        state.withLock { $0.paces[address]?.refund(examined: records) }
    }

    /// Before a message that scans the window: takes a turn of the address, as a
    /// request does, so it waits until the address's earlier scans are paid for, and
    /// charges ahead the `records` the scan may match (at most a minute's worth), in
    /// the same critical section: scans that an address starts at once wait for each
    /// other, or are refused, before any of them runs. When the wait would be longer
    /// than ``maxScanWait`` it takes no turn and throws: the client is told to retry,
    /// and stays connected. Returns the records charged ahead: the scan draws on them,
    /// charges what it matches beyond them, and gives back what it did not use.
    func settle(
        _ address: ClientAddress, reserving records: Int, on eventLoop: any EventLoop, counted: (() -> Void)? = nil
    ) async throws(ClientMessageError) -> Int {
        guard rate > 0 else { return 0 }
        let now = NIODeadline.now()
        let (delay, turns) = try state.withLock { state throws(ClientMessageError) -> (TimeAmount?, Int) in
            var pace = state.paces[address, default: MessagePace(perSecond: rate)]
            if let owed = pace.peek(now: now), owed > Self.maxScanWait {
                throw .tooManyScans(seconds: Int(owed.nanoseconds / 1_000_000_000) + 1)
            }
            let delay = pace.wait(now: now)
            let turns = pace.charge(examined: records, now: now, atMost: 60)
            state.paces[address] = pace
            return (delay, turns)
        }
        if let delay {
            counted?()
            try? await eventLoop.scheduleTask(in: delay) {}.futureResult.get()
        }
        return turns * MessagePace.recordsPerTurn
    }

    /// Addresses with a pace held (for tests of the pruning).
    var addressesHeld: Int { state.withLock { $0.paces.count } }
}

/// Holds each request until its address's turn (``AddressPace``), on the connection's
/// event loop's timer. The server's graceful shutdown ends the wait (the request is
/// answered then); a client that left meanwhile is not answered at all (a handshake
/// would open a session for no one).
struct AddressPaceMiddleware: RouterMiddleware {
    typealias Context = RowcastRequestContext
    let pace: AddressPace
    let metrics: ServerMetrics?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let delay = pace.wait(for: ClientAddress(context.channel.remoteAddress)) {
            metrics?.requestsPaced.increment()
            let turn = context.channel.eventLoop.scheduleTask(in: delay) {}
            await withGracefulShutdownHandler {
                try? await turn.futureResult.get()
            } onGracefulShutdown: {
                turn.cancel()
            }
            guard context.channel.isActive else { throw HTTPError(.serviceUnavailable, message: "the client left while its request waited its turn") }
        }
        return try await next(request, context)
    }
}
