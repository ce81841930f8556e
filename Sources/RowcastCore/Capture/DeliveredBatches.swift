/// Trigger mode's memory of what it has delivered, and what it may delete.
///
/// The trigger writes each transaction's changes to `rowcast.changes` under the
/// transaction's id (a batch) and NOTIFYs that id. Anyone can NOTIFY, so a
/// notification is only a hint: a batch already delivered must not be delivered
/// again when someone replays its id. This remembers every batch delivered until its
/// rows are deleted (after `retention`, which gives other rowcast processes listening
/// to the same database time to read them); once deleted, a replay finds nothing.
///
/// It also keeps the horizon for rows no rowcast ever read (written while none was
/// listening): samples of "every transaction before this id had finished by then".
package struct DeliveredBatches: Sendable {
    /// How long delivered rows stay for other listeners, in seconds.
    package let retention: Double
    /// How long rows nobody delivered stay, in seconds.
    package let orphanRetention: Double

    private var delivered: Set<Int64> = []
    /// Batches in delivery order with the time each was delivered.
    private var queue: [(batch: Int64, at: Double)] = []
    private var head = 0
    /// (time, oldest transaction id still running at that time), oldest first.
    private var horizons: [(at: Double, xmin: Int64)] = []

    package init(retention: Double, orphanRetention: Double) {
        self.retention = retention
        self.orphanRetention = max(orphanRetention, retention)
    }

    /// Whether `batch` was delivered and its rows may still be read.
    package func contains(_ batch: Int64) -> Bool { delivered.contains(batch) }

    /// How many batches are remembered.
    package var count: Int { delivered.count }

    /// Records that `batch` was delivered at `now`.
    package mutating func insert(_ batch: Int64, at now: Double) {
        guard delivered.insert(batch).inserted else { return }
        queue.append((batch, now))
    }

    /// Forgets and returns the batches delivered more than `retention` before `now`:
    /// the caller deletes their rows, after which a replay reads nothing.
    package mutating func takeExpired(at now: Double, limit: Int = 10_000) -> [Int64] {
        var expired: [Int64] = []
        while head < queue.count, expired.count < limit, queue[head].at <= now - retention {
            expired.append(queue[head].batch)
            delivered.remove(queue[head].batch)
            head += 1
        }
        if head > 4096, head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return expired
    }

    /// Notes that every transaction with an id below `xmin` had finished at `now`.
    package mutating func noteHorizon(xmin: Int64, at now: Double) {
        horizons.append((now, xmin))
    }

    /// The id below which rows belong to transactions that finished more than
    /// `orphanRetention` ago, if such a sample exists; older samples are dropped.
    package mutating func orphanHorizon(at now: Double) -> Int64? {
        var found: Int64?
        while let first = horizons.first, first.at <= now - orphanRetention {
            found = first.xmin
            horizons.removeFirst()
        }
        return found
    }
}
