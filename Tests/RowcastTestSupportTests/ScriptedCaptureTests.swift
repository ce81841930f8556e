import RowcastCore
import RowcastTestSupport
import Synchronization
import Testing

/// ScriptedCapture keeps the promises of a real capture source that the server relies on.
@Suite(.timeLimit(.minutes(1)))
struct ScriptedCaptureTests {
    static let items: TableName = "public.items"
    static let columns: [String: ColumnKind] = ["id": .number, "title": .other]

    /// Everything the source did to its sink, in order.
    final class JournalSink: RecordSink {
        enum Entry: Equatable {
            case deliver(ChangeRecord, captured: Bool)
            case flush
        }

        private let entries = Mutex<[Entry]>([])
        private let state: CaptureState
        private let failure: String?

        /// Notes with each record whether `state` captured its table by then; a sink
        /// made with `failure` fails at its first flush.
        init(state: CaptureState, failure: String? = nil) {
            self.state = state
            self.failure = failure
        }

        func deliver(_ record: ChangeRecord) {
            let captured = state.captures(TableName(schema: record.schema ?? "", name: record.table ?? ""))
            entries.withLock { $0.append(.deliver(record, captured: captured)) }
        }

        func flush() -> SinkProgress {
            let last = entries.withLock { entries in
                entries.append(.flush)
                return entries.reversed().lazy.compactMap { entry -> Cursor? in
                    if case .deliver(let record, _) = entry { return record.cursor }
                    return nil
                }.first
            }
            if let failure { return .failed(through: nil, reason: failure) }
            return .delivered(through: last)
        }

        var journal: [Entry] { entries.withLock { $0 } }
        var records: [ChangeRecord] {
            journal.compactMap { entry in
                if case .deliver(let record, _) = entry { return record }
                return nil
            }
        }
    }

    /// A running source, stopped when the test ends.
    static func running(_ capture: ScriptedCapture, sink: JournalSink? = nil) -> (sink: JournalSink, stop: StopSignal, task: Task<Void, Never>) {
        let sink = sink ?? JournalSink(state: capture.state)
        let stop = StopSignal()
        let task = Task { await capture.run(sink: sink, stop: stop) }
        return (sink, stop, task)
    }

    @Test func triggerModeDeliversEachCommitInOrderThenFlushes() async throws {
        try await within(60, "two trigger-mode commits to be delivered") {
            let capture = ScriptedCapture(tables: [Self.items: Self.columns])
            #expect(capture.mode == .trigger)
            #expect(capture.state.isConnected)
            #expect(capture.state.capturedTables == [Self.items])
            #expect(capture.state.columns == [Self.items: Self.columns])
            let (sink, stop, task) = Self.running(capture)
            defer { stop.stop() }

            let first = try capture.commit(
                .insert(Self.items, row: #"{"id":1,"title":"a"}"#),
                .update(Self.items, row: #"{"id":1,"title":"b"}"#, old: #"{"id":1,"title":"a"}"#)
            )
            try await capture.waitUntilDelivered()
            let second = try capture.commit(.delete(Self.items, old: #"{"id":1,"title":"b"}"#), .truncate(Self.items))
            try await capture.waitUntilDelivered()

            let records = sink.records
            #expect(records.map(\.cursor) == first + second, "delivered in commit order, with the cursors commit returned")
            #expect(records.map(\.op) == [.insert, .update, .delete, .truncate])
            #expect(records.allSatisfy { $0.source == .trigger && $0.schema == "public" && $0.table == "items" })
            #expect(records.map { $0.row?.text } == [#"{"id":1,"title":"a"}"#, #"{"id":1,"title":"b"}"#, nil, nil])
            #expect(records.map { $0.old?.text } == [nil, #"{"id":1,"title":"a"}"#, #"{"id":1,"title":"b"}"#, nil])
            #expect(records.allSatisfy { $0.lsn == nil && $0.commitTime == nil }, "trigger mode has no WAL position")
            #expect(records[0].xid == records[1].xid && records[1].xid != records[2].xid, "one xid per transaction")

            let cursors = records.map(\.cursor)
            #expect(cursors.allSatisfy { $0.kind == .trigger && $0 > capture.origin })
            #expect(zip(cursors, cursors.dropFirst()).allSatisfy { $0 < $1 }, "cursors increase")
            #expect(cursors.first == .trigger(stream: capture.origin.major, sequence: 1))

            // Each burst ends with a flush: nothing delivered is left unflushed.
            #expect(sink.journal.last == .flush)
            #expect(sink.journal.filter { $0 == .flush }.count >= 2)
            #expect(capture.state.recordsCaptured == 4)
            #expect(capture.deliveredCount == 4)
            stop.stop()
            await task.value
        }
    }

    @Test func replicationModeGivesEachCommitItsLSNAndIndexes() async throws {
        try await within(60, "two replication-mode commits to be delivered") {
            let capture = ScriptedCapture(mode: .replication, tables: [Self.items: Self.columns], firstCommitLSN: 0x1_6B37_4800)
            let (sink, stop, task) = Self.running(capture)
            defer { stop.stop() }
            let first = try capture.commit(.insert(Self.items, row: #"{"id":1}"#), .insert(Self.items, row: #"{"id":2}"#))
            let second = try capture.commit(.insert(Self.items, row: #"{"id":3}"#))
            try await capture.waitUntilDelivered()

            let records = sink.records
            #expect(records.map(\.cursor) == first + second)
            #expect(records.allSatisfy { $0.source == .replication && $0.cursor.kind == .replication })
            #expect(first.map(\.major) == [0x1_6B37_4800, 0x1_6B37_4800], "one commit LSN per transaction")
            #expect(first.map(\.minor) == [1, 2], "the change's index in its transaction, from 1")
            #expect(second[0].major > first[1].major && second[0].minor == 1)
            #expect(capture.origin < first[0], "the origin is before every record")
            #expect(records.map(\.lsn) == records.map { $0.cursor.major })
            for record in records {
                let time = record.commitTime ?? ""
                #expect(time.count == 27 && time.hasSuffix("Z") && time.dropFirst(19).hasPrefix("."), "RFC 3339 UTC with microseconds: \(time)")
            }
            stop.stop()
            await task.value
        }
    }

    @Test func whatIsCommittedBeforeRunIsDeliveredOnceItRunsAndALateTableIsLearnedFirst() async throws {
        try await within(60, "records committed before the run to be delivered") {
            let late: TableName = "public.late"
            let capture = ScriptedCapture(tables: [Self.items: Self.columns])
            try capture.commit(.insert(Self.items, row: #"{"id":1}"#))
            capture.setUp(late, columns: ["id": .number, "n": .number])
            try capture.commit(.insert(late, row: #"{"id":1,"n":5}"#))
            #expect(!capture.state.captures(late), "learned in the run loop, not at once")
            #expect(capture.deliveredCount == 0)

            let (sink, stop, task) = Self.running(capture)
            defer { stop.stop() }
            try await capture.waitUntilDelivered()
            #expect(sink.records.map(\.table) == ["items", "late"])
            #expect(sink.journal.first.map { if case .deliver(_, let captured) = $0 { captured } else { false } } == true)
            #expect(sink.journal.dropFirst().first.map { if case .deliver(_, let captured) = $0 { captured } else { false } } == true,
                    "the late table is captured before its first record reaches the sink")
            #expect(capture.state.capturedTables == [Self.items, late])
            #expect(capture.state.columns[late] == ["id": .number, "n": .number])
            stop.stop()
            await task.value
        }
    }

    @Test func runReturnsPromptlyWhenStoppedOrCancelled() async throws {
        let capture = ScriptedCapture(tables: [Self.items: Self.columns])
        let (_, stop, task) = Self.running(capture)
        try capture.commit(.insert(Self.items, row: "{}"))
        try await capture.waitUntilDelivered()
        // A second run while one runs returns at once, delivering nothing.
        try await within(60, "a second, concurrent run to return") {
            await capture.run(sink: JournalSink(state: capture.state), stop: StopSignal())
        }
        stop.stop()
        try await within(60, "run to return after its stop signal fired") { await task.value }
        #expect(!capture.state.isConnected)
        #expect(capture.state.lastError == "stopped")

        let again = ScriptedCapture(tables: [Self.items: Self.columns])
        let (_, _, cancelled) = Self.running(again)
        try again.commit(.insert(Self.items, row: "{}"))
        try await again.waitUntilDelivered()
        cancelled.cancel()
        try await within(60, "run to return after its task was cancelled") { await cancelled.value }
        #expect(again.state.lastError == "stopped")
    }

    @Test func aRowThatIsNotJSONIsRefusedAndNothingOfItsTransactionIsCommitted() async throws {
        try await within(60, "a valid commit after a refused one") {
            let capture = ScriptedCapture(tables: [Self.items: Self.columns])
            #expect(throws: JSONSyntaxError.self) {
                try capture.commit(.insert(Self.items, row: #"{"id":1}"#), .insert(Self.items, row: #"{"id":"#))
            }
            #expect(throws: JSONSyntaxError.self) { try capture.commit(.delete(Self.items, old: "{} {}")) }
            let (sink, stop, task) = Self.running(capture)
            defer { stop.stop() }
            let cursors = try capture.commit(.insert(Self.items, row: #"{"id":2}"#))
            #expect(cursors == [.trigger(stream: capture.origin.major, sequence: 1)], "no cursor was spent on the refused ones")
            try await capture.waitUntilDelivered()
            #expect(sink.records.map { $0.row?.text } == [#"{"id":2}"#])
            stop.stop()
            await task.value
        }
    }

    @Test func theConnectionStateIsTheScripts() {
        let capture = ScriptedCapture(tables: [:], connected: false)
        #expect(!capture.state.isConnected)
        #expect(capture.state.lastError != nil)
        capture.reconnect()
        #expect(capture.state.isConnected && capture.state.lastError == nil)
        capture.disconnect("the server closed the connection")
        #expect(!capture.state.isConnected)
        #expect(capture.state.lastError == "the server closed the connection")
    }

    @Test func aSinkThatFailsEndsTheRunAndNothingCountsAsDelivered() async throws {
        let capture = ScriptedCapture(tables: [Self.items: Self.columns])
        let sink = JournalSink(state: capture.state, failure: "cannot write to stdout: broken pipe")
        let (_, _, task) = Self.running(capture, sink: sink)
        try capture.commit(.insert(Self.items, row: "{}"))
        try await within(60, "run to end after its sink failed") { await task.value }
        #expect(sink.journal.count == 2, "one record, one flush, then nothing")
        #expect(capture.deliveredCount == 0)
        let failure = await #expect(throws: DeadlinePassed.self) { try await capture.waitUntilDelivered(within: 0.2) }
        #expect(failure?.seen.contains("the sink failed: cannot write to stdout: broken pipe") == true, "\(failure?.description ?? "")")
    }
}
