import RowcastCore
import RowcastWire

/// A replay (`since`, `last`, a Socket.IO recovery) is read from the shared resume
/// window as the client drains: at most half the client's budget is queued at a time,
/// and the next part once a quarter of it is left, so a client holds its own budget
/// whatever the window holds. When a part reaches the window's newest record the
/// client goes live in the same critical section: no gap, no repeat. A client the
/// window overtakes (its next record was evicted before it read on) is cut off as too
/// slow, with the last cursor it got, and resumes from it like any other.
extension Broadcaster {
    /// Queues the next part of a client's replay, from a writer's thread.
    func refill(_ id: UInt64) {
        var wakes: [ClientQueue] = []
        state.withLock { state in
            state.window.expire()
            refill(id, in: &state, wakes: &wakes)
        }
        for queue in wakes { queue.wake() }
    }

    func refill(_ id: UInt64, in state: inout State, wakes: inout [ClientQueue]) {
        guard let client = state.clients[id], let replay = client.replay, let subscription = client.subscription else { return }
        let start: Cursor, inclusive: Bool
        switch replay {
        case .after(let cursor):
            guard state.window.covers(cursor, lastCursor: state.lastCursor) else {
                end(id, .tooSlow, in: &state)
                return
            }
            (start, inclusive) = (cursor, false)
        case .from(let cursor):
            // The oldest of the `last` records must still be here (a first part that
            // could not start waits for the writer, and the window may move meanwhile).
            guard let oldest = state.window.oldestCursor, oldest <= cursor else {
                end(id, .tooSlow, in: &state)
                return
            }
            (start, inclusive) = (cursor, true)
        }
        let bytes = queueByteLimit / 2, frames = max(queueLimit / 2, 1)
        var next = replay
        for record in state.window.held(after: start, inclusive: inclusive) {
            defer { next = .after(record.cursor) }
            guard record.matches(subscription) else { continue }
            let frame = client.framing.frame(record)
            let queued = client.control.queued
            // The first record goes however large it is; then up to half the budget.
            if queued > 0, queued + frame.readableBytes > bytes || client.queue.count >= frames {
                state.clients[id]?.replay = next
                return
            }
            guard enqueue(Outgoing(frame, cursor: record.cursorText), to: id, in: &state, wakes: &wakes) else { return }
        }
        // Caught up with the window: live from here.
        state.clients[id]?.replay = nil
        client.control.setReplaying(false)
    }
}
