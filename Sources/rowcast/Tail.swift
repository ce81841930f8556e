import ArgumentParser
import Foundation
import RowcastCore
import RowcastPostgres

/// `rowcast tail`: the record stream as NDJSON on stdout.
struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the record stream as NDJSON on stdout, one record a line.",
        discussion: """
            Example:
              rowcast tail --mode replication --table public.orders | jq .row
              rowcast tail --mode trigger --table public.orders --channel addedrecord
              rowcast tail --endpos "$(psql -Atc 'SELECT pg_current_wal_lsn()')" > backlog.ndjson
              rowcast tail --mode trigger --table public.orders --snapshot | jq -c 'select(.op == "snapshot") | .row'
            With --snapshot, the tables' rows as they are come first (op "snapshot"), then \
            one {"op":"snapshot_end","rows":N} line, then every change the snapshot does \
            not hold, each once.
            In replication mode, what tail printed is confirmed to the slot when it ends \
            (SIGINT or SIGTERM), so the next run starts after it. A failed write (a closed \
            pipe, a full disk) ends tail with exit 1, and nothing past the last record \
            fully written is confirmed.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: ArgumentHelp("replication: exit once everything committed before this WAL position (X/X) is printed and confirmed.", valueName: "lsn"))
    var endpos: String?

    @Flag(name: .long, help: "First print the captured tables' rows as they are (op \"snapshot\", read in one REPEATABLE READ transaction), then a snapshot_end line, then every change after them, each once.")
    var snapshot = false

    func run() async throws {
        let logger = try connection.bootstrapLogging()
        var endPosition: UInt64?
        if let endpos {
            guard let lsn = parseLSN(endpos) else { throw CommandFailure.usage("--endpos \"\(endpos)\" is not a WAL position like 0/16B3748") }
            endPosition = lsn
        }
        let source = try capture.connect(connection.settings, endPosition: endPosition, logger: logger)
        let stop = StopSignal()
        let signals = SignalTrap(signals: [SIGINT, SIGTERM]) { stop.stop() }
        let output = NDJSONSink(output: STDOUT_FILENO)
        var sink: any RecordSink = output
        if snapshot {
            // The slot (or the listener's registration) exists now: whatever the snapshot
            // does not see is still to come from the stream.
            sink = try printSnapshot(of: source, to: output, stop: stop)
        }
        await source.run(sink: sink, stop: stop)
        if case .failed(_, let reason) = sink.flush() {
            throw CommandFailure.failed(reason)
        }
        withExtendedLifetime(signals) {}
    }

    /// Prints the rows of every captured table as they are, then `snapshot_end`, and
    /// returns the sink the stream goes to: it drops what the snapshot already holds.
    private func printSnapshot(of source: any CaptureSource, to output: NDJSONSink, stop: StopSignal) throws -> any RecordSink {
        guard let tables = source.state.capturedTables, !tables.isEmpty else {
            throw CommandFailure.usage("--snapshot reads the captured tables: name them with --table")
        }
        let reader: any TableSnapshot
        do {
            reader = try PostgresSnapshotSource(connection: connection.settings, followsWAL: source.mode == .replication).open(tables: tables.sorted())
        } catch {
            throw CommandFailure.failed(error.description)
        }
        defer { reader.close() }
        var rows = 0
        for table in tables.sorted() {
            do {
                try reader.read(table, conditions: [], pageRows: 1_000) { page in
                    for row in page { output.snapshotRow(row, of: table, source: source.mode) }
                    rows += page.count
                    return output.failed == nil && !stop.isStopped
                }
            } catch {
                throw CommandFailure.failed(error.description)
            }
            if let failure = output.failed { throw CommandFailure.failed(failure) }
            // Stopped before every row was printed: no snapshot_end, which would say it was.
            if stop.isStopped {
                _ = output.flush()
                throw CommandFailure.failed("stopped before the snapshot was complete (\(rows) rows printed, no snapshot_end); run tail --snapshot again")
            }
        }
        output.snapshotEnd(rows: rows, source: source.mode)
        if case .failed(_, let reason) = output.flush() { throw CommandFailure.failed(reason) }
        return SnapshotFilterSink(output, visibility: reader.visibility, walPosition: reader.walPosition)
    }
}

/// Writes records as NDJSON to a file descriptor, buffered per batch, and knows
/// which record was the last one fully written: the capture confirms nothing past it.
/// Each record is encoded straight into the output buffer, and a huge row goes out
/// straight from its own bytes, so it is held once, not copied again.
final class NDJSONSink: RecordSink, @unchecked Sendable {
    // Touched only on the capture thread (and by `run` after capture ended).
    private let output: Int32
    private var buffer = JSONWriter(capacity: 1 << 16)
    /// The last record in `buffer`, or written through the huge-row path.
    private var lastBuffered: Cursor?
    /// The last record whose every byte reached the output.
    private var lastWritten: Cursor?
    /// Why writing failed; once set, nothing more is written.
    private var failure: String?

    init(output: Int32) {
        self.output = output
    }

    func deliver(_ record: ChangeRecord) {
        guard failure == nil else { return }
        record.encode(into: &buffer) { writer, _, value in
            guard value.bytes.count >= ChangeRecord.largeValueBytes else {
                writer.appendRaw(value.bytes)
                return
            }
            // A huge row: what is buffered (earlier records, this one's head), then the row itself.
            guard self.write(writer.bytes) else { return }
            self.lastWritten = self.lastBuffered
            writer.truncate(to: 0)
            _ = self.write(value.bytes)
        }
        guard failure == nil else { return }
        buffer.append(byte: UInt8(ascii: "\n"))
        lastBuffered = record.cursor
        if buffer.bytes.count >= 1 << 16 { _ = flush() }
    }

    /// A snapshot's row, as `serve` sends it: no cursor (the stream goes on after
    /// `snapshot_end`).
    func snapshotRow(_ row: RawJSON, of table: TableName, source: CaptureMode) {
        guard failure == nil else { return }
        buffer.appendSnapshotRowHead(of: table, source: source)
        if row.bytes.count >= ChangeRecord.largeValueBytes {
            guard write(buffer.bytes) else { return }
            buffer.truncate(to: 0)
            _ = write(row.bytes)
        } else {
            buffer.appendRaw(row.bytes)
        }
        buffer.appendASCII("}\n")
        if buffer.bytes.count >= 1 << 16 { _ = flush() }
    }

    /// The line after the snapshot's rows: how many there were.
    func snapshotEnd(rows: Int, source: CaptureMode) {
        buffer.appendASCII(#"{"source":"#)
        buffer.appendString(source.rawValue)
        buffer.appendASCII(#","op":"snapshot_end","rows":"#)
        buffer.appendInteger(rows)
        buffer.appendASCII("}\n")
    }

    /// A record the output holds already (in a snapshot): counted as written once what
    /// precedes it is, so the slot confirms past it.
    func skip(_ record: ChangeRecord) {
        guard failure == nil else { return }
        lastBuffered = record.cursor
    }

    /// Why writing failed, once it did.
    var failed: String? { failure }

    func flush() -> SinkProgress {
        if failure == nil, write(buffer.bytes) {
            lastWritten = lastBuffered
        }
        // Keep a modest buffer, not the largest record ever seen.
        if buffer.bytes.count > 1 << 20 {
            buffer = JSONWriter(capacity: 1 << 16)
        } else {
            buffer.truncate(to: 0)
        }
        if let failure { return .failed(through: lastWritten, reason: failure) }
        return .delivered(through: lastWritten)
    }

    /// Writes all of `bytes`; on failure records why and returns false.
    private func write(_ bytes: [UInt8]) -> Bool {
        guard failure == nil else { return false }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return Foundation.write(output, base + offset, bytes.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                failure = "cannot write to stdout: " + String(cString: strerror(errno))
                return false
            }
            offset += written
        }
        return true
    }
}

/// Turns signals into a callback on a dispatch queue, for as long as it lives.
final class SignalTrap {
    private let sources: [DispatchSourceSignal]

    init(signals: [Int32], handler: @escaping @Sendable () -> Void) {
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }
}

/// Between a snapshot and the stream: drops the records of transactions the snapshot
/// already sees (their rows are in it), until the stream has passed it (replication:
/// a commit at or after the WAL position read after the snapshot; trigger: a window
/// whose own snapshot covers it), after which no transaction it sees can come.
/// Deciding each record by its transaction keeps the boundary exact even where commits
/// reach the stream in another order than they became visible.
final class SnapshotFilterSink: RecordSink, @unchecked Sendable {
    // Touched only on the capture thread.
    private let inner: NDJSONSink
    private let visibility: TransactionSnapshot
    private let walPosition: UInt64?
    private var passed = false

    init(_ inner: NDJSONSink, visibility: TransactionSnapshot, walPosition: UInt64?) {
        self.inner = inner
        self.visibility = visibility
        self.walPosition = walPosition
    }

    func deliver(_ record: ChangeRecord) {
        if !passed, let walPosition, let lsn = record.lsn, lsn >= walPosition { passed = true }
        if !passed, let xid = record.xid, visibility.sees(xid: xid) { return inner.skip(record) }
        inner.deliver(record)
    }

    func flush() -> SinkProgress { inner.flush() }
    func passed(_ position: UInt64) {
        if let walPosition, position >= walPosition { passed = true }
        inner.passed(position)
    }
    var keptPosition: UInt64? { inner.keptPosition }
    func streamRestarted(after origin: Cursor) { inner.streamRestarted(after: origin) }
    func delivered(visibleIn snapshot: TransactionSnapshot) {
        if walPosition == nil, snapshot.covers(visibility) { passed = true }
        inner.delivered(visibleIn: snapshot)
    }
}
