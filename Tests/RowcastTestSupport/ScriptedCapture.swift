import Foundation
import NIOCore
import RowcastCore
import Synchronization

/// A capture source with no database behind it: the test commits changes, and the
/// source delivers them to its sink from its own run loop, in order, each burst
/// followed by `flush()`, with cursors of its mode, as trigger and replication
/// capture do. It sets up ``CaptureState`` as they do at connect time (captured
/// tables, their columns, connected), counts what it delivers, and learns a table
/// set up while it runs just before that table's first change.
///
/// For tests of the server, which needs a ``CaptureSource`` and nothing of
/// PostgreSQL: `buildApplication(options:source:logger:)` takes it as it takes a real one.
///
/// ```swift
/// let capture = ScriptedCapture(tables: ["public.items": ["id": .number, "title": .other]])
/// let cursors = try capture.commit(.insert("public.items", row: #"{"id":1,"title":"a"}"#))
/// try await capture.waitUntilDelivered()
/// ```
package final class ScriptedCapture: CaptureSource {
    package let mode: CaptureMode
    package let state = CaptureState()
    /// Just before the first record: the cursor a client that subscribes before any
    /// record resumes from.
    package let origin: Cursor

    /// How long the run loop waits for a commit before it looks at its stop signal
    /// again. `StopSignal` is a flag with no way to wake a waiter (real sources look at
    /// it between socket waits of 200 to 250 ms), so the loop looks: `run` returns
    /// within this much of a stop.
    private static let stopCheck = TimeAmount.milliseconds(20)

    /// What the run loop performs, in order.
    private enum Step {
        case deliver(ChangeRecord)
        case learn(TableName, columns: [String: ColumnKind])
    }

    private struct Script {
        var pending: [Step] = []
        /// The run loop, while it waits for steps.
        var waiter: CheckedContinuation<Void, Never>?
        var running = false
        /// Records committed, and records handed to the sink and flushed.
        var committed = 0
        var delivered = 0
        /// Why delivery stopped, when the sink failed.
        var sinkFailure: String?
        /// The next cursor's parts: trigger, the sequence; replication, the commit
        /// LSN and the transaction id.
        var sequence: UInt64 = 0
        var commitLSN: UInt64
        var xid: UInt32 = 1000
    }

    private let script: Mutex<Script>
    /// Trigger mode: this stream's id in cursors (the process start, as trigger capture has).
    private let streamID: UInt64
    /// Replication mode: how far apart two transactions' commit LSNs are.
    private static let lsnStep: UInt64 = 0x200

    /// A source in `mode` that captures `tables`, with `columns` for filter checks, as
    /// the catalog would say at connect time; connected unless `connected` is false.
    /// Replication cursors start after `firstCommitLSN`, as after a slot's confirmed position.
    package init(
        mode: CaptureMode = .trigger,
        tables: [TableName: [String: ColumnKind]],
        connected: Bool = true,
        firstCommitLSN: UInt64 = 0x0100_0000
    ) {
        self.mode = mode
        streamID = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        switch mode {
        case .trigger: origin = .trigger(stream: streamID, sequence: 0)
        case .replication: origin = .replication(commitLSN: firstCommitLSN - 1, index: .max)
        }
        script = Mutex(Script(commitLSN: firstCommitLSN))
        state.setCapturedTables(Set(tables.keys))
        state.setColumns(tables)
        if connected { state.markConnected() } else { state.markDisconnected("not connected yet") }
    }

    /// Commits one transaction of `changes` and returns their cursors; the run loop
    /// delivers them. Every `row` and `old` must be one JSON value: a change that is
    /// not throws, and nothing of the transaction is committed.
    @discardableResult
    package func commit(_ changes: ScriptedChange...) throws(JSONSyntaxError) -> [Cursor] {
        try commit(changes)
    }

    /// ``commit(_:)-(ScriptedChange...)`` with an array.
    @discardableResult
    package func commit(_ changes: [ScriptedChange]) throws(JSONSyntaxError) -> [Cursor] {
        var parsed: [(change: ScriptedChange, row: RawJSON?, old: RawJSON?)] = []
        for change in changes {
            parsed.append((change, try change.row.map(Self.json), try change.old.map(Self.json)))
        }
        let (cursors, waiter) = script.withLock { script in
            let time = CommitTime.rfc3339(postgresMicroseconds: Int64(Date().timeIntervalSince1970 * 1_000_000) - postgresEpochOffsetMicroseconds)
            var cursors: [Cursor] = []
            for (index, item) in parsed.enumerated() {
                let cursor: Cursor
                switch mode {
                case .trigger:
                    script.sequence += 1
                    cursor = .trigger(stream: streamID, sequence: script.sequence)
                case .replication:
                    cursor = .replication(commitLSN: script.commitLSN, index: UInt32(index + 1))
                }
                var record = ChangeRecord(cursor: cursor, source: mode, op: item.change.op)
                record.schema = item.change.table.schema
                record.table = item.change.table.name
                record.row = item.row
                record.old = item.old
                record.xid = script.xid
                if mode == .replication {
                    record.lsn = script.commitLSN
                    record.commitTime = time
                }
                script.pending.append(.deliver(record))
                cursors.append(cursor)
            }
            script.committed += parsed.count
            script.xid &+= 1
            script.commitLSN += Self.lsnStep
            return (cursors, Self.takeWaiter(&script))
        }
        waiter?.resume()
        return cursors
    }

    /// A table set up while the source runs: the run loop adds it and its columns to
    /// the captured tables before it delivers anything committed after this call, as
    /// trigger capture learns a table just before its first change.
    package func setUp(_ table: TableName, columns: [String: ColumnKind]) {
        let waiter = script.withLock { script in
            script.pending.append(.learn(table, columns: columns))
            return Self.takeWaiter(&script)
        }
        waiter?.resume()
    }

    /// The connection is lost: `/healthz` answers 503 with `reason`.
    package func disconnect(_ reason: String) { state.markDisconnected(reason) }

    /// The connection is back.
    package func reconnect() { state.markConnected() }

    /// How many committed records the sink has taken and flushed.
    package var deliveredCount: Int { script.withLock { $0.delivered } }

    /// Waits until every record committed so far has been handed to the sink and
    /// flushed; fails naming how many were when `seconds` pass.
    package func waitUntilDelivered(within seconds: Double = 60) async throws {
        let target = script.withLock { $0.committed }
        try await eventually("\(target) committed records to be delivered", within: seconds, interval: .milliseconds(5), seen: { self.progress }) {
            self.script.withLock { $0.delivered >= target }
        }
    }

    /// Delivers until `stop` fires, the task is cancelled or the sink fails; then marks
    /// the source disconnected ("stopped"), as real sources do. One run at a time: a
    /// second concurrent call returns at once.
    package func run(sink: any RecordSink, stop: StopSignal) async {
        guard script.withLock({ script in
            defer { script.running = true }
            return !script.running
        }) else { return }
        defer {
            script.withLock { $0.running = false }
            state.markDisconnected("stopped")
        }
        while !stop.isStopped, !Task.isCancelled {
            let steps = await nextSteps()
            guard !steps.isEmpty else { continue }
            var records = 0
            for step in steps {
                switch step {
                case .learn(let table, let columns):
                    state.capture(table, columns: columns)
                case .deliver(let record):
                    sink.deliver(record)
                    state.count(1)
                    records += 1
                }
            }
            // Caught up with what was committed: end the batch, as real sources do.
            if case .failed(_, let reason) = sink.flush() {
                script.withLock { $0.sinkFailure = reason }
                return
            }
            script.withLock { $0.delivered += records }
        }
    }

    // MARK: - Internals

    private var progress: String {
        script.withLock { script in
            "\(script.delivered) of \(script.committed) delivered"
                + (script.running ? "" : "; the source is not running")
                + (script.sinkFailure.map { "; the sink failed: \($0)" } ?? "")
        }
    }

    private static func json(_ text: String) throws(JSONSyntaxError) -> RawJSON {
        try RawJSON(validating: Array(text.utf8))
    }

    private static func takeWaiter(_ script: inout Script) -> CheckedContinuation<Void, Never>? {
        defer { script.waiter = nil }
        return script.waiter
    }

    /// The steps committed since the last call; waits up to ``stopCheck`` (on the tests'
    /// own NIO timer, never Dispatch's) or until cancelled when there are none yet.
    private func nextSteps() async -> [Step] {
        let ready: [Step] = script.withLock { script in
            defer { script.pending.removeAll() }
            return script.pending
        }
        guard ready.isEmpty else { return ready }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now: Bool = script.withLock { script in
                    guard script.pending.isEmpty, !Task.isCancelled else { return true }
                    script.waiter = continuation
                    return false
                }
                if now { return continuation.resume() }
                // A timer that fires after a commit has already woken this wait wakes
                // nothing, or a later wait early: either way one more look, no harm.
                testTimers.next().scheduleTask(in: Self.stopCheck) { self.wake() }
            }
        } onCancel: {
            wake()
        }
        return script.withLock { script in
            defer { script.pending.removeAll() }
            return script.pending
        }
    }

    private func wake() {
        script.withLock { Self.takeWaiter(&$0) }?.resume()
    }
}

/// One change of a ``ScriptedCapture`` transaction, with its rows as JSON text (what
/// `to_json` of the row gives in trigger mode).
package struct ScriptedChange: Sendable {
    package let op: RowcastCore.Operation
    package let table: TableName
    package let row: String?
    package let old: String?

    /// An INSERT of `row`.
    package static func insert(_ table: TableName, row: String) -> ScriptedChange {
        ScriptedChange(op: .insert, table: table, row: row, old: nil)
    }

    /// An UPDATE to `row` from `old` (trigger mode sends the whole old row; replication
    /// mode the key, or nothing, by replica identity).
    package static func update(_ table: TableName, row: String, old: String? = nil) -> ScriptedChange {
        ScriptedChange(op: .update, table: table, row: row, old: old)
    }

    /// A DELETE of `old`.
    package static func delete(_ table: TableName, old: String) -> ScriptedChange {
        ScriptedChange(op: .delete, table: table, row: nil, old: old)
    }

    /// A TRUNCATE of `table`.
    package static func truncate(_ table: TableName) -> ScriptedChange {
        ScriptedChange(op: .truncate, table: table, row: nil, old: nil)
    }
}
