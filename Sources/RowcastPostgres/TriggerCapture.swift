import Foundation
import Logging
import RowcastCore
import Synchronization

/// Trigger mode's capture source: LISTENs for the trigger function's notifications
/// (and for plain NOTIFY on the channels the user names) and turns them into records.
///
/// It waits on the connection's socket, never spins; ``TriggerReader`` reads what was
/// committed since this listener's position whenever a notification says something
/// was; and when the connection drops it reconnects with backoff, LISTENs again and
/// catches up from its position (kept in `rowcast.listeners` for
/// `--listener-timeout`; ``TriggerListener``).
package final class TriggerCapture: BlockingCaptureSource {
    /// What to capture.
    package struct Configuration: Sendable {
        package var connection: ConnectionSettings
        /// Tables whose changes to forward; empty forwards every table that has the trigger.
        package var tables: Set<TableName>
        /// Channels whose plain NOTIFY traffic becomes `notify` records.
        package var channels: [String]
        /// The name this process listens under (`--listener`); nil: its host and tables.
        package var listenerName: String?
        /// How long a listener that stopped (or paused) stays registered, in seconds:
        /// what is committed meanwhile is kept for it, and it catches up when it comes
        /// back within this time (`--listener-timeout`).
        package var listenerTimeoutSeconds: Double
        /// How often the heartbeat, the catalog refresh and the trim run, in seconds.
        package var maintenanceSeconds: Double

        package init(
            connection: ConnectionSettings,
            tables: Set<TableName> = [],
            channels: [String] = [],
            listenerName: String? = nil,
            listenerTimeoutSeconds: Double = 300,
            maintenanceSeconds: Double = 10
        ) {
            self.connection = connection
            self.tables = tables
            self.channels = channels
            self.listenerName = listenerName
            self.listenerTimeoutSeconds = listenerTimeoutSeconds
            self.maintenanceSeconds = maintenanceSeconds
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
    /// Set by ``requestRead()``: the loop reads a window at its next turn (within 200 ms).
    private let readRequested = Atomic<Bool>(false)
    /// The connection made by ``connect(configuration:logger:)``, until `run` takes it.
    private let firstConnection: Mutex<PostgresConnection?>
    /// Whether rowcast 0.1's trigger function was installed at connect time.
    private let legacyInstalled: Bool
    /// The registration made by ``connect(configuration:logger:)``, until `run` takes it.
    private let firstListener = Mutex<TriggerListener?>(nil)

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
        let installed = try installedFunctions(on: connection)
        if configuration.capturesTables, installed.isEmpty {
            let tables = configuration.tables.isEmpty ? "T" : configuration.tables.map(\.description).sorted().joined(separator: " --table ")
            throw .notSetUp("trigger mode is not set up in this database (fix: rowcast setup --mode trigger --table \(tables))")
        }
        let legacy = installed.contains(legacyFunction)
        if configuration.capturesTables, legacy {
            logger.warning("trigger mode was set up by rowcast 0.1, whose notifications any database role can read and forge (fix: rowcast setup --mode trigger, which upgrades it in place while rowcast runs)")
        }
        let capture = TriggerCapture(configuration: configuration, connection: connection, logger: logger, legacyInstalled: legacy)
        try capture.checkTriggers(connection)
        try capture.learnCapturedTables(connection)
        try capture.listen(connection)
        if configuration.capturesTables, (try? TriggerListener.isInstalled(on: connection)) == true {
            // Registered before connect returns: what is committed from now on is kept for it.
            do {
                let listener = try TriggerListener.register(
                    preferred: configuration.listenerName ?? TriggerListener.defaultName(tables: configuration.tables),
                    timeoutSeconds: configuration.listenerTimeoutSeconds, on: connection, logger: logger
                )
                capture.firstListener.withLock { $0 = listener }
            } catch {
                throw .cannotConnect(error)
            }
        }
        capture.state.markConnected()
        return capture
    }

    private init(configuration: Configuration, connection: PostgresConnection, logger: Logger, legacyInstalled: Bool) {
        self.legacyInstalled = legacyInstalled
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
        var reader = TriggerReader(
            configuration: configuration, state: state, logger: logger, streamID: streamID, acceptsLegacy: legacyInstalled,
            listener: firstListener.withLock { $0 }
        )
        reader.stopping = { stop.isStopped }
        var sinkFailed = false
        var joinedConnection: PostgresConnection?
        ReconnectLoop(state: state, logger: logger, stop: stop).run(
            connection: connection,
            reconnect: {
                let fresh = try PostgresConnection(configuration.connection)
                try listen(fresh)
                return fresh
            },
            reconnected: "reconnected to PostgreSQL; catching up on what was committed meanwhile",
            finished: { stop.isStopped || sinkFailed },
            work: { current in
                if joinedConnection !== current {
                    // Registered (or registered again) on each new connection, whose
                    // session holds the name's lock, then caught up.
                    joinedConnection = current
                    guard try reader.join(on: current, sink: sink) else {
                        sinkFailed = true
                        return
                    }
                }
                guard try reader.maintain(on: current, sink: sink), try reader.pollIfDue(on: current, sink: sink) else {
                    sinkFailed = true
                    return
                }
                // Drain before waiting: a query (reading a transaction's rows) may have
                // pulled later notifications into libpq's queue, and the socket will
                // not say so again.
                let notifications = current.drainNotifications()
                if notifications.isEmpty {
                    // A snapshot waits for a window read after it was taken (notifications
                    // already queued were handled first: what they name, they place).
                    if readRequested.exchange(false, ordering: .relaxed) {
                        guard try reader.readRequested(on: current, sink: sink) else {
                            sinkFailed = true
                            return
                        }
                    }
                    if current.waitReadable(milliseconds: reader.polls ? Int32(TriggerReader.pollSeconds * 1000) : 200) { try current.consumeInput() }
                    return
                }
                guard try reader.handle(notifications, on: current, sink: sink) else {
                    sinkFailed = true
                    return
                }
                if case .failed = sink.flush() { sinkFailed = true }
            }
        )
    }

    package func requestRead() {
        readRequested.store(true, ordering: .relaxed)
    }

    // MARK: - Internals

    /// rowcast 0.1's row-level function; `rowcast setup` replaces it.
    private static let legacyFunction = "rowcast.capture()"
    /// The trigger functions a captured table's triggers call.
    static let captureFunctions = "(to_regprocedure('rowcast.capture_statement()'), to_regprocedure('rowcast.capture_row()'), to_regprocedure('rowcast.capture()'))"

    /// Which of the trigger functions exist.
    private static func installedFunctions(on connection: PostgresConnection) throws(CaptureError) -> Set<String> {
        do {
            let rows = try connection.execute(
                """
                SELECT f FROM unnest(ARRAY['rowcast.capture_statement()', 'rowcast.capture_row()', 'rowcast.capture()']) AS f
                WHERE to_regprocedure(f) IS NOT NULL
                """
            ).rows
            return Set(rows.compactMap { $0[0] })
        } catch {
            throw .cannotConnect(error)
        }
    }

    private func checkTriggers(_ connection: PostgresConnection) throws(CaptureError) {
        for table in configuration.tables.sorted(by: { $0.description < $1.description }) {
            let exists: String?
            do {
                // A trigger that captures rows: a partition detached from a set-up table
                // keeps only its own truncate trigger.
                exists = try connection.execute(
                    """
                    SELECT CASE WHEN bool_or(t.tgname <> 'rowcast_capture_truncate') THEN 'rows'
                                WHEN count(*) > 0 THEN 'truncate' ELSE 'none' END
                    FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND t.tgfoid IN \(Self.captureFunctions)
                    """,
                    [table.quoted]
                ).scalar
            } catch {
                throw .cannotConnect(error)
            }
            if exists == "truncate" {
                throw .notSetUp("table \(table) has only rowcast's truncate trigger, so its rows are not captured (a partition detached from a set-up table keeps only that one) (fix: rowcast setup --mode trigger --table \(table))")
            }
            if exists != "rows" {
                throw .notSetUp("table \(table) has no rowcast trigger (fix: rowcast setup --mode trigger --table \(table))")
            }
        }
    }

    /// The named tables, or every table with the trigger when none are named.
    private func learnCapturedTables(_ connection: PostgresConnection) throws(CaptureError) {
        guard configuration.capturesTables else { return state.setCapturedTables([]) }
        do {
            if !configuration.tables.isEmpty {
                // A partitioned table's changes are its partitions': those are captured too.
                var tables = configuration.tables
                for table in configuration.tables { tables.formUnion(try CatalogColumns.partitions(of: table, on: connection)) }
                try warnOfPartitionsWithoutTruncateTrigger(tables.subtracting(configuration.tables), on: connection)
                try warnOfDeferrableKeysWithoutOrderTrigger(tables, on: connection)
                try warnOfPartitionsCapturedTwice(tables, on: connection)
                state.setCapturedTables(tables)
                state.setColumns(try CatalogColumns.kinds(of: tables, on: connection))
                state.setPartitionAncestors(try CatalogColumns.partitionAncestors(of: tables, on: connection), of: tables)
                return
            }
            let rows = try connection.execute(
                """
                SELECT n.nspname, c.relname FROM pg_trigger t
                JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.tgfoid IN \(Self.captureFunctions) AND NOT t.tgisinternal
                """
            ).rows
            let tables = Set(rows.compactMap { row in row[0].flatMap { schema in row[1].map { TableName(schema: schema, name: $0) } } })
            let truncateOnly = try connection.execute(
                """
                SELECT n.nspname, c.relname FROM pg_trigger t
                JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.tgfoid IN \(Self.captureFunctions)
                GROUP BY n.nspname, c.relname HAVING bool_and(t.tgname = 'rowcast_capture_truncate') ORDER BY 1, 2
                """
            ).rows
            for row in truncateOnly {
                guard let schema = row[0], let name = row[1] else { continue }
                let table = TableName(schema: schema, name: name)
                logger.warning("table \(table) has only rowcast's truncate trigger, so its rows are not captured (a partition detached from a set-up table keeps only that one) (fix: rowcast setup --mode trigger --table \(table), or DROP TRIGGER rowcast_capture_truncate ON \(table.quoted))")
            }
            try warnOfDeferrableKeysWithoutOrderTrigger(tables, on: connection)
            try warnOfPartitionsCapturedTwice(tables, on: connection)
            state.setCapturedTables(tables)
            state.setColumns(try CatalogColumns.kinds(of: tables, on: connection))
            state.setPartitionAncestors(try CatalogColumns.partitionAncestors(of: tables, on: connection), of: tables)
        } catch {
            throw .cannotConnect(error)
        }
    }

    /// A partition created after its table was set up has the row trigger (PostgreSQL
    /// clones it) but not the truncate trigger: a TRUNCATE of it alone goes uncaptured.
    private func warnOfPartitionsWithoutTruncateTrigger(_ partitions: Set<TableName>, on connection: PostgresConnection) throws(PostgresError) {
        guard !partitions.isEmpty else { return }
        let bare = try connection.execute(
            """
            SELECT p FROM unnest($1::text[]) p JOIN pg_class c ON c.oid = to_regclass(p)
            WHERE c.relkind = 'r' AND NOT EXISTS (
                SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'rowcast_capture_truncate')
            ORDER BY 1
            """,
            [TriggerReader.textArray(partitions.map(\.quoted))]
        ).rows.compactMap { $0[0] }
        for partition in bare {
            logger.warning("partition \(partition) has no rowcast truncate trigger (it was created after its table was set up): a TRUNCATE of it alone is not captured (fix: rowcast setup --mode trigger --table with its partitioned table)")
        }
    }

    /// A DEFERRABLE key added after the table was set up has no commit-time mark
    /// (`rowcast_capture_order`): two transactions that meet only at that key's check
    /// may arrive out of commit order when a listener catches up.
    private func warnOfDeferrableKeysWithoutOrderTrigger(_ tables: Set<TableName>, on connection: PostgresConnection) throws(PostgresError) {
        guard !tables.isEmpty else { return }
        let bare = try connection.execute(
            """
            SELECT p FROM unnest($1::text[]) p JOIN pg_class c ON c.oid = to_regclass(p)
            WHERE EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.condeferrable AND k.contype IN ('p', 'u', 'x'))
              AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'rowcast_capture_order')
            ORDER BY 1
            """,
            [TriggerReader.textArray(tables.map(\.quoted))]
        ).rows.compactMap { row in tables.first { $0.quoted == row[0] } }
        for table in bare.sorted(by: { $0.description < $1.description }) {
            logger.warning("table \(table) has a DEFERRABLE key added after it was set up: two transactions that meet only at that key's check may arrive out of commit order after a pause (fix: rowcast setup --mode trigger --table \(table))")
        }
    }

    /// A table set up on its own, then attached as a partition of a set-up table, has
    /// its own statement triggers beside the clone of its parent's row trigger: each
    /// change is written, and delivered, twice until the parent is set up again.
    private func warnOfPartitionsCapturedTwice(_ tables: Set<TableName>, on connection: PostgresConnection) throws(PostgresError) {
        guard !tables.isEmpty else { return }
        let twice = try connection.execute(
            """
            SELECT p, (SELECT string_agg(a.inhparent::regclass::text, ', ') FROM pg_inherits a WHERE a.inhrelid = c.oid)
            FROM unnest($1::text[]) p JOIN pg_class c ON c.oid = to_regclass(p)
            WHERE c.relispartition
              AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'rowcast_capture')
              AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname IN ('rowcast_capture_insert', 'rowcast_capture_update', 'rowcast_capture_delete'))
            """,
            [TriggerReader.textArray(tables.map(\.quoted))]
        ).rows
        for row in twice {
            guard let table = tables.first(where: { $0.quoted == row[0] }) else { continue }
            let parent = row[1] ?? "its partitioned table"
            logger.warning("partition \(table) was set up on its own before it was attached: each of its changes is captured twice (fix: rowcast setup --mode trigger --table \(parent))")
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
