import Foundation
import Logging
import RowcastCore

/// Turns trigger mode's notifications into records, on the listening connection.
///
/// A notification on channel `rowcast` only says that a transaction with changes
/// committed (its payload, the transaction's id, is not trusted: anyone may NOTIFY).
/// The reader then reads a window: in one REPEATABLE READ transaction, every change of
/// the transactions its snapshot sees and the listener's position did not, each
/// transaction whole and in order of its last statement (which keeps every row's
/// history in commit order), then moves the position to that snapshot in the same
/// transaction (``TriggerListener``). So every committed change is read once, after a
/// pause or a restart too, and a notification replayed later reads nothing.
///
/// Payloads of rowcast 0.1's trigger (the row itself, or an overflow pointer) are
/// read only while that trigger may still be installed: when its function existed at
/// connect time and neither a window with changes nor the upgrade's own notification
/// (`upgraded`) has arrived. The upgrade replaces the trigger in one transaction, so
/// every old payload precedes both.
struct TriggerReader {
    /// Rows per page; a transaction of any size is read a page at a time.
    static let pageRows = 200
    /// A row whose stored JSON is larger is fetched on its own: bounds what one query
    /// brings into memory.
    static let bigRowBytes = 1 << 20

    let configuration: TriggerCapture.Configuration
    let state: CaptureState
    let logger: Logger
    let streamID: UInt64
    private(set) var sequence: UInt64 = 0
    /// Who this process is to the database, once registered.
    private(set) var listener: TriggerListener?
    private var acceptsLegacy: Bool
    private var lastMaintenance = ProcessInfo.processInfo.systemUptime
    private var mayDelete = true
    private var ignored = 0
    private var lastIgnoredReport = -Double.infinity
    /// The server allows prepared transactions, so the trigger sends no NOTIFY
    /// (PostgreSQL refuses to PREPARE a transaction that did): new changes are read
    /// every ``pollSeconds`` instead.
    private(set) var polls = false
    private var lastPoll = -Double.infinity
    static let pollSeconds = 0.1
    /// Transactions of a window whose position did not commit (the connection was lost
    /// mid-window), with the key of the last change delivered of each: the window is
    /// read again on the next connection, from after those.
    private var unconfirmed: [Int64: (seq: Int64, n: Int64)] = [:]
    /// Whether the process is stopping: a window then ends after the transaction it is
    /// reading, leaving the rest for the next start, instead of reading its whole
    /// backlog first.
    var stopping: @Sendable () -> Bool = { false }
    /// Tables outside `--table` seen in `rowcast.changes`, and whether each is a
    /// partition (at any depth) of a named table, whose records this capture forwards.
    private var partitions: [TableName: Bool] = [:]

    init(
        configuration: TriggerCapture.Configuration, state: CaptureState, logger: Logger, streamID: UInt64, acceptsLegacy: Bool,
        listener: TriggerListener? = nil
    ) {
        self.listener = listener
        self.configuration = configuration
        self.state = state
        self.logger = logger
        self.streamID = streamID
        self.acceptsLegacy = acceptsLegacy
    }

    /// Registers this process as a listener on `connection` (the listening one), or
    /// takes its registration up again after a reconnect, then reads what was committed
    /// since its position.
    mutating func join(on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        guard configuration.capturesTables else { return true }
        if var listener {
            try listener.rejoin(on: connection)
            self.listener = listener
        } else {
            // A set-up by rowcast 0.1 has no listeners yet: its payloads are read until
            // `rowcast setup` upgrades it (then `upgraded` arrives and this runs again).
            guard try TriggerListener.isInstalled(on: connection) else { return true }
            listener = try TriggerListener.register(
                preferred: configuration.listenerName ?? TriggerListener.defaultName(tables: configuration.tables),
                timeoutSeconds: configuration.listenerTimeoutSeconds, on: connection, logger: logger
            )
        }
        let prepared = try connection.execute("SHOW max_prepared_transactions").scalar ?? "0"
        if (prepared != "0") != polls {
            polls = prepared != "0"
            if polls {
                logger.info("this server allows prepared transactions (max_prepared_transactions = \(prepared)), and PostgreSQL refuses to PREPARE a transaction that sent a NOTIFY: the trigger sends none, and new changes are read every \(Int(Self.pollSeconds * 1000)) ms")
            }
        }
        lastPoll = ProcessInfo.processInfo.systemUptime
        return try readWindow(notified: nil, on: connection, sink: sink)
    }

    /// Where the trigger sends no NOTIFY (``polls``): reads what committed since the last
    /// read once ``pollSeconds`` went by. Returns false when the sink failed.
    mutating func pollIfDue(on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        let now = ProcessInfo.processInfo.systemUptime
        guard polls, listener != nil, now - lastPoll >= Self.pollSeconds else { return true }
        lastPoll = now
        return try readWindow(notified: nil, on: connection, sink: sink)
    }

    /// Reads a window now, for a snapshot waiting on the stream to pass it: it places no
    /// transaction (live order is the notifications'; those not notified yet wait for
    /// theirs), and moves the position over what was delivered, which the sink hears
    /// (``RecordSink/delivered(visibleIn:)``). In polling mode, a poll.
    mutating func readRequested(on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        guard listener != nil else { return true }
        return try readWindow(notified: polls ? nil : [], on: connection, sink: sink)
    }

    /// Delivers what `notifications` stand for, in order. Returns false when the sink
    /// failed. Any number of transaction notifications in a row is one window.
    mutating func handle(_ notifications: [PostgresNotification], on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        var notified: [Notified] = []
        for notification in notifications {
            let isChanges = notification.channel == TriggerPayload.channel && configuration.capturesTables
            if isChanges, let batch = Self.batchID(notification.payload) {
                notified.append(Notified(batch: batch, pid: notification.pid))
                continue
            }
            // What came before this notification is delivered before it.
            if !notified.isEmpty {
                guard try readWindow(notified: notified, on: connection, sink: sink) else { return false }
                notified.removeAll()
            }
            if !isChanges {
                var record = ChangeRecord(cursor: placeholder, source: .trigger, op: .notify)
                record.channel = notification.channel
                record.payload = String(decoding: notification.payload, as: UTF8.self)
                deliver(record, to: sink)
            } else if notification.payload == Self.upgraded {
                acceptsLegacy = false
                if listener == nil { guard try join(on: connection, sink: sink) else { return false } }
            } else if acceptsLegacy {
                if let record = try legacyRecord(notification, on: connection) { deliver(record, to: sink) }
            } else {
                noteIgnored(notification)
            }
        }
        return notified.isEmpty ? true : try readWindow(notified: notified, on: connection, sink: sink)
    }

    /// Every maintenance round (10 s): the heartbeat, the catalog's columns again, and
    /// the trim of what every live listener passed.
    mutating func maintain(on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        let now = ProcessInfo.processInfo.systemUptime
        guard configuration.capturesTables, now - lastMaintenance >= configuration.maintenanceSeconds else { return true }
        lastMaintenance = now
        try refreshColumns(on: connection)
        if let listener {
            if try !listener.heartbeat(on: connection) { guard try join(on: connection, sink: sink) else { return false } }
        } else {
            guard try join(on: connection, sink: sink) else { return false }
        }
        guard mayDelete, listener != nil else { return true }
        do {
            try TriggerListener.trim(on: connection)
        } catch {
            guard let state = error.sqlState else { throw error }
            if state == "42501" {
                mayDelete = false
                logger.error("cannot delete delivered changes from rowcast.changes: \(error) (fix: GRANT DELETE ON rowcast.changes, rowcast.listeners to the role rowcast connects as; until then the table grows)")
            } else {
                logger.warning("could not delete delivered changes from rowcast.changes: \(error)")
            }
        }
        return true
    }

    // MARK: - Batches

    /// A text[] literal.
    static func textArray(_ items: [String]) -> String {
        "{" + items.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"
    }

    /// What the set-up script sends once it replaced rowcast 0.1's trigger.
    static let upgraded = Array("upgraded".utf8)

    /// A transaction a notification named, and the session that sent it.
    struct Notified {
        var batch: Int64
        var pid: Int32
    }

    /// A payload of decimal digits only: a transaction id.
    static func batchID(_ payload: [UInt8]) -> Int64? {
        guard !payload.isEmpty, payload.count <= 19, payload.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int64(String(decoding: payload, as: UTF8.self))
    }

    /// One row of `rowcast.changes`, as the page queries select it.
    private struct ChangeRow {
        var batch: Int64
        /// Its statement, and its place in it: the change's key within the transaction.
        var seq: Int64
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
        SELECT batch, seq, n, op, schema_name, table_name,
            CASE WHEN big THEN NULL ELSE row_json END, CASE WHEN big THEN NULL ELSE old_json END, big
        FROM (SELECT *, coalesce(pg_column_size(row_json), 0) + coalesce(pg_column_size(old_json), 0) > \(inline) AS big
              FROM rowcast.changes
        """
    }

    /// Reads and delivers one window: the changes of the transactions committed
    /// between the listener's position and a new snapshot, in one REPEATABLE READ
    /// transaction that also moves the position, each transaction whole, a page at a
    /// time. Live (`notified`, the transactions notifications named, in commit order)
    /// it delivers those its own writer's notification named, in that order, and leaves
    /// the others the snapshot sees for their own notifications, so records follow
    /// commit order: a notification from any other session (anyone may NOTIFY, and a
    /// transaction's id is easy to guess before it commits) places nothing. Catching up
    /// (nil) it delivers every one, in order of each transaction's last statement (or
    /// commit-time mark, `rowcast.capture_order`), which keeps every row's history in
    /// commit order. Returns false when the sink failed (the position then stays, and
    /// the window is read again after a restart).
    private mutating func readWindow(notified: [Notified]?, on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        // Stopping: nothing more is read. A window that stopped early left the rest of
        // its backlog ahead of the position; a later transaction read now would jump
        // ahead of it.
        guard var listener, !stopping() else { return true }
        try connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        var committed = false
        defer { if !committed { _ = try? connection.execute("ROLLBACK") } }
        let snapshot = try connection.execute("SELECT txid_current_snapshot()::text").scalar ?? ""
        // Each transaction with the session that wrote it (NULL: written by a rowcast
        // before `pid`, any notification then places it).
        let rows = try connection.execute(
            """
            SELECT batch, min(pid) FROM rowcast.changes
            WHERE batch >= txid_snapshot_xmin($1::txid_snapshot) AND batch < txid_snapshot_xmax($2::txid_snapshot)
              AND txid_visible_in_snapshot(batch, $2::txid_snapshot) AND NOT txid_visible_in_snapshot(batch, $1::txid_snapshot)
            GROUP BY batch ORDER BY max(seq), batch
            """,
            [listener.position, snapshot]
        ).rows
        let seen = rows.compactMap { $0[0].flatMap(Int64.init) }
        var transactions = seen
        var deferred: [Int64] = []
        if let notified {
            var writers: [Int64: Int32?] = [:]
            for row in rows { if let batch = row[0].flatMap(Int64.init) { writers[batch] = .some(row[1].flatMap { Int32($0) }) } }
            var taken = Set<Int64>()
            transactions = notified.compactMap { notification in
                guard let writer = writers[notification.batch], writer == nil || writer == notification.pid,
                    taken.insert(notification.batch).inserted
                else { return nil }
                return notification.batch
            }
            deferred = seen.filter { !taken.contains($0) }
        }
        for (index, batch) in transactions.enumerated() {
            if index > 0, stopping() {
                // What is not read stays ahead of the position, for the next start.
                deferred += transactions[index...]
                break
            }
            // Statements are numbered from 1 (0: changes written before they were); a
            // transaction delivered in part by a window that did not commit goes on.
            var after: (seq: Int64, n: Int64) = unconfirmed[batch] ?? (-1, 0)
            var full = true
            while full {
                let page = try connection.execute(
                    Self.selectRows(inline: Self.bigRowBytes)
                        + " WHERE batch = $1::bigint AND (seq, n) > ($2::bigint, $3::bigint) AND op <> 'order' ORDER BY seq, n LIMIT \(Self.pageRows)) c ORDER BY seq, n",
                    [String(batch), String(after.seq), String(after.n)]
                ).rows.compactMap(changeRow)
                guard try deliver(page, on: connection, sink: sink) else { return false }
                // A large transaction: hand over what was read before reading more.
                if case .failed = sink.flush() { return false }
                if let last = page.last { after = (last.seq, last.n) }
                full = page.count == Self.pageRows
            }
            // Old payloads all precede the first new change (see the type's comment).
            acceptsLegacy = false
        }
        if case .failed = sink.flush() { return false }
        guard let position = TriggerListener.snapshot(snapshot, leaving: deferred, after: listener.position) else {
            logger.error("cannot read the snapshot \(snapshot); reading this window again")
            return true
        }
        guard try listener.advance(to: position, on: connection) else {
            // Dropped while away: what it read is delivered; joining again says what may be missing.
            try connection.execute("COMMIT")
            committed = true
            unconfirmed.removeAll()
            self.listener = listener
            return try join(on: connection, sink: sink)
        }
        try connection.execute("COMMIT")
        committed = true
        unconfirmed.removeAll()
        self.listener = listener
        // Every transaction the new position sees is delivered (or was before this
        // stream began): a snapshot taken before the window's is passed.
        if let visible = TransactionSnapshot(position) { sink.delivered(visibleIn: visible) }
        return true
    }

    private func changeRow(_ row: [String?]) -> ChangeRow? {
        guard row.count == 9, let batch = row[0].flatMap(Int64.init), let seq = row[1].flatMap(Int64.init), let n = row[2].flatMap(Int64.init),
              let op = row[3].flatMap(RowcastCore.Operation.init(rawValue:)), let schema = row[4], let table = row[5]
        else {
            logger.error("ignoring a malformed row of rowcast.changes")
            return nil
        }
        return ChangeRow(
            batch: batch, seq: seq, n: n, op: op, table: TableName(schema: schema, name: table), row: row[6], old: row[7], big: row[8] == "t"
        )
    }

    /// Delivers the records of `rows` that this capture forwards.
    private mutating func deliver(_ rows: [ChangeRow], on connection: PostgresConnection, sink: any RecordSink) throws(PostgresError) -> Bool {
        for change in rows {
            // Each change counts as delivered once handed over: a query that fails on
            // the way (a large row's own read, a new table's catalog) leaves the window
            // to be read again from after the last one, not from the page's start.
            guard try forwards(change.table, on: connection) else {
                unconfirmed[change.batch] = (change.seq, change.n)
                continue
            }
            var values = (row: change.row, old: change.old)
            if change.big {
                let whole = try connection.execute(
                    "SELECT row_json, old_json FROM rowcast.changes WHERE batch = $1::bigint AND seq = $2::bigint AND n = $3::bigint",
                    [String(change.batch), String(change.seq), String(change.n)]
                ).rows.first
                values = (whole?[0] ?? nil, whole?[1] ?? nil)
            }
            var record = ChangeRecord(cursor: placeholder, source: .trigger, op: change.op)
            record.schema = change.table.schema
            record.table = change.table.name
            record.xid = UInt32(truncatingIfNeeded: change.batch)
            record.row = values.row.map(Self.oneLine)
            record.old = values.old.map(Self.oneLine)
            try learnIfNew(change.table, on: connection)
            deliver(record, to: sink)
            unconfirmed[change.batch] = (change.seq, change.n)
        }
        return true
    }

    /// `to_json` embeds a `json` column as written, line breaks included; outside a
    /// string they are only whitespace (a JSON string cannot hold a raw one), and as
    /// spaces they keep NDJSON and SSE framing whole.
    static func oneLine(_ text: String) -> RawJSON {
        var bytes = Array(text.utf8)
        for index in bytes.indices where bytes[index] == 0x0A || bytes[index] == 0x0D { bytes[index] = 0x20 }
        return RawJSON(trusted: bytes)
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

    /// The captured tables' columns and partitioned tables again, for filters on a
    /// column added while rowcast runs (`ALTER TABLE … ADD COLUMN`) and for row rules
    /// (a column's type changed, a partition attached): the catalog is read once per
    /// maintenance.
    private func refreshColumns(on connection: PostgresConnection) throws(PostgresError) {
        guard let tables = state.capturedTables, !tables.isEmpty else { return }
        let ancestors = try CatalogColumns.partitionAncestors(of: tables, on: connection)
        state.setPartitionAncestors(ancestors, of: tables)
        state.setColumns(try CatalogColumns.kinds(of: tables, on: connection))
    }

    /// A table set up while rowcast runs: capture it from now on, columns and all.
    private func learnIfNew(_ table: TableName, on connection: PostgresConnection) throws(PostgresError) {
        guard !state.captures(table) else { return }
        // Its partitioned tables first: a row rule on one of them is its rule too.
        state.learnAncestors(of: table, try CatalogColumns.partitionAncestors(of: table, on: connection))
        state.capture(table, columns: try CatalogColumns.kinds(of: [table], on: connection)[table])
    }

    /// Logs notifications that are not the trigger's, at most once a minute.
    private mutating func noteIgnored(_ notification: PostgresNotification) {
        ignored += 1
        let now = ProcessInfo.processInfo.systemUptime
        guard now - lastIgnoredReport >= 60 else { return }
        lastIgnoredReport = now
        logger.warning("ignored \(ignored) notification\(ignored == 1 ? "" : "s") on channel \(TriggerPayload.channel) that the rowcast trigger did not send (last: one that is not a transaction id, from pid \(notification.pid)): a NOTIFY from another session")
        ignored = 0
    }
}
