import Foundation
import NIOCore
import RowcastServer
import Testing

/// Delays computed from outside input (a JWT's `exp`) saturate, never trap.
@Suite struct DurationUntilDateTests {
    /// A credential's expiry in the year 9999 (or later than any date) is a delay the
    /// server can schedule, never an overflow.
    @Test func delaysUntilADateSaturate() {
        let tenYears = Duration.seconds(10 * 365 * 86_400)
        #expect(Duration.untilDate(Date(timeIntervalSince1970: 253_402_300_799)) == tenYears)
        #expect(Duration.untilDate(Date(timeIntervalSince1970: 1e300)) == tenYears)
        #expect(Duration.untilDate(.distantFuture) == tenYears)
        #expect(Duration.untilDate(Date(timeIntervalSinceNow: -60)) == .zero)
        #expect(Duration.untilDate(Date(timeIntervalSince1970: .nan)) == .zero)
        let soon = Duration.untilDate(Date(timeIntervalSinceNow: 30))
        #expect(soon > .seconds(29) && soon <= .seconds(30))
        #expect(TimeAmount(tenYears) == .seconds(10 * 365 * 86_400))
    }
}
