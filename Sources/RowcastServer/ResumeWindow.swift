import NIOCore
import RowcastCore
import RowcastWire

/// The most recent records, encoded, so a client that reconnects with `since` gets
/// what it missed. Bounded by a record count, a byte budget and an age: a record older
/// than the age limit is dropped at the next append or replay.
struct ResumeWindow {
    struct Entry {
        let record: EncodedRecord
        /// When the window received it.
        let at: ContinuousClock.Instant
    }

    let limit: Int
    let byteLimit: Int
    /// Records older than this are dropped; nil keeps them while count and bytes allow.
    let ageLimit: Duration?
    /// Oldest first; an evicted slot is nil at once, so its frame is released then,
    /// not when the array is next compacted.
    private var entries: [Entry?] = []
    private var head = 0
    private var bytes = 0
    /// The cursor of the newest record dropped from the window, if any.
    private var evictedThrough: Cursor?

    /// - Parameter origin: a cursor before every record that will be appended; the
    ///   window covers everything after it until it evicts a record.
    init(limit: Int, byteLimit: Int, ageLimit: Duration? = nil, origin: Cursor? = nil) {
        self.limit = limit
        self.byteLimit = byteLimit
        self.ageLimit = ageLimit
        self.evictedThrough = origin
    }

    /// Drops the records older than the age limit at `now`.
    mutating func expire(now: ContinuousClock.Instant = .now) {
        guard let ageLimit else { return }
        while head < entries.count, let oldest = entries[head], now - oldest.at > ageLimit {
            evictOldest()
        }
    }

    private mutating func evictOldest() {
        if let evicted = entries[head] {
            bytes -= evicted.record.size
            evictedThrough = evicted.record.cursor
        }
        entries[head] = nil
        head += 1
    }

    /// Adds the newest record, then evicts the oldest until the window is within both
    /// its count and its byte budget (one record is kept even when alone it is over).
    mutating func append(_ record: EncodedRecord, at now: ContinuousClock.Instant = .now) {
        guard limit > 0 else {
            evictedThrough = record.cursor
            return
        }
        let entry = Entry(record: record, at: now)
        entries.append(entry)
        bytes += record.size
        while entries.count - head > limit || (bytes > byteLimit && entries.count - head > 1) {
            evictOldest()
        }
        expire(now: entry.at)
        // Compact now and then rather than on every eviction (only empty slots move).
        if head > 1024 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    /// The newest record the window no longer holds (or the origin it started from):
    /// everything up to it may be forgotten by the capture, everything after it is
    /// here. Replication mode confirms the slot up to this point and no further, so a
    /// restarted `serve` rebuilds the same window from the slot.
    var releasedThrough: Cursor? { evictedThrough }

    /// Records held, bytes of their frames, and how long ago the oldest arrived.
    func stats(now: ContinuousClock.Instant = .now) -> (records: Int, bytes: Int, oldestAge: Duration?) {
        (entries.count - head, bytes, entries[head...].first.flatMap { $0 }.map { now - $0.at })
    }

    /// Bytes of frames the window holds: never above `byteLimit` unless one record alone is.
    var retainedFrameBytes: Int {
        entries.reduce(0) { $0 + ($1?.record.size ?? 0) }
    }

    /// The records held before `cursor` (all of them when nil), newest first, found by
    /// binary search: a scan for `last` that goes on where it stopped costs no rescan.
    func held(before cursor: Cursor?) -> some Sequence<EncodedRecord> {
        var low = head, high = entries.count
        if let cursor {
            while low < high {
                let middle = (low + high) / 2
                if let here = entries[middle]?.record.cursor, here < cursor { low = middle + 1 } else { high = middle }
            }
        } else {
            low = entries.count
        }
        return entries[head..<low].reversed().lazy.compactMap { $0?.record }
    }

    /// Whether a replay can still go on from `replay`.
    func holds(_ replay: Broadcaster.Replay, lastCursor: Cursor?) -> Bool {
        switch replay {
        case .after(let cursor): return covers(cursor, lastCursor: lastCursor)
        case .from(let cursor): return oldestCursor.map { $0 <= cursor } ?? false
        }
    }

    /// The cursor of the oldest record held.
    var oldestCursor: Cursor? { entries[head...].first??.record.cursor }

    /// Whether every record after `since` is still here: false when `since` is older
    /// than the window or from another stream, and records after it may be missing.
    func covers(_ since: Cursor, lastCursor: Cursor?) -> Bool {
        if since == lastCursor { return true }
        guard let first = evictedThrough ?? entries[head...].first??.record.cursor, since.kind == first.kind else { return false }
        // A trigger-mode cursor from another rowcast process belongs to another stream.
        if since.kind == .trigger, since.major != first.major { return false }
        return evictedThrough.map { since >= $0 } ?? (since >= first)
    }

    /// The records held after `cursor` (or from it, `inclusive`), oldest first, found by
    /// binary search: a replay that reads on from where it stopped costs no rescan.
    func held(after cursor: Cursor, inclusive: Bool = false) -> some Sequence<EncodedRecord> {
        entries[index(after: cursor, inclusive: inclusive)...].lazy.compactMap { $0?.record }
    }

    /// How many records are held after `cursor`: what a replay from it reads at most.
    func count(after cursor: Cursor) -> Int {
        entries.count - index(after: cursor)
    }

    /// Where the records after `cursor` (or from it) begin, by binary search.
    private func index(after cursor: Cursor, inclusive: Bool = false) -> Int {
        var low = head, high = entries.count
        while low < high {
            let middle = (low + high) / 2
            // Slots from `head` on are never empty.
            let here = entries[middle]?.record.cursor
            if let here, inclusive ? here < cursor : here <= cursor { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The records after `since`, or nil when the window does not cover it (``covers(_:lastCursor:)``).
    func records(after since: Cursor, lastCursor: Cursor?) -> [EncodedRecord]? {
        guard covers(since, lastCursor: lastCursor) else { return nil }
        return Array(held(after: since))
    }
}
