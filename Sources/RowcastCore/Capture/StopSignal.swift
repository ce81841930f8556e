import Synchronization

/// Asks a capture loop to stop; safe to trigger from any thread or a signal handler's queue.
package final class StopSignal: Sendable {
    private let stopped = Atomic<Bool>(false)

    package init() {}

    /// Requests the stop.
    package func stop() { stopped.store(true, ordering: .relaxed) }

    /// Whether a stop was requested.
    package var isStopped: Bool { stopped.load(ordering: .relaxed) }
}
