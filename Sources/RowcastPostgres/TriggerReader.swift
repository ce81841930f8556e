import Foundation
import Logging
import RowcastCore

/// Turns trigger mode's notifications into records, on the listening connection.
///
/// A notification on channel `rowcast` names a transaction (its 64-bit id); the
/// transaction's changes are the rows of `rowcast.changes` with that `batch`, which
/// only rowcast's role can read (sql/rowcast_trigger.sql says why). Since anyone may
/// NOTIFY, the payload is only a hint: a batch is delivered once (``DeliveredBatches``),
/// and a name with no rows behind it delivers nothing.
///
/// Payloads of rowcast 0.1's trigger (the row itself, or an overflow pointer) are
/// read only while that trigger may still be installed: when its function existed at
/// connect time and neither a transaction with rows in `rowcast.changes` nor the upgrade's own
/// (`upgraded`) has arrived. The upgrade replaces the trigger in one transaction, so
/// every old payload precedes both.
struct TriggerReader {
    /// Rows per transaction read with the other transactions of a group.
    static let firstRows = 20
    /// Rows per page after those; a transaction of any size is read a page at a time.
    static let pageRows = 200
    /// A row whose stored JSON is larger is fetched on its own: in a group query, and
    /// in a page query. Bounds what one query brings into memory.
    static let groupInlineBytes = 64 << 10
    static let bigRowBytes = 1 << 20
    /// How often the delivered rows are deleted.
    static let maintenanceInterval = 10.0
    private var maintenanceInterval: Double { min(Self.maintenanceInterval, configuration.retentionSeconds / 2) }

    let configuration: TriggerCapture.Configuration
    let state: CaptureState
    let logger: Logger
    let streamID: UInt64
    private(set) var sequence: UInt64 = 0
    private var batches: DeliveredBatches
    private var acceptsLegacy: Bool
    private var lastMaintenance = ProcessInfo.processInfo.systemUptime
    private var mayDelete = true
    private var ignored = 0
    private var lastIgnoredReport = -Double.infinity
    /// Tables outside `--table` seen in `rowcast.changes`, and whether each is a
    /// partition (at any depth) of a named table, whose records this capture forwards.
    private var partitions: [TableName: Bool] = [:]

    init(configuration: TriggerCapture.Configuration, state: CaptureState, logger: Logger, streamID: UInt64, acceptsLegacy: Bool) {
        self.configuration = configuration
        self.state = state
        self.logger = logger
        self.streamID = streamID
        self.acceptsLegacy = acceptsLegacy
        self.batches = DeliveredBatches(
            retention: configuration.retentionSeconds,
            orphanRetention: configuration.orphanRetentionSeconds
        )
    }

    /// Delivers what `notifications` stand for, in order. Returns false when the sink
    /// failed. Consecutive transaction ids are read together, in one query.
    mutating func handle(_ notifications: [PostgresNotification], on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        var group: [Int64] = []
        for notification in notifications {
            let isChanges = notification.channel == TriggerPayload.channel && configuration.capturesTables
            if isChanges, let batch = Self.batchID(notification.payload) {
                group.append(batch)
                continue
            }
            guard try read(batches: group, on: connection, sink: sink) else { return false }
            group.removeAll()
            if !isChanges {
                var record = ChangeRecord(cursor: placeholder, source: .trigger, op: .notify)
                record.channel = notification.channel
                record.payload = String(decoding: notification.payload, as: UTF8.self)
                deliver(record, to: sink)
            } else if notification.payload == Self.upgraded {
                acceptsLegacy = false
            } else if acceptsLegacy {
                if let record = try legacyRecord(notification, on: connection) { deliver(record, to: sink) }
            } else {
                noteIgnored(notification)
            }
        }
        return try read(batches: group, on: connection, sink: sink)
    }

    /// Deletes delivered rows older than the retention, and rows nobody read.
    mutating func maintain(on connection: PostgresConnection) throws(PostgresError) {
        let now = ProcessInfo.processInfo.systemUptime
        guard configuration.capturesTables, now - lastMaintenance >= maintenanceInterval else { return }
        lastMaintenance = now
        try refreshColumns(on: connection)
        if let xmin = try connection.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())").scalar.flatMap(Int64.init) {
            batches.noteHorizon(xmin: xmin, at: now)
        }
        let expired = batches.takeExpired(at: now)
        let orphans = batches.orphanHorizon(at: now)
        guard mayDelete, !expired.isEmpty || orphans != nil else { return }
        do {
            if !expired.isEmpty {
                // With --table, only those tables' rows: a rowcast capturing other
                // tables of the same transactions deletes its own.
                let list = "{" + expired.map(String.init).joined(separator: ",") + "}"
                if configuration.tables.isEmpty {
                    try connection.execute("DELETE FROM rowcast.changes WHERE batch = ANY($1::bigint[])", [list])
                } else {
                    let tables = forwardedTables.sorted()
                    try connection.execute(
                        """
                        DELETE FROM rowcast.changes WHERE batch = ANY($1::bigint[])
                            AND (schema_name, table_name) IN (SELECT * FROM unnest($2::text[], $3::text[]))
                        """,
                        [list, Self.textArray(tables.map(\.schema)), Self.textArray(tables.map(\.name))]
                    )
                }
            }
            if let orphans {
                try connection.execute("DELETE FROM rowcast.changes WHERE batch < $1::bigint", [String(orphans)])
            }
        } catch {
            guard let state = error.sqlState else { throw error }
            if state == "42501" {
                mayDelete = false
                logger.error("cannot delete delivered changes from rowcast.changes: \(error) (fix: GRANT DELETE ON rowcast.changes to the role rowcast connects as; until then the table grows, and a replayed notification older than the retention is delivered again)")
            } else {
                logger.warning("could not delete delivered changes from rowcast.changes: \(error)")
            }
        }
    }

    // MARK: - Batches

    /// A text[] literal.
    static func textArray(_ items: [String]) -> String {
        "{" + items.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"
    }

    /// What the set-up script sends once it replaced rowcast 0.1's trigger.
    static let upgraded = Array("upgraded".utf8)

    /// A payload of decimal digits only: a transaction id.
    static func batchID(_ payload: [UInt8]) -> Int64? {
        guard !payload.isEmpty, payload.count <= 19, payload.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int64(String(decoding: payload, as: UTF8.self))
    }

    /// One row of `rowcast.changes`, as the page queries select it.
    private struct ChangeRow {
        var batch: Int64
        var n: Int64
        var op: RowcastCore.Operation
        var table: TableName
        var row: String?
        var old: String?
        var big: Bool
    }

    /// The columns the page queries select; a row whose stored JSON is over `inline`
    /// bytes comes without it (`big`), to be fetched on its own.
    private static func selectRows(inline: Int) -> String {
        """
        SELECT batch, n, op, schema_name, table_name,
            CASE WHEN big THEN NULL ELSE row_json END, CASE WHEN big THEN NULL ELSE old_json END, big
        FROM (SELECT *, coalesce(pg_column_size(row_json), 0) + coalesce(pg_column_size(old_json), 0) > \(inline) AS big
              FROM rowcast.changes
        """
    }

    /// Reads and delivers the transactions `batches` name, in that order: the first
    /// rows of each in one query, the rest of a large one a page at a time.
    private mutating func read(batches: [Int64], on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        guard !batches.isEmpty else { return true }
        var seen = Set<Int64>()
        let fresh = batches.filter { batch in
            guard seen.insert(batch).inserted, !self.batches.contains(batch) else {
                logger.debug("transaction \(batch) was already delivered; ignoring a repeated notification")
                return false
            }
            return true
        }
        guard !fresh.isEmpty else { return true }
        let list = "{" + fresh.map(String.init).joined(separator: ",") + "}"
        let first = try connection.execute(
            Self.selectRows(inline: Self.groupInlineBytes)
                + " WHERE batch = ANY($1::bigint[]) AND n <= \(Self.firstRows)) c ORDER BY batch, n",
            [list]
        ).rows
        var byBatch: [Int64: [ChangeRow]] = [:]
        for row in first {
            guard let change = changeRow(row) else { continue }
            byBatch[change.batch, default: []].append(change)
        }
        for batch in fresh {
            let rows = byBatch[batch] ?? []
            guard !rows.isEmpty else {
                // Not committed by the trigger (a NOTIFY from elsewhere), or deleted
                // because this process fell more than the retention behind.
                noteIgnored(batch: batch)
                continue
            }
            guard try deliver(rows, on: connection, sink: sink) else { return false }
            var after = rows.last?.n ?? 0
            var full = rows.count == Self.firstRows
            while full {
                // A large transaction: hand over what was read before reading more.
                if case .failed = sink.flush() { return false }
                let page = try connection.execute(
                    Self.selectRows(inline: Self.bigRowBytes)
                        + " WHERE batch = $1::bigint AND n > $2::bigint ORDER BY n LIMIT \(Self.pageRows)) c ORDER BY n",
                    [String(batch), String(after)]
                ).rows.compactMap(changeRow)
                guard try deliver(page, on: connection, sink: sink) else { return false }
                after = page.last?.n ?? after
                full = page.count == Self.pageRows
            }
            self.batches.insert(batch, at: ProcessInfo.processInfo.systemUptime)
            // Old payloads all precede the first new one (see the type's comment);
            // an id with rows behind it is one, a bare id anyone could send is not.
            acceptsLegacy = false
        }
        return true
    }

    private func changeRow(_ row: [String?]) -> ChangeRow? {
        guard row.count == 8, let batch = row[0].flatMap(Int64.init), let n = row[1].flatMap(Int64.init),
              let op = row[2].flatMap(RowcastCore.Operation.init(rawValue:)), let schema = row[3], let table = row[4]
        else {
            logger.error("ignoring a malformed row of rowcast.changes")
            return nil
        }
        return ChangeRow(batch: batch, n: n, op: op, table: TableName(schema: schema, name: table), row: row[5], old: row[6], big: row[7] == "t")
    }

    /// Delivers the records of `rows` that this capture forwards.
    private mutating func deliver(_ rows: [ChangeRow], on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        for change in rows {
            guard try forwards(change.table, on: connection) else { continue }
            var values = (row: change.row, old: change.old)
            if change.big {
                let whole = try connection.execute(
                    "SELECT row_json, old_json FROM rowcast.changes WHERE batch = $1::bigint AND n = $2::bigint",
                    [String(change.batch), String(change.n)]
                ).rows.first
                values = (whole?[0] ?? nil, whole?[1] ?? nil)
            }
            var record = ChangeRecord(cursor: placeholder, source: .trigger, op: change.op)
            record.schema = change.table.schema
            record.table = change.table.name
            record.xid = UInt32(truncatingIfNeeded: change.batch)
            record.row = values.row.map { RawJSON(trusted: Array($0.utf8)) }
            record.old = values.old.map { RawJSON(trusted: Array($0.utf8)) }
            try learnIfNew(change.table, on: connection)
            deliver(record, to: sink)
        }
        return true
    }

    // MARK: - rowcast 0.1 payloads

    private mutating func legacyRecord(_ notification: PostgresNotification, on connection: PostgresConnection) throws(PostgresError) -> ChangeRecord? {
        guard var decoded = decodeLegacy(notification.payload, from: notification.pid) else { return nil }
        if case .overflow(let id) = decoded {
            guard let stored = try connection.execute("SELECT payload FROM rowcast.overflow WHERE id = $1", [String(id)]).scalar else {
                logger.error("overflow row \(id) was purged before it could be read: that change is lost")
                return nil
            }
            guard let inner = decodeLegacy(Array(stored.utf8), from: notification.pid) else { return nil }
            decoded = inner
        }
        switch decoded {
        case .change(let change):
            let name = TableName(schema: change.schema, name: change.table)
            guard try forwards(name, on: connection) else { return nil }
            try learnIfNew(name, on: connection)
            return change.record(cursor: placeholder)
        case .lost(let change, let reason):
            logger.error("the trigger could not deliver a \(change.op.rawValue) on \(change.schema).\(change.table) (xid \(change.xid.map(String.init) ?? "?")): \(reason)")
            return nil
        case .overflow:
            logger.error("an overflow row pointed at another overflow row; ignoring it")
            return nil
        }
    }

    private func decodeLegacy(_ payload: [UInt8], from pid: Int32) -> TriggerPayload? {
        do {
            return try TriggerPayload.decode(payload)
        } catch {
            logger.error("ignoring a notification on channel \(TriggerPayload.channel) from pid \(pid): \(error)")
            return nil
        }
    }

    // MARK: - Helpers

    private var placeholder: Cursor { .trigger(stream: streamID, sequence: 0) }

    private mutating func deliver(_ record: ChangeRecord, to sink: any RecordSink) {
        sequence += 1
        var stamped = record
        stamped.cursor = .trigger(stream: streamID, sequence: sequence)
        sink.deliver(stamped)
        state.count(1)
    }

    /// Whether this capture forwards `table`'s changes: every table's without
    /// `--table`; with it, a named table's and those of its partitions, present and
    /// future (a write into a partition is the partition's change, named so, as in
    /// replication mode). Asked of the catalog once per table.
    private mutating func forwards(_ table: TableName, on connection: PostgresConnection) throws(PostgresError) -> Bool {
        if configuration.tables.isEmpty || configuration.tables.contains(table) { return true }
        if let known = partitions[table] { return known }
        let ancestors = try CatalogColumns.partitionAncestors(of: table, on: connection)
        let forwarded = !ancestors.isDisjoint(with: configuration.tables)
        partitions[table] = forwarded
        return forwarded
    }

    /// The named tables and the partitions of theirs seen so far: what this process deletes.
    private var forwardedTables: Set<TableName> {
        configuration.tables.union(partitions.filter(\.value).keys)
    }

    /// The captured tables' columns again, for filters on a column added while rowcast
    /// runs (`ALTER TABLE … ADD COLUMN`): the catalog is read once per maintenance.
    private func refreshColumns(on connection: PostgresConnection) throws(PostgresError) {
        guard let tables = state.capturedTables, !tables.isEmpty else { return }
        state.setColumns(try CatalogColumns.kinds(of: tables, on: connection))
    }

    /// A table set up while rowcast runs: capture it from now on, columns and all.
    private func learnIfNew(_ table: TableName, on connection: PostgresConnection) throws(PostgresError) {
        guard !state.captures(table) else { return }
        state.capture(table, columns: try CatalogColumns.kinds(of: [table], on: connection)[table])
    }

    /// Logs notifications that delivered nothing, at most once a minute.
    private mutating func noteIgnored(_ notification: PostgresNotification? = nil, batch: Int64? = nil) {
        ignored += 1
        let now = ProcessInfo.processInfo.systemUptime
        guard now - lastIgnoredReport >= 60 else { return }
        lastIgnoredReport = now
        let what = batch.map { "one naming transaction \($0), which has no rows in rowcast.changes" }
            ?? "one that is not a transaction id"
        logger.warning("ignored \(ignored) notification\(ignored == 1 ? "" : "s") on channel \(TriggerPayload.channel) that the rowcast trigger did not send (last: \(what)\(notification.map { ", from pid \($0.pid)" } ?? "")); a NOTIFY from another session, or rows deleted because this process fell more than \(Int(configuration.retentionSeconds)) s behind")
        ignored = 0
    }
}
