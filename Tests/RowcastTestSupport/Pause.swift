import NIOCore
import NIOPosix

/// Waits `duration` on a SwiftNIO event loop's timer instead of Dispatch's.
///
/// In a busy test process on Linux, Dispatch's timer for the continuous clock (a
/// `CLOCK_BOOTTIME` timerfd) has been seen left disarmed with an expiry never read:
/// from then on every `Task.sleep(for:)` in the process waits for ever, and the suite
/// hangs with every thread idle. The tests poll for conditions with this instead; NIO
/// keeps its own timers on its own epoll. Cancellation ends the wait, as with
/// `Task.sleep`.
package func pause(for duration: Duration) async throws {
    try Task.checkCancellation()
    let nanoseconds = duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    let scheduled = testTimers.next().scheduleTask(in: .nanoseconds(nanoseconds)) {}
    try await withTaskCancellationHandler {
        try await scheduled.futureResult.get()
    } onCancel: {
        scheduled.cancel()
    }
}

/// The event loop that keeps the tests' own timers (pauses and deadlines): one of its
/// own, not the singleton group that servers and clients under test run on, so that a
/// bug blocking their event loops cannot also stop the deadlines meant to catch it.
let testTimers = MultiThreadedEventLoopGroup(numberOfThreads: 1)

/// `seconds` as a duration, saturating: a negative or NaN value is zero, an infinite or
/// huge one a day.
func clampedDuration(seconds: Double) -> Duration {
    .milliseconds(Int64(seconds.isNaN ? 0 : max(0, min(seconds, 86_400)) * 1000))
}
