import Foundation
import RowcastTestSupport
import Synchronization
import Testing

/// A test that hangs for good, awaiting a continuation that is kept but never resumed
/// and with no deadline of its own: the case make test's watchdog exists for. It runs
/// only when asked (`ROWCAST_TEST_HANG=1`), which `scripts/watchdog-check.sh` does to
/// show that the watchdog ends such a run within its limit, with stacks in the log.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["ROWCAST_TEST_HANG"] == "1", "hangs on purpose: scripts/watchdog-check.sh runs it"))
struct WatchdogTests {
    static let forgotten = Mutex<CheckedContinuation<Void, Never>?>(nil)

    /// Its deadline (a day) is far beyond the watchdog's, so the watchdog ends it, and
    /// the report shows the wait it was in.
    @Test func awaitsAContinuationThatIsNeverResumed() async throws {
        try await within(86_400, "a continuation that nobody resumes", seen: { "nothing, on purpose" }) {
            await withCheckedContinuation { continuation in Self.forgotten.withLock { $0 = continuation } }
        }
    }
}
