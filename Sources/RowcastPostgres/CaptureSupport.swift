import Foundation
import RowcastCore
import Synchronization

/// Receives records from a capture source, on the source's thread, in stream order.
public protocol RecordSink: AnyObject, Sendable {
    /// Takes one record. Must not block for long: capture waits for it.
    func deliver(_ record: ChangeRecord)
    /// Called after each batch of records the source read at once; a chance to flush.
    func endOfBatch()
}

/// Asks a capture loop to stop; safe to trigger from any thread or a signal handler's queue.
public final class StopSignal: Sendable {
    private let stopped = Atomic<Bool>(false)

    public init() {}

    /// Requests the stop.
    public func stop() { stopped.store(true, ordering: .relaxed) }

    /// Whether a stop was requested.
    public var isStopped: Bool { stopped.load(ordering: .relaxed) }

    /// Sleeps up to `seconds`, waking early when stopped. Returns false when stopped.
    public func sleep(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if isStopped { return false }
            Thread.sleep(forTimeInterval: min(0.05, max(0, deadline.timeIntervalSinceNow)))
        }
        return !isStopped
    }
}

/// What a capture source is doing, for `/healthz` and `/status`.
public final class CaptureState: Sendable {
    private struct Snapshot {
        var connected = false
        var lastError: String?
        var recordsCaptured: UInt64 = 0
        var confirmedLSN: UInt64?
        var serverLSN: UInt64?
    }

    private let snapshot = Mutex(Snapshot())

    public init() {}

    /// Whether the source is connected and capturing.
    public var isConnected: Bool { snapshot.withLock { $0.connected } }
    /// The last connection error, if the source is not connected.
    public var lastError: String? { snapshot.withLock { $0.lastError } }
    /// Records produced since start.
    public var recordsCaptured: UInt64 { snapshot.withLock { $0.recordsCaptured } }

    /// Replication: the last position confirmed to the server.
    public var confirmedLSN: UInt64? { snapshot.withLock { $0.confirmedLSN } }
    /// Replication: bytes of WAL the server has that rowcast has not confirmed yet.
    public var lagBytes: UInt64? {
        snapshot.withLock { state in
            guard let confirmed = state.confirmedLSN, let server = state.serverLSN else { return nil }
            return server > confirmed ? server - confirmed : 0
        }
    }

    func recordPositions(confirmed: UInt64, server: UInt64) {
        snapshot.withLock { $0.confirmedLSN = confirmed; $0.serverLSN = server }
    }

    func markConnected() { snapshot.withLock { $0.connected = true; $0.lastError = nil } }
    func markDisconnected(_ error: String) { snapshot.withLock { $0.connected = false; $0.lastError = error } }
    func count(_ records: Int) { snapshot.withLock { $0.recordsCaptured += UInt64(records) } }
}

/// Reconnection delays: doubling from a quarter second up to ten seconds.
struct Backoff {
    private(set) var next: Double = 0.25

    mutating func take() -> Double {
        defer { next = min(next * 2, 10) }
        return next
    }

    mutating func reset() { next = 0.25 }
}

/// A source of change records: trigger mode's LISTEN loop or replication mode's stream.
public protocol CaptureSource: Sendable {
    /// The mode, reported to clients in `connected`.
    var mode: CaptureMode { get }
    /// Connection state and counters, for `/healthz` and `/status`.
    var state: CaptureState { get }
    /// Captures until `stop` fires, delivering records to `sink` on the calling
    /// thread; reconnects by itself. Blocks: run it on a thread of its own.
    func run(sink: any RecordSink, stop: StopSignal)
}

extension CaptureSource {
    /// Runs the capture on a thread of its own until the task is cancelled or `stop` fires.
    public func runOnThread(sink: any RecordSink, stop: StopSignal = StopSignal()) async {
        await runBlockingOnThread(named: "rowcast-capture", stop: stop) { stop in
            self.run(sink: sink, stop: stop)
        }
    }
}

/// Runs blocking work (libpq calls) on a dedicated thread, off Swift's cooperative
/// pool, and waits for it; cancelling the task fires `stop`.
public func runBlockingOnThread(
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
