import Foundation

/// Why a benchmark stopped: one line, naming what was awaited or what failed and the
/// last words of the child at fault.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String

    init(_ message: String) {
        description = message.split(whereSeparator: \.isNewline).joined(separator: "; ")
    }
}

/// Polls `condition` every `interval` seconds until it holds, as the tests wait: for a
/// port that answers, a 200 from /healthz, a row count reached, never for a fixed time.
/// Fails after `seconds` with what was awaited and what `seen` reports, or as soon as
/// one of `children` has exited (with its last words).
func waitUntil(
    _ awaited: String,
    within seconds: Double = 60,
    every interval: Double = 0.05,
    watching children: [Child] = [],
    seen: () -> String = { "" },
    _ condition: () throws -> Bool
) throws {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while true {
        if try condition() { return }
        for child in children { try child.requireRunning(while: awaited) }
        guard ContinuousClock.now < deadline else {
            let saw = seen()
            throw BenchFailure("waited \(Int(seconds)) s for \(awaited)" + (saw.isEmpty ? "" : "; seen: \(saw)"))
        }
        nap(interval)
    }
}

/// Sleeps the calling thread (nanosleep: nothing of Dispatch's or the cooperative pool's).
func nap(_ seconds: Double) {
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
}

/// Runs `action` on a thread of its own once `seconds` have passed, unless disarmed
/// first: the deadline of a blocking wait (a child's exit) that must not last for ever.
final class Watchdog: @unchecked Sendable {
    private let condition = NSCondition()
    private var disarmed = false
    private var fired = false

    init(seconds: Double, action: @escaping @Sendable () -> Void) {
        let until = Date(timeIntervalSinceNow: seconds)
        Thread { [self] in
            condition.lock()
            defer { condition.unlock() }
            while !disarmed, condition.wait(until: until) {}
            guard !disarmed else { return }
            fired = true
            action()
        }.start()
    }

    /// Stops the watchdog; returns whether it had already fired.
    func disarm() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        disarmed = true
        condition.signal()
        return fired
    }
}
