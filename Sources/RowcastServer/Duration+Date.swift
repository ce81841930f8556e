import Foundation

extension Duration {
    /// The time from now until `date`, a client credential's expiry, say: zero when it
    /// has passed, and at most `cap` (ten years) however far away it is, so that any
    /// `exp` a token carries is a delay a timer can hold. (A token's `exp` in the year
    /// 9999, a common "never expires", once crashed `serve`: the delay overflowed
    /// converting to NIO's nanoseconds, through a conversion of rowcast's own that hid
    /// NIO's clamped `TimeAmount(Duration)`.)
    package static func untilDate(_ date: Date, cap: Duration = .seconds(10 * 365 * 86_400)) -> Duration {
        .seconds(saturating: date.timeIntervalSinceNow, cap: cap)
    }
}

extension Duration {
    /// `seconds` from outside (a flag, a claim) as a duration in whole milliseconds,
    /// saturating: zero for a negative or NaN value, `cap` (ten years) for one beyond it
    /// or infinite, never a trap converting to integers; a positive value is at least a
    /// millisecond (a flag "above 0" must not become 0).
    package static func seconds(saturating seconds: Double, cap: Duration = .seconds(10 * 365 * 86_400)) -> Duration {
        guard seconds > 0 else { return .zero }
        guard seconds < Double(cap.components.seconds) else { return cap }
        return .milliseconds(max(1, Int64((seconds * 1000).rounded(.up))))
    }
}
