import Synchronization

/// Asks a capture loop to stop; safe to trigger from any thread or a signal handler's queue.
public final class StopSignal: Sendable {
    private let stopped = Atomic<Bool>(false)

    public init() {}

    /// Requests the stop.
    public func stop() { stopped.store(true, ordering: .relaxed) }

    /// Whether a stop was requested.
    public var isStopped: Bool { stopped.load(ordering: .relaxed) }
}
