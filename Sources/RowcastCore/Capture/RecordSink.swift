/// Where a capture source hands its records: `tail`'s stdout, `serve`'s broadcaster.
///
/// The sink, not the source, knows what was really delivered (written to stdout,
/// accepted by the broadcaster), so ``flush()`` reports it and the capture confirms
/// nothing past it.
package protocol RecordSink: AnyObject, Sendable {
    /// Takes one record, in stream order, on the capture's thread. Must not block for
    /// long: capture waits for it. A sink that has failed ignores further records.
    func deliver(_ record: ChangeRecord)

    /// Ends a batch: writes out what ``deliver(_:)`` buffered and says how far
    /// delivery got. Called whenever the source has caught up with its input, and
    /// before every acknowledgement.
    func flush() -> SinkProgress

    /// Replication mode, just before ``flush()``: every record before WAL `position`
    /// has been handed to the sink. A sink that keeps records durably (``keptPosition``)
    /// notes it with them.
    func passed(_ position: UInt64)

    /// The highest position ``passed(_:)`` named that the sink has durably kept with
    /// every record before it, as of the last ``flush()``: the slot confirms no further.
    /// Nil when the sink keeps nothing of its own (what it delivered is final).
    var keptPosition: UInt64? { get }

    /// Replication: the slot was lost and a new one streams from `origin` on. Changes
    /// made in between were not captured: nothing before `origin` can be resumed.
    func streamRestarted(after origin: Cursor)

    /// Trigger mode, after a window: every transaction `snapshot` sees has been handed
    /// to the sink (a snapshot taken before it is covered by the stream from here).
    func delivered(visibleIn snapshot: TransactionSnapshot)
}

extension RecordSink {
    package func streamRestarted(after origin: Cursor) {}
    package func passed(_ position: UInt64) {}
    package func delivered(visibleIn snapshot: TransactionSnapshot) {}
    package var keptPosition: UInt64? { nil }
}

/// How far a sink got with the records handed to it.
package enum SinkProgress: Sendable, Equatable {
    /// Every record up to and including `through` is delivered (nil: none yet).
    case delivered(through: Cursor?)
    /// Delivery failed for good: nothing after `through` is delivered, and capture
    /// must stop. `reason` is one line for the user (`cannot write to stdout: …`).
    case failed(through: Cursor?, reason: String)
}
