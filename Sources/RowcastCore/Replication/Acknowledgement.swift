/// The one owner of "what may be acknowledged" to a replication slot.
///
/// A WAL position may be confirmed (the flush LSN of a standby status update) only
/// when every record before it has been *delivered*: written by `tail`, accepted by
/// `serve`'s broadcaster. The capture says which positions it has passed and what it
/// had handed to the sink by then (``reach(_:after:)``); the sink says what it really
/// delivered (``sinkDelivered(through:)``). A position is confirmed once the sink has
/// delivered everything handed before it, never earlier, and never moves back.
///
/// Pure and bounded: one pending entry per distinct "handed through" cursor, merged
/// when nothing new was handed in between.
package struct Acknowledgement: Sendable, Equatable {
    private struct Pending: Sendable, Equatable {
        /// The last record handed to the sink before `position` was passed.
        var through: Cursor?
        var position: UInt64
    }

    /// The position that may be confirmed to the server now: what the sink delivered
    /// allows, within what it durably kept (``sinkKept(_:)``), never below the start.
    package var confirmed: UInt64 {
        guard let kept else { return passedDelivered }
        return max(start, min(passedDelivered, kept))
    }
    /// The furthest position every record before which was delivered.
    private var passedDelivered: UInt64
    /// Where the slot was at start.
    private let start: UInt64
    /// The furthest position the sink durably kept, when it keeps records itself.
    private var kept: UInt64?
    /// The furthest position passed with every record before it handed to the sink.
    package private(set) var reached: UInt64 = 0
    /// The highest WAL position the server has reported or sent.
    package private(set) var received: UInt64 = 0
    /// The last record the sink reported delivered.
    package private(set) var delivered: Cursor?
    private var pending: [Pending] = []
    private var head = 0

    /// - Parameter confirmed: where the slot already is (0 when unknown).
    package init(confirmed: UInt64 = 0) {
        self.passedDelivered = confirmed
        self.start = confirmed
    }

    /// The sink durably kept every record before `position` (nil: the sink keeps
    /// nothing of its own, or no longer does; delivered is final).
    package mutating func sinkKept(_ position: UInt64?) {
        guard let position else {
            kept = nil
            return
        }
        kept = max(kept ?? 0, position)
    }

    /// The server has WAL up to `position` (for the status update's written LSN and lag).
    package mutating func receive(_ position: UInt64) {
        received = max(received, position)
    }

    /// The capture has passed `position`: every record before it has been handed to
    /// the sink, the last of them being `through` (nil when none was handed yet).
    package mutating func reach(_ position: UInt64, after through: Cursor?) {
        received = max(received, position)
        reached = max(reached, position)
        guard position > passedDelivered else { return }
        if head == pending.count, isDelivered(through) {
            passedDelivered = position
            return
        }
        if head < pending.count, pending[pending.count - 1].through == through {
            pending[pending.count - 1].position = max(pending[pending.count - 1].position, position)
        } else {
            pending.append(Pending(through: through, position: position))
        }
    }

    /// The sink delivered every record up to and including `through`.
    package mutating func sinkDelivered(through: Cursor?) {
        if let through, delivered.map({ through > $0 }) ?? true { delivered = through }
        while head < pending.count, isDelivered(pending[head].through) {
            passedDelivered = max(passedDelivered, pending[head].position)
            head += 1
        }
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64, head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
    }

    /// Positions passed but waiting for the sink.
    package var waiting: Int { pending.count - head }

    private func isDelivered(_ through: Cursor?) -> Bool {
        guard let through else { return true }
        guard let delivered else { return false }
        return through <= delivered
    }
}
