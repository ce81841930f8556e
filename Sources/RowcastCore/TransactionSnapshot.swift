/// Which transactions a PostgreSQL snapshot counts as committed: `pg_current_snapshot()`
/// (or `txid_current_snapshot()`) in its text form `xmin:xmax:xip,…`, with 64-bit
/// transaction ids (the epoch in the high 32 bits).
///
/// A transaction is visible in it when its id is below `xmin`, or below `xmax` and not
/// in `xip` (still running when the snapshot was taken). An aborted transaction is
/// never in a stream, so "visible" here means "committed before the snapshot".
package struct TransactionSnapshot: Sendable, Equatable, CustomStringConvertible {
    package let xmin: UInt64
    package let xmax: UInt64
    package let xip: Set<UInt64>

    package init(xmin: UInt64, xmax: UInt64, xip: Set<UInt64>) {
        self.xmin = xmin
        self.xmax = xmax
        self.xip = xip
    }

    /// Parses `xmin:xmax:xip,…`; nil for anything else.
    package init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let xmin = UInt64(parts[0]), let xmax = UInt64(parts[1]), xmin <= xmax else { return nil }
        var xip = Set<UInt64>()
        for item in parts[2].split(separator: ",") {
            guard let xid = UInt64(item) else { return nil }
            xip.insert(xid)
        }
        self.init(xmin: xmin, xmax: xmax, xip: xip)
    }

    package var description: String {
        "\(xmin):\(xmax):" + xip.sorted().map(String.init).joined(separator: ",")
    }

    /// Whether the transaction `xid` (64-bit) had committed when the snapshot was taken.
    package func sees(_ xid: UInt64) -> Bool {
        xid < xmin || (xid < xmax && !xip.contains(xid))
    }

    /// The same for a 32-bit id as a record carries it (`xid`): read as the 64-bit id
    /// nearest `xmax` with those low bits. Any transaction a stream still delivers is
    /// within 2^31 of the server's next id, or the server would have stopped for
    /// wraparound.
    package func sees(xid: UInt32) -> Bool {
        sees(full(xid))
    }

    /// The 64-bit id nearest `xmax` whose low 32 bits are `xid`.
    package func full(_ xid: UInt32) -> UInt64 {
        let distance = Int64(Int32(bitPattern: xid &- UInt32(truncatingIfNeeded: xmax)))
        return distance < 0 ? xmax &- UInt64(-distance) : xmax &+ UInt64(distance)
    }

    /// Whether every transaction `other` sees, this one sees too (it was taken after
    /// `other`, as far as anyone can tell). Conservative: false when it cannot say.
    package func covers(_ other: TransactionSnapshot) -> Bool {
        guard xmax >= other.xmax else { return false }
        // Below our xmin we see everything; from it on, only what is not running.
        for running in xip where other.sees(running) { return false }
        return true
    }
}
