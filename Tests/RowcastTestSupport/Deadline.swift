import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A wait in a test that outlived its deadline: what was awaited, for how long, and
/// what the test had seen by then. Its description is the failure message, so it says
/// all three in a few lines.
package struct DeadlinePassed: Error, CustomStringConvertible {
    package let awaited: String
    package let seconds: Double
    package let seen: String

    package init(awaited: String, seconds: Double, seen: String) {
        self.awaited = awaited
        self.seconds = seconds
        self.seen = seen
    }

    package var description: String {
        let seconds = seconds.isFinite && seconds.rounded() == seconds && abs(seconds) < 1e15 ? String(Int(seconds)) : String(seconds)
        return "waited \(seconds) s for \(awaited)" + (seen.isEmpty ? "" : "; seen: \(seen.suffix(1500))")
    }
}

/// Runs `body` and returns what it returns, or fails with `DeadlinePassed` once
/// `seconds` have passed.
///
/// The deadline is a SwiftNIO timer on an event loop of the tests' own, armed before the
/// wait starts, so it fires even when Dispatch's timers or the cooperative pool have
/// stalled (both have been seen to, see Docs/development.md). The caller then resumes
/// on the pool: blocking work belongs in `onThread`, or it delays every deadline. It does not need `body` to honour cancellation: when the
/// deadline passes the caller resumes at once, and `body` is cancelled and left to end
/// on its own. `seen` is asked, on the timer's thread, for what had been received.
package func within<T: Sendable>(
    _ seconds: Double,
    _ awaited: @autoclosure () -> String,
    seen: @escaping @Sendable () -> String = { "" },
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let race = Race<T>(DeadlinePassed(awaited: awaited(), seconds: seconds, seen: ""), seen: seen)
    let pending = PendingWaits.add(race.awaited, seen: seen)
    defer { PendingWaits.remove(pending) }
    return try await race.run(seconds: seconds) {
        Task {
            do { race.finish(.success(try await body())) } catch { race.finish(.failure(error)) }
        }
    }
}

/// Runs blocking work (libpq, a child process, a raw socket) on a thread of its own, off
/// the cooperative pool, and fails with `DeadlinePassed` once `seconds` have passed.
/// The thread cannot be stopped; it is left to end on its own.
package func onThread<T: Sendable>(
    _ awaited: @autoclosure () -> String,
    within seconds: Double = 120,
    seen: @escaping @Sendable () -> String = { "" },
    _ body: @escaping @Sendable () throws -> T
) async throws -> T {
    let race = Race<T>(DeadlinePassed(awaited: awaited(), seconds: seconds, seen: ""), seen: seen)
    let pending = PendingWaits.add(race.awaited + " (on a thread)", seen: seen)
    defer { PendingWaits.remove(pending) }
    return try await race.run(seconds: seconds) {
        Thread { race.finish(Result { try body() }) }.start()
        return nil
    }
}

/// Polls `condition` every `interval` until it holds; fails with `DeadlinePassed`
/// (naming `awaited` and what `seen` reports) when it still does not after `seconds`.
/// Each poll must bound its own waits.
package func eventually(
    _ awaited: @autoclosure () -> String,
    within seconds: Double = 60,
    interval: Duration = .milliseconds(50),
    seen: @Sendable () -> String = { "" },
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + clampedDuration(seconds: seconds)
    let pending = PendingWaits.add(awaited(), seen: { "" })
    defer { PendingWaits.remove(pending) }
    while true {
        if try await condition() { return }
        // The clock is only read here, never slept on: pause(for:) sleeps on NIO.
        guard ContinuousClock.now < deadline else {
            throw DeadlinePassed(awaited: awaited(), seconds: seconds, seen: seen())
        }
        try await pause(for: interval)
    }
}

/// One wait's outcome: the body's result or the deadline, whichever comes first, and
/// the continuation resumed exactly once.
private final class Race<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var outcome: Result<T, any Error>?
        var timer: Scheduled<Void>?
        var work: Task<Void, Never>?
    }

    private let state = Mutex(State())
    private let timeout: DeadlinePassed
    var awaited: String { timeout.awaited }
    private let seen: @Sendable () -> String

    init(_ timeout: DeadlinePassed, seen: @escaping @Sendable () -> String) {
        self.timeout = timeout
        self.seen = seen
    }

    /// Arms the timer, starts the work, and waits for whichever ends first.
    func run(seconds: Double, start: @Sendable () -> Task<Void, Never>?) async throws -> T {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let early: Result<T, any Error>? = state.withLock {
                    if let outcome = $0.outcome { return outcome }
                    $0.continuation = continuation
                    return nil
                }
                if let early { return continuation.resume(with: early) }
                let (whole, fraction) = clampedDuration(seconds: seconds).components
                let timer = testTimers.next().scheduleTask(in: .nanoseconds(whole * 1_000_000_000 + fraction / 1_000_000_000)) {
                    self.finish(.failure(DeadlinePassed(awaited: self.timeout.awaited, seconds: self.timeout.seconds, seen: self.seen())))
                }
                let work = start()
                let cancelNow = state.withLock {
                    $0.timer = timer
                    $0.work = work
                    return $0.outcome != nil
                }
                if cancelNow {
                    timer.cancel()
                    work?.cancel()
                }
            }
        } onCancel: {
            finish(.failure(CancellationError()))
        }
    }

    /// Records the first outcome and resumes the waiter with it; later ones are ignored.
    func finish(_ outcome: Result<T, any Error>) {
        let (continuation, timer, work): (CheckedContinuation<T, any Error>?, Scheduled<Void>?, Task<Void, Never>?) = state.withLock { state in
            guard state.outcome == nil else { return (nil, nil, nil) }
            state.outcome = outcome
            let continuation = state.continuation
            state.continuation = nil
            return (continuation, state.timer, state.work)
        }
        timer?.cancel()
        if case .failure = outcome { work?.cancel() }
        continuation?.resume(with: outcome)
    }
}

/// `conninfo` (a URI or key=value string) with a statement and lock timeout, for the
/// tests' own connections: a statement that waits on a lock for ever would hold a thread
/// of the cooperative pool for ever, and with both of this machine's held no deadline
/// in the process could resume its test.
package func boundedConninfo(_ conninfo: String) -> String {
    if conninfo.hasPrefix("postgres://") || conninfo.hasPrefix("postgresql://") {
        let options = "options=-c%20statement_timeout%3D120s%20-c%20lock_timeout%3D60s"
        return conninfo + (conninfo.contains("?") ? "&" : "?") + options
    }
    return conninfo + " options='-c statement_timeout=120s -c lock_timeout=60s'"
}

/// The waits in progress in this process, written every two seconds to the file that
/// `ROWCAST_TEST_WAITS` names (make test sets it), for the watchdog's report. A hung run
/// leaves no stack frame of an `await` behind; this says what each test was waiting for,
/// since when, and what it had seen, even when no thread of the pool is left to report.
enum PendingWaits {
    private struct Wait {
        let awaited: String
        let since: ContinuousClock.Instant
        let seen: @Sendable () -> String
    }

    private static let waits = Mutex<(next: UInt64, all: [UInt64: Wait])>((0, [:]))

    /// The thread that writes the file, started with the first wait.
    private static let writer: Void = {
        guard let path = ProcessInfo.processInfo.environment["ROWCAST_TEST_WAITS"], !path.isEmpty else { return }
        let thread = Thread {
            while true {
                Thread.sleep(forTimeInterval: 2)
                let now = ContinuousClock.now
                let lines = waits.withLock { $0.all.values.map { $0 } }
                    .sorted { $0.since < $1.since }
                    .map { wait -> String in
                        let age = now - wait.since
                        // What was seen, for waits that have lasted: asking costs a little.
                        let seen = age > .seconds(10) ? wait.seen() : ""
                        return "  \(age.components.seconds) s: \(wait.awaited)" + (seen.isEmpty ? "" : "; seen: \(seen.suffix(300))")
                    }
                let text = lines.isEmpty ? "  (none)\n" : lines.joined(separator: "\n") + "\n"
                try? text.write(toFile: path + ".new", atomically: false, encoding: .utf8)
                rename(path + ".new", path)
            }
        }
        thread.name = "pending-waits"
        thread.start()
    }()

    static func add(_ awaited: String, seen: @escaping @Sendable () -> String) -> UInt64 {
        _ = writer
        return waits.withLock {
            $0.next += 1
            $0.all[$0.next] = Wait(awaited: awaited, since: .now, seen: seen)
            return $0.next
        }
    }

    static func remove(_ id: UInt64) { _ = waits.withLock { $0.all.removeValue(forKey: id) } }
}
