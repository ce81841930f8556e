import Foundation
import Logging
import RowcastCore

extension StopSignal {
    /// Sleeps up to `seconds`, waking early when stopped. Returns false when stopped.
    package func sleep(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if isStopped { return false }
            Thread.sleep(forTimeInterval: min(0.05, max(0, deadline.timeIntervalSinceNow)))
        }
        return !isStopped
    }
}

/// Reconnection delays: doubling from a quarter second up to ten seconds. The one
/// backoff both capture loops use.
struct Backoff {
    private(set) var next: Double = 0.25

    mutating func take() -> Double {
        defer { next = min(next * 2, 10) }
        return next
    }

    mutating func reset() { next = 0.25 }
}

/// Runs blocking work (libpq calls) on a dedicated thread, off Swift's cooperative
/// pool, and waits for it; cancelling the task fires `stop`.
package func runBlockingOnThread(
    named name: String,
    stop: StopSignal,
    _ body: @escaping @Sendable (StopSignal) -> Void
) async {
    await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                body(stop)
                continuation.resume()
            }
            thread.name = name
            thread.start()
        }
    } onCancel: {
        stop.stop()
    }
}

/// A capture source whose loop can run on a thread the caller owns (the CLI's
/// `tail`, tests that must not depend on the cooperative pool being free).
package protocol BlockingCaptureSource: CaptureSource {
    /// Captures on the calling thread until `stop` fires or the sink fails.
    func runBlocking(sink: any RecordSink, stop: StopSignal)
}

/// The reconnect loop both capture sources share: run `work` on the connection
/// while it lasts; when it fails, log it, mark the capture disconnected, and
/// reconnect with ``Backoff`` until `finished` says so or `stop` fires.
struct ReconnectLoop {
    let state: CaptureState
    let logger: Logger
    let stop: StopSignal

    /// - Parameters:
    ///   - connection: the connection made at start-up, if any.
    ///   - reconnect: opens a new connection ready for `work` (LISTEN, START_REPLICATION).
    ///   - reconnected: what to log once it did.
    ///   - finished: whether to end; checked before each round.
    ///   - work: one round on the connection; throwing means the connection is lost.
    ///   - lost: called after a connection is lost, before reconnecting.
    func run(
        connection first: PostgresConnection?,
        reconnect: () throws -> PostgresConnection,
        reconnected: String,
        finished: () -> Bool,
        work: (PostgresConnection) throws -> Void,
        lost: () -> Void = {}
    ) {
        var connection = first
        var backoff = Backoff()
        while !finished() {
            guard let current = connection else {
                guard stop.sleep(seconds: backoff.take()) else { break }
                do {
                    connection = try reconnect()
                    backoff.reset()
                    state.markConnected()
                    logger.warning("\(reconnected)")
                } catch {
                    state.markDisconnected("\(error)")
                    // A lost slot was named once, with its fix, by the capture.
                    if error is SlotLost { logger.debug("cannot reconnect yet: \(error)") } else { logger.warning("cannot reconnect yet: \(error)") }
                }
                continue
            }
            do {
                try work(current)
            } catch {
                logger.error("\(error); reconnecting")
                state.markDisconnected("\(error)")
                current.close()
                connection = nil
                lost()
            }
        }
        connection?.close()
        state.markDisconnected("stopped")
    }
}
