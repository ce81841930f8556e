import Foundation
import NIOCore
import RowcastCore
import RowcastWire

/// The broadcaster's side of a snapshot (SPEC section 4, "Snapshot, then live"; the
/// reading itself is ``SnapshotRunner``'s). While its rows are read the client gets no
/// live record; the boundary is a cursor such that every matching record up to it is
/// of a transaction the snapshot sees and every later one of a transaction it does not;
/// after the rows, `snapshot_end` names that cursor, and the client replays the window
/// from it and goes live, as a `since` does.
extension Broadcaster {
    /// What a snapshot's reader waits on: room in the client's queue, or the end of the
    /// client (or of its snapshot). `cancel` wakes it at once, so a client that leaves
    /// mid-snapshot frees its connection to PostgreSQL without waiting for a timeout.
    final class SnapshotGate: @unchecked Sendable {
        /// The stream's position when the snapshot was asked for (before it was taken):
        /// every record after it is of a transaction that committed after that moment.
        let start: Cursor?
        /// What the reader gives back when it ends (``SnapshotSlots``).
        let slot: SnapshotSlots.Slot
        private let condition = NSCondition()
        private var signaled = false
        private var cancelled = false
        private var slotGiven = false

        /// Gives the slot back to `slots`, once: as soon as the snapshot's transaction
        /// ended (before `snapshot_end`, so that a client told the snapshot ended may take
        /// another at once), or when the reader's thread ends.
        func giveBack(to slots: SnapshotSlots) {
            condition.lock()
            let first = !slotGiven
            slotGiven = true
            condition.unlock()
            if first { slots.give(back: slot) }
        }

        init(start: Cursor?, slot: SnapshotSlots.Slot) {
            self.start = start
            self.slot = slot
        }

        func signal() {
            condition.lock()
            signaled = true
            condition.broadcast()
            condition.unlock()
        }

        func cancel() {
            condition.lock()
            cancelled = true
            condition.broadcast()
            condition.unlock()
        }

        var isCancelled: Bool {
            condition.lock()
            defer { condition.unlock() }
            return cancelled
        }

        /// Waits until signalled or cancelled, or `seconds` went by.
        func wait(seconds: Double) {
            condition.lock()
            if !signaled, !cancelled { _ = condition.wait(until: Date(timeIntervalSinceNow: seconds)) }
            signaled = false
            condition.unlock()
        }
    }

    /// Ends a client's snapshot, if one runs (a new subscription replaces it).
    func cancelSnapshot(_ id: UInt64, in state: inout State) {
        guard let gate = state.clients[id]?.snapshot else { return }
        gate.cancel()
        state.clients[id]?.snapshot = nil
    }

    /// Starts a snapshot subscription: the client's `subscribed` is queued (its cursor is
    /// the stream's position now, for information: `snapshot_end`'s is the one to resume
    /// from), and live records wait. Throws when `slots` has none free, in all or for
    /// the client's address; the gate holds its slot until its reader lets it go.
    func beginSnapshot(_ id: UInt64, to subscription: Subscription, slots: SnapshotSlots) throws(ClientMessageError) -> (SnapshotGate, Framing)? {
        var wakes: [ClientQueue] = []
        defer { for queue in wakes { queue.wake() } }
        return try state.withLock { state throws(ClientMessageError) -> (SnapshotGate, Framing)? in
            guard let client = state.clients[id] else { return nil }
            // Refused, the subscription before it stays as it was (a snapshot being sent
            // goes on): as any refused subscribe leaves the previous one.
            guard let slot = slots.take(for: client.control.account?.address) else {
                throw .snapshot(code: "too_many_snapshots", message: slots.refusal(for: client.control.account?.address))
            }
            cancelSnapshot(id, in: &state)
            let gate = SnapshotGate(start: state.lastCursor, slot: slot)
            state.clients[id]?.snapshot = gate
            state.setReplay(id, nil)
            state.clients[id]?.skipThrough = nil
            subscribe(id, to: subscription, in: &state, wakes: &wakes)
            client.control.setReplaying(true)
            var subscribed = ServerMessage.subscribed(subscription, cursor: state.lastCursor?.description)
            // Socket.IO keeps the last string of each event as the offset it recovers from:
            // one that is no cursor, so that a session dropped before `snapshot_end` is
            // not recovered (half a snapshot and the changes after its offset would not
            // add up to the table); the page subscribes again.
            subscribed.offset = "snapshot"
            if let bytes = client.framing.frame(subscribed) {
                enqueue(Outgoing(bytes), to: id, in: &state, wakes: &wakes)
            }
            return (gate, client.framing)
        }
    }

    /// Whether the capture has handed over every transaction `visibility` sees: it
    /// passed `walPosition` (replication), or delivered a window whose snapshot covers
    /// it (trigger).
    func hasPassed(_ visibility: TransactionSnapshot, walPosition: UInt64?) -> Bool {
        horizon.withLock { horizon in
            if let walPosition { return horizon.position >= walPosition }
            return horizon.visible?.covers(visibility) ?? false
        }
    }

    /// Where a snapshot's stream goes on, once the capture has passed it.
    enum SnapshotBoundary: Equatable {
        /// After this cursor (nil: from the window's oldest record on).
        case after(Cursor?)
        /// A transaction the snapshot does not see came before one it sees: take
        /// another snapshot (a commit that reached the stream before it reached the
        /// snapshot, as with a synchronous standby's wait).
        case interleaved
        /// The window no longer reaches back to where the snapshot began, and holds
        /// no record the snapshot sees: what it let go of may have been needed.
        case expired
        /// The client left, or its snapshot was replaced.
        case gone
    }

    /// How many records before the snapshot began its boundary search still checks for a
    /// transaction the snapshot does not see (a commit streamed before it was visible,
    /// as while a synchronous standby is waited for): the rest of a large window is
    /// taken as delivered before the snapshot, as it was.
    static let checkedBeforeSnapshot = 1_000

    /// Finds the boundary for `gate`'s snapshot: walks the window newest first, a chunk
    /// at a time, over the records the subscription matches. The newest one of a
    /// transaction the snapshot sees is the boundary; any older one it does not see
    /// means there is none. Records without a transaction (messages) do not count.
    /// With no record the snapshot sees, the boundary is where the window begins, if the
    /// window still reaches back to where the snapshot began (every record before that
    /// was delivered before the snapshot was taken); otherwise records the snapshot does
    /// not see may have been let go already.
    func snapshotBoundary(for id: UInt64, gate: SnapshotGate, visibility: TransactionSnapshot) -> SnapshotBoundary {
        var before: Cursor?
        var boundary: Cursor?
        var found = false
        // Past where the snapshot began, a transaction it does not see is one whose commit
        // reached the stream before it became visible: checked this much further back.
        var checkedBeforeStart = 0
        var matchedBeforeStart = false
        while true {
            let step = state.withLock { state -> SnapshotBoundary? in
                guard let client = state.clients[id], client.snapshot === gate, let subscription = client.subscription else { return .gone }
                state.window.expire()
                // Not charged to the address: at most what arrived while the snapshot was
                // taken and ``checkedBeforeSnapshot`` more, and snapshots at once are few.
                var examined = 0
                for record in state.window.held(before: before) {
                    if examined == Self.scanChunk { return nil }
                    examined += 1
                    before = record.cursor
                    if let start = gate.start, record.cursor <= start {
                        checkedBeforeStart += 1
                        // Far enough: with a boundary found, everything before is the
                        // snapshot's; with none and no matching record here at all,
                        // where the snapshot began is one (a large window is not walked
                        // whole for a filter that matches nothing).
                        if checkedBeforeStart > Self.checkedBeforeSnapshot {
                            if found { return .after(boundary) }
                            if !matchedBeforeStart { return .after(start) }
                        }
                    }
                    guard let xid = record.record.xid, record.matches(subscription) else { continue }
                    if let start = gate.start, record.cursor <= start { matchedBeforeStart = true }
                    let sees = visibility.sees(xid: xid)
                    if !found {
                        if sees {
                            found = true
                            boundary = record.cursor
                        }
                    } else if !sees {
                        return .interleaved
                    }
                }
                // Reached the oldest record: with nothing the snapshot sees, the stream
                // goes on after what the window let go of (or from its oldest).
                if found { return .after(boundary) }
                if let start = gate.start, !state.window.covers(start, lastCursor: state.lastCursor) { return .expired }
                return .after(state.window.releasedThrough)
            }
            if let step { return step }
        }
    }

    /// Queues rows of a snapshot, waiting for room in the client's queue (half its
    /// byte budget, as a replay): its own reading pace holds the snapshot back, never
    /// the client's budget. Returns false when the client left or its snapshot ended,
    /// `deadline` passed while it waited, or `givesWay` says to stop (checked each
    /// second it waits).
    func sendSnapshotRows(
        _ frames: [ByteBuffer], to id: UInt64, gate: SnapshotGate, deadline: ContinuousClock.Instant, givesWay: () -> Bool = { false }
    ) -> Bool {
        var next = 0
        let bytes = queueByteLimit / 2, count = max(queueLimit / 2, 1)
        while next < frames.count {
            var wakes: [ClientQueue] = []
            let alive = state.withLock { state -> Bool in
                guard let client = state.clients[id], client.snapshot === gate else { return false }
                while next < frames.count {
                    let frame = frames[next]
                    let queued = client.control.queued
                    if queued > 0, queued + frame.readableBytes > bytes || client.queue.count >= count { break }
                    guard enqueue(Outgoing(frame), to: id, in: &state, wakes: &wakes) else { return false }
                    next += 1
                }
                return true
            }
            for queue in wakes { queue.wake() }
            guard alive else { return false }
            if next < frames.count {
                gate.wait(seconds: 1)
                if givesWay() { return false }
            }
            if gate.isCancelled || ContinuousClock.now > deadline { return false }
        }
        return true
    }

    /// Ends a snapshot: queues `snapshot_end` and replays the window from the boundary,
    /// then live. When the window no longer holds the boundary (the snapshot took longer
    /// than the window keeps changes) the client gets `snapshot_expired` instead and
    /// loses the subscription.
    func endSnapshot(_ id: UInt64, gate: SnapshotGate, after boundary: Cursor?, rows: Int) {
        var wakes: [ClientQueue] = []
        defer { for queue in wakes { queue.wake() } }
        let more = state.withLock { state -> Bool in
            guard let client = state.clients[id], client.snapshot === gate else { return false }
            state.window.expire()
            let replay: Replay?
            if let boundary {
                guard state.window.covers(boundary, lastCursor: state.lastCursor) else {
                    abandonSnapshot(id, in: &state)
                    let expired = ServerMessage.error(
                        code: "snapshot_expired",
                        message: "the snapshot took longer than the resume window keeps changes (\(rows) rows read); subscribe with snapshot again, narrow it, or raise --resume-window"
                    )
                    if let bytes = client.framing.frame(expired) { enqueue(Outgoing(bytes), to: id, in: &state, wakes: &wakes, overBudget: true) }
                    return false
                }
                replay = state.lastCursor.map { boundary < $0 } ?? false ? .after(boundary) : nil
            } else {
                replay = state.window.oldestCursor.map(Replay.from)
            }
            state.clients[id]?.snapshot = nil
            state.setReplay(id, replay)
            client.control.setReplaying(replay != nil)
            let cursor = boundary ?? (replay == nil ? state.lastCursor : nil)
            if let bytes = client.framing.frame(ServerMessage.snapshotEnd(cursor: cursor?.description, rows: rows)) {
                enqueue(Outgoing(bytes, cursor: cursor?.description), to: id, in: &state, wakes: &wakes, overBudget: true)
            }
            return replay != nil && refill(id, in: &state, wakes: &wakes)
        }
        if more { refill(id) }
    }

    /// Ends a snapshot that failed: the client keeps its connection, not the subscription.
    func failSnapshot(_ id: UInt64, gate: SnapshotGate, _ error: ClientMessageError) {
        var wakes: [ClientQueue] = []
        state.withLock { state in
            guard let client = state.clients[id], client.snapshot === gate else { return }
            abandonSnapshot(id, in: &state)
            if let bytes = client.framing.frame(ServerMessage.error(code: error.code, message: error.message)) {
                enqueue(Outgoing(bytes), to: id, in: &state, wakes: &wakes, overBudget: true)
            }
        }
        for queue in wakes { queue.wake() }
    }

    private func abandonSnapshot(_ id: UInt64, in state: inout State) {
        state.clients[id]?.snapshot = nil
        state.unsubscribe(id)
        state.clients[id]?.control.setReplaying(false)
    }
}
