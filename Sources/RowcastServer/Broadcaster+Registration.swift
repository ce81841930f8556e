import NIOCore
import Synchronization

/// What a client's session holds of the broadcaster, and what the two share.
extension Broadcaster {
    /// A client's end of the broadcaster: its id, the frames queued for it, and the
    /// reason it was ended, if it was (checked without a lock before each write).
    package struct Registration: Sendable {
        package let id: UInt64
        /// The client's frames, for its writer to take in batches.
        package let queue: ClientQueue
        let control: ClientControl

        /// The client's frames one at a time.
        package var stream: ClientQueue.Items { queue.items }

        /// Set when the broadcaster ended this client: stop writing and close it.
        package var endReason: EndReason? { control.reason }

        /// Window records matched for this client's replays and `last` since the last
        /// call: its session charges them to the client's message pace.
        package func takeExamined() -> Int { control.takeExamined() }

        /// The writer calls this once frames it took are written (handed to the socket),
        /// so that what the client holds queued is counted in bytes; a client replaying
        /// from the window gets its next part once at most a quarter of its budget is queued.
        package func wrote(bytes: Int) {
            control.dequeued(bytes)
            if control.isReplaying, control.queued <= control.refillBelow { control.refill() }
        }
    }

    /// Shared by the broadcaster and one client's writer, without a lock.
    final class ClientControl: Sendable {
        private let value = Atomic<UInt8>(0)
        private let queuedBytes = Atomic<Int>(0)
        private let replaying = Atomic<Bool>(false)
        private let examined = Atomic<Int>(0)
        /// Records matched not yet charged to the address (less than a turn's).
        private let uncharged = Atomic<Int>(0)
        let chargeScans: (@Sendable (Int) -> Void)?
        let onEnd: (@Sendable (EndReason) -> Void)?
        /// Queues the next part of the client's replay (the broadcaster's, by the client's id).
        let refill: @Sendable () -> Void
        /// At or below this many bytes queued, a replaying client is refilled.
        let refillBelow: Int

        init(
            onEnd: (@Sendable (EndReason) -> Void)?, chargeScans: (@Sendable (Int) -> Void)? = nil, refillBelow: Int,
            refill: @escaping @Sendable () -> Void
        ) {
            self.onEnd = onEnd
            self.chargeScans = chargeScans
            self.refillBelow = refillBelow
            self.refill = refill
        }

        var isReplaying: Bool { replaying.load(ordering: .relaxed) }
        func setReplaying(_ on: Bool) { replaying.store(on, ordering: .relaxed) }

        func examined(_ records: Int) {
            guard records > 0 else { return }
            examined.add(records, ordering: .relaxed)
            guard let chargeScans else { return }
            let owed = uncharged.add(records, ordering: .relaxed).newValue
            guard owed >= MessagePace.recordsPerTurn else { return }
            let turns = owed / MessagePace.recordsPerTurn * MessagePace.recordsPerTurn
            uncharged.subtract(turns, ordering: .relaxed)
            chargeScans(turns)
        }
        func takeExamined() -> Int { examined.exchange(0, ordering: .relaxed) }

        var reason: EndReason? { EndReason(rawValue: value.load(ordering: .relaxed)) }
        func raise(_ reason: EndReason) { value.store(reason.rawValue, ordering: .relaxed) }
        var queued: Int { queuedBytes.load(ordering: .relaxed) }
        func enqueued(_ bytes: Int) { queuedBytes.add(bytes, ordering: .relaxed) }
        func dequeued(_ bytes: Int) { queuedBytes.subtract(bytes, ordering: .relaxed) }
    }
}
