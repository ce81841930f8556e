import NIOCore

/// How fast one client's messages are taken (`--client-messages-per-second`): as many
/// as the rate at once, then one every `1/rate` seconds (a token bucket, kept as the
/// time its next message is due, GCRA). A message that comes early waits for its turn
/// instead of being refused: the session reads on only then, so a client that floods
/// is slowed by TCP's own back-pressure, costs nothing while it waits, and a client
/// that only bursts now and then never notices.
struct MessagePace {
    /// Nanoseconds between messages at the steady rate; 0: no limit.
    private let interval: Int64
    /// How far ahead of `now` the schedule may run before a message must wait.
    private let slack: Int64
    /// When the next message is due on the steady schedule.
    private var due: NIODeadline?

    init(perSecond rate: Int) {
        // Saturating: a rate of 0 or above a billion is no limit, never a division trap.
        guard rate > 0, rate < 1_000_000_000 else {
            interval = 0
            slack = 0
            return
        }
        interval = 1_000_000_000 / Int64(rate)
        slack = interval * Int64(rate - 1)
    }

    /// Takes a message arriving at `now`: how long it must wait first, or nil to go at once.
    mutating func wait(now: NIODeadline) -> TimeAmount? {
        guard interval > 0 else { return nil }
        let start = max(due ?? now, now)
        due = start + .nanoseconds(interval)
        let allowed = start - .nanoseconds(slack)
        return allowed > now ? allowed - now : nil
    }
}

extension MessagePace {
    /// Takes a message arriving now and, when it came early, waits its turn on a timer
    /// of `eventLoop` (not the cooperative pool's clock). `counted` hears of each wait.
    mutating func take(on eventLoop: any EventLoop, counted: (() -> Void)? = nil) async {
        guard let delay = wait(now: .now()) else { return }
        counted?()
        try? await eventLoop.scheduleTask(in: delay) {}.futureResult.get()
    }
}
