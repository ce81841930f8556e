import Foundation
import Logging
import RowcastCore
import Synchronization

/// Trigger mode's capture source: LISTENs for the trigger function's notifications
/// (and for plain NOTIFY on the channels the user names) and turns them into records.
///
/// It waits on the connection's socket, never spins; it reads oversized changes from
/// `rowcast.overflow`; and when the connection drops it reconnects with backoff and
/// LISTENs again. NOTIFY is not durable: changes committed while rowcast is not
/// listening are not seen, which is said loudly in the log (replication mode replays
/// them).
package final class TriggerCapture: BlockingCaptureSource {
    /// What to capture.
    package struct Configuration: Sendable {
        package var connection: ConnectionSettings
        /// Tables whose changes to forward; empty forwards every table that has the trigger.
        package var tables: Set<TableName>
        /// Channels whose plain NOTIFY traffic becomes `notify` records.
        package var channels: [String]
        /// How long overflow rows are kept for other listeners before being purged.
        package var overflowRetentionSeconds: Int

        package init(
            connection: ConnectionSettings,
            tables: Set<TableName> = [],
            channels: [String] = [],
            overflowRetentionSeconds: Int = 3600
        ) {
            self.connection = connection
            self.tables = tables
            self.channels = channels
            self.overflowRetentionSeconds = overflowRetentionSeconds
        }

        /// Whether table changes are captured (and so the trigger must be installed):
        /// when tables are named, or when nothing else is. `--channel` alone captures
        /// only those channels.
        var capturesTables: Bool { !tables.isEmpty || channels.isEmpty }
    }

    package let configuration: Configuration
    package let state: CaptureState
    package var mode: CaptureMode { .trigger }
    package var origin: Cursor { .trigger(stream: streamID, sequence: 0) }
    private let logger: Logger
    /// Identifies this process's stream in cursors.
    private let streamID: UInt64
    /// The connection made by ``connect(configuration:logger:)``, until `run` takes it.
    private let firstConnection: Mutex<PostgresConnection?>

    /// Connects and starts listening. Errors here are the user's to fix (a bad
    /// conninfo, missing set-up), so they are thrown rather than retried; once
    /// running, a lost connection is retried forever.
    package static func connect(configuration: Configuration, logger: Logger) throws(CaptureError) -> TriggerCapture {
        let connection: PostgresConnection
        do {
            connection = try PostgresConnection(configuration.connection)
        } catch {
            throw .cannotConnect(error)
        }
        if configuration.capturesTables, try !triggerInstalled(on: connection) {
            let tables = configuration.tables.isEmpty ? "T" : configuration.tables.map(\.description).sorted().joined(separator: " --table ")
            throw .notSetUp("trigger mode is not set up in this database (fix: rowcast setup --mode trigger --table \(tables))")
        }
        let capture = TriggerCapture(configuration: configuration, connection: connection, logger: logger)
        try capture.checkTriggers(connection)
        try capture.learnCapturedTables(connection)
        try capture.listen(connection)
        capture.state.markConnected()
        return capture
    }

    private init(configuration: Configuration, connection: PostgresConnection, logger: Logger) {
        self.configuration = configuration
        self.state = CaptureState()
        self.logger = logger
        self.streamID = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        self.firstConnection = Mutex(connection)
    }

    package func run(sink: any RecordSink, stop: StopSignal) async {
        await runBlockingOnThread(named: "rowcast-listen", stop: stop) { stop in
            self.runBlocking(sink: sink, stop: stop)
        }
    }

    /// Captures until `stop` fires or the sink fails, delivering records to `sink` on
    /// the calling thread. NOTIFY cannot be replayed, so there is nothing to confirm.
    package func runBlocking(sink: any RecordSink, stop: StopSignal) {
        var connection: PostgresConnection? = firstConnection.withLock { connection in
            defer { connection = nil }
            return connection
        }
        var sequence: UInt64 = 0
        var lastPurge = Date.distantPast
        var sawOverflow = false
        var sinkFailed = false
        ReconnectLoop(state: state, logger: logger, stop: stop).run(
            connection: connection,
            reconnect: {
                let fresh = try PostgresConnection(configuration.connection)
                try listen(fresh)
                return fresh
            },
            reconnected: "reconnected to PostgreSQL; changes committed while disconnected were not captured (trigger mode cannot replay them; replication mode can)",
            finished: { stop.isStopped || sinkFailed },
            work: { current in
                // Drain before waiting: a query (an overflow read) may have pulled later
                // notifications into libpq's queue, and the socket will not say so again.
                let notifications = current.drainNotifications()
                if notifications.isEmpty {
                    if current.waitReadable(milliseconds: 200) { try current.consumeInput() }
                    return
                }
                var delivered = 0
                for notification in notifications {
                    guard let record = try record(for: notification, on: current, sawOverflow: &sawOverflow) else { continue }
                    // A table set up while rowcast runs: capture it from now on, columns and all.
                    if let schema = record.schema, let name = record.table, case let table = TableName(schema: schema, name: name), !state.captures(table) {
                        state.capture(table, columns: try CatalogColumns.kinds(of: [table], on: current)[table])
                    }
                    sequence += 1
                    var stamped = record
                    stamped.cursor = .trigger(stream: streamID, sequence: sequence)
                    sink.deliver(stamped)
                    delivered += 1
                }
                state.count(delivered)
                if case .failed = sink.flush() {
                    sinkFailed = true
                    return
                }
                if sawOverflow, Date().timeIntervalSince(lastPurge) > 60 {
                    lastPurge = Date()
                    try purgeOverflow(on: current)
                }
            }
        )
    }

    // MARK: - Internals

    private static func triggerInstalled(on connection: PostgresConnection) throws(CaptureError) -> Bool {
        do {
            return try connection.execute("SELECT to_regprocedure('rowcast.capture()') IS NOT NULL").scalar == "t"
        } catch {
            throw .cannotConnect(error)
        }
    }

    private func checkTriggers(_ connection: PostgresConnection) throws(CaptureError) {
        for table in configuration.tables.sorted(by: { $0.description < $1.description }) {
            let exists: String?
            do {
                exists = try connection.execute(
                    """
                    SELECT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = to_regclass($1)
                        AND t.tgfoid = 'rowcast.capture()'::regprocedure AND NOT t.tgisinternal)
                    """,
                    [table.quoted]
                ).scalar
            } catch {
                throw .cannotConnect(error)
            }
            if exists != "t" {
                throw .notSetUp("table \(table) has no rowcast trigger (fix: rowcast setup --mode trigger --table \(table))")
            }
        }
    }

    /// The named tables, or every table with the trigger when none are named.
    private func learnCapturedTables(_ connection: PostgresConnection) throws(CaptureError) {
        guard configuration.capturesTables else { return state.setCapturedTables([]) }
        do {
            if !configuration.tables.isEmpty {
                state.setCapturedTables(configuration.tables)
                state.setColumns(try CatalogColumns.kinds(of: configuration.tables, on: connection))
                return
            }
            let rows = try connection.execute(
                """
                SELECT n.nspname, c.relname FROM pg_trigger t
                JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.tgfoid = 'rowcast.capture()'::regprocedure AND NOT t.tgisinternal
                """
            ).rows
            let tables = Set(rows.compactMap { row in row[0].flatMap { schema in row[1].map { TableName(schema: schema, name: $0) } } })
            state.setCapturedTables(tables)
            state.setColumns(try CatalogColumns.kinds(of: tables, on: connection))
        } catch {
            throw .cannotConnect(error)
        }
    }

    private func listen(_ connection: PostgresConnection) throws(CaptureError) {
        var channels = configuration.capturesTables ? [TriggerPayload.channel] : []
        channels += configuration.channels.filter { $0 != TriggerPayload.channel }
        do {
            for channel in channels {
                try connection.execute("LISTEN " + TableName.quoteIdentifier(channel))
            }
        } catch {
            throw .cannotConnect(error)
        }
    }

    /// The record a notification stands for, or nil when it is filtered out or lost.
    private func record(
        for notification: PostgresNotification,
        on connection: PostgresConnection,
        sawOverflow: inout Bool
    ) throws(PostgresError) -> ChangeRecord? {
        let placeholder = Cursor.trigger(stream: streamID, sequence: 0)
        guard notification.channel == TriggerPayload.channel, configuration.capturesTables else {
            var record = ChangeRecord(cursor: placeholder, source: .trigger, op: .notify)
            record.channel = notification.channel
            record.payload = String(decoding: notification.payload, as: UTF8.self)
            return record
        }
        guard var decoded = decode(notification.payload, from: notification.pid) else { return nil }
        if case .overflow(let id) = decoded {
            sawOverflow = true
            guard let stored = try connection.execute("SELECT payload FROM rowcast.overflow WHERE id = $1", [String(id)]).scalar else {
                logger.error("overflow row \(id) was purged before it could be read: that change is lost (raise the overflow retention if rowcast falls this far behind)")
                return nil
            }
            guard let inner = decode(Array(stored.utf8), from: notification.pid) else { return nil }
            decoded = inner
        }
        switch decoded {
        case .change(let change):
            if !configuration.tables.isEmpty, !configuration.tables.contains(TableName(schema: change.schema, name: change.table)) {
                return nil
            }
            return change.record(cursor: placeholder)
        case .lost(let change, let reason):
            logger.error("the trigger could not deliver a \(change.op.rawValue) on \(change.schema).\(change.table) (xid \(change.xid.map(String.init) ?? "?")): \(reason)")
            return nil
        case .overflow:
            logger.error("an overflow row pointed at another overflow row; ignoring it")
            return nil
        }
    }

    private func decode(_ payload: [UInt8], from pid: Int32) -> TriggerPayload? {
        do {
            return try TriggerPayload.decode(payload)
        } catch {
            logger.error("ignoring a notification on channel \(TriggerPayload.channel) from pid \(pid): \(error)")
            return nil
        }
    }

    private func purgeOverflow(on connection: PostgresConnection) throws(PostgresError) {
        let purged = try connection.execute(
            "SELECT rowcast.purge_overflow(make_interval(secs => $1))",
            [String(configuration.overflowRetentionSeconds)]
        ).scalar
        if let purged, purged != "0" {
            logger.debug("purged \(purged) overflow rows older than \(configuration.overflowRetentionSeconds)s")
        }
    }
}

/// Why capture could not start. The CLI maps these to exit codes.
package enum CaptureError: Error, Sendable, CustomStringConvertible {
    /// Exit 3.
    case cannotConnect(PostgresError)
    /// Exit 1: a missing object the user must create.
    case notSetUp(String)

    package var description: String {
        switch self {
        case .cannotConnect(let error): error.description
        case .notSetUp(let why): why
        }
    }
}
