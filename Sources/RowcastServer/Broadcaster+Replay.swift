import RowcastCore
import RowcastWire

/// A replay (`since`, `last`, a Socket.IO recovery) is read from the shared resume
/// window as the client drains: at most half the client's budget is queued at a time,
/// and the next part once a quarter of it is left, so a client holds its own budget
/// whatever the window holds. When a part reaches the window's newest record the
/// client goes live in the same critical section: no gap, no repeat. A client the
/// window overtakes (its next record was evicted before it read on) is cut off as too
/// slow, with the last cursor it got, and resumes from it like any other.
///
/// Matching a window's records against a filter is the costly part (a hundred-value
/// `in` list, a thousand records), so no critical section matches more than
/// ``scanChunk`` of them: a long scan lets go of the lock between chunks, and records
/// reach every other client meanwhile.
extension Broadcaster {
    /// The most window records one critical section matches for a replay or a `last`.
    static let scanChunk = 32

    /// Queues the next part of a client's replay, from a writer's thread (or after
    /// `subscribe`), a chunk of the window at a time.
    func refill(_ id: UInt64) {
        var more = true
        while more {
            var wakes: [ClientQueue] = []
            more = state.withLock { state in
                // A snapshot's reader waits for this room.
                state.clients[id]?.snapshot?.signal()
                state.window.expire()
                return refill(id, in: &state, wakes: &wakes)
            }
            for queue in wakes { queue.wake() }
        }
    }

    /// Where the newest `count` records matching `subscription` begin: the cursor of the
    /// oldest of them (nil when none matches), found newest first, a chunk at a time.
    /// Records that arrive meanwhile are not counted; they are newer and come anyway.
    func startOfLatest(_ count: Int, matching subscription: Subscription, for id: UInt64) -> Cursor? {
        var found = 0
        var start: Cursor?
        var before: Cursor?
        var reachedOldest = false
        while !reachedOldest, found < count {
            state.withLock { state in
                // The client left or was ended meanwhile: nobody to scan for (nor to charge).
                guard state.clients[id] != nil else {
                    reachedOldest = true
                    start = nil
                    return
                }
                state.window.expire()
                var examined = 0
                // Told once a chunk, before any reply that follows the scan is queued.
                defer { state.clients[id]?.control.examined(examined) }
                for record in state.window.held(before: before) {
                    guard examined < Self.scanChunk, found < count else { return }
                    examined += 1
                    before = record.cursor
                    if record.matches(subscription) {
                        found += 1
                        start = record.cursor
                    }
                }
                reachedOldest = true
            }
        }
        return start
    }

    /// Queues part of a client's replay; true when it stopped after a chunk of the
    /// window with more to read at once (the caller takes the next chunk after letting
    /// go of the lock).
    func refill(_ id: UInt64, in state: inout State, wakes: inout [ClientQueue]) -> Bool {
        guard let client = state.clients[id], let replay = client.replay, let subscription = client.subscription else { return false }
        let start: Cursor, inclusive: Bool
        switch replay {
        case .after(let cursor):
            guard state.window.covers(cursor, lastCursor: state.lastCursor) else {
                end(id, .tooSlow, in: &state)
                return false
            }
            (start, inclusive) = (cursor, false)
        case .from(let cursor):
            // The oldest of the `last` records must still be here (a first part that
            // could not start waits for the writer, and the window may move meanwhile).
            guard let oldest = state.window.oldestCursor, oldest <= cursor else {
                end(id, .tooSlow, in: &state)
                return false
            }
            (start, inclusive) = (cursor, true)
        }
        let bytes = queueByteLimit / 2, frames = max(queueLimit / 2, 1)
        var next = replay
        var examined = 0
        defer { client.control.examined(examined) }
        for record in state.window.held(after: start, inclusive: inclusive) {
            if examined == Self.scanChunk {
                state.setReplay(id, next)
                return true
            }
            examined += 1
            defer { next = .after(record.cursor) }
            let verdict = record.verdict(subscription)
            guard verdict != .skip else { continue }
            let frame = client.framing.frame(verdict == .send ? record : record.moved(verdict))
            let queued = client.control.queued
            // The first record goes however large it is; then up to half the budget.
            if queued > 0, queued + frame.readableBytes > bytes || client.queue.count >= frames {
                state.setReplay(id, next)
                return false
            }
            guard enqueue(Outgoing(frame, cursor: record.cursorText), to: id, in: &state, wakes: &wakes) else { return false }
        }
        // Caught up with the window: live from here.
        state.setReplay(id, nil)
        client.control.setReplaying(false)
        return false
    }
}
