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

        /// Before a message that scans the window: the records its address paid for
        /// ahead (``AddressPace/settle(_:reserving:on:counted:)``). The scan draws on
        /// them before it charges more.
        func prepay(_ paid: AddressPace.Prepayment) { control.prepay(paid) }

        /// After such a message: what was paid ahead and not used goes back to the
        /// address, unless a replay goes on (it gives it back when it ends).
        func scanDone() {
            if !control.isReplaying { control.refundUnused() }
        }

        /// The writer calls this once frames it took are written (handed to the socket),
        /// so that what the client holds queued is counted in bytes; a client replaying
        /// from the window gets its next part once at most a quarter of its budget is queued.
        package func wrote(bytes: Int) {
            control.dequeued(bytes)
            if control.isReplaying, control.queued <= control.refillBelow { control.refill() }
        }
    }

    /// Shared by the broadcaster and one client's writer, without the broadcaster's lock.
    final class ClientControl: Sendable {
        private let value = Atomic<UInt8>(0)
        private let queuedBytes = Atomic<Int>(0)
        private let replaying = Atomic<Bool>(false)
        private let examined = Atomic<Int>(0)
        private let scans = Mutex(ScanBalance())
        /// Where window scans are charged (nil: nowhere).
        let account: ScanAccount?
        let onEnd: (@Sendable (EndReason) -> Void)?
        /// Queues the next part of the client's replay (the broadcaster's, by the client's id).
        let refill: @Sendable () -> Void
        /// At or below this many bytes queued, a replaying client is refilled.
        let refillBelow: Int

        /// Window records paid for ahead and not matched yet, and records matched not
        /// yet charged (less than a turn's).
        private struct ScanBalance {
            var prepaid = AddressPace.Prepayment()
            var uncharged = 0
        }

        init(onEnd: (@Sendable (EndReason) -> Void)?, account: ScanAccount? = nil, refillBelow: Int, refill: @escaping @Sendable () -> Void) {
            self.onEnd = onEnd
            self.account = account
            self.refillBelow = refillBelow
            self.refill = refill
        }

        var isReplaying: Bool { replaying.load(ordering: .relaxed) }

        /// A replay that ends gives back what its scan paid ahead and did not use.
        func setReplaying(_ on: Bool) {
            replaying.store(on, ordering: .relaxed)
            if !on { refundUnused() }
        }

        /// Window records matched for the client: drawn from what was paid ahead, the
        /// rest charged to its address a turn's worth at a time.
        func examined(_ records: Int) {
            guard records > 0 else { return }
            examined.add(records, ordering: .relaxed)
            guard let account else { return }
            let owed = scans.withLock { balance in
                let covered = min(balance.prepaid.records, records)
                balance.prepaid.records -= covered
                balance.uncharged += records - covered
                let turns = balance.uncharged / MessagePace.recordsPerTurn * MessagePace.recordsPerTurn
                balance.uncharged -= turns
                return turns
            }
            if owed > 0 { account.pace.charge(account.address, examined: owed) }
        }
        func takeExamined() -> Int { examined.exchange(0, ordering: .relaxed) }

        /// What the address paid for before a scan (``AddressPace/settle(_:reserving:on:counted:)``).
        func prepay(_ paid: AddressPace.Prepayment) {
            guard paid.records > 0 else { return }
            scans.withLock { balance in
                balance.prepaid.records += paid.records
                balance.prepaid.until = max(balance.prepaid.until, paid.until)
            }
        }

        /// Gives the address back what was paid ahead and not matched.
        func refundUnused() {
            guard let account else { return }
            let unused = scans.withLock { balance in
                defer { balance.prepaid = AddressPace.Prepayment() }
                return balance.prepaid
            }
            if unused.records > 0 { account.pace.refund(account.address, unused) }
        }

        var reason: EndReason? { EndReason(rawValue: value.load(ordering: .relaxed)) }
        func raise(_ reason: EndReason) { value.store(reason.rawValue, ordering: .relaxed) }
        var queued: Int { queuedBytes.load(ordering: .relaxed) }
        func enqueued(_ bytes: Int) { queuedBytes.add(bytes, ordering: .relaxed) }
        func dequeued(_ bytes: Int) { queuedBytes.subtract(bytes, ordering: .relaxed) }
    }
}

/// The address a client's window scans are charged to (``AddressPace``).
struct ScanAccount: Sendable {
    let pace: AddressPace
    let address: ClientAddress
}
