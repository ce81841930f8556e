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
    let scheduled = MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: .nanoseconds(nanoseconds)) {}
    try await withTaskCancellationHandler {
        try await scheduled.futureResult.get()
    } onCancel: {
        scheduled.cancel()
    }
}
