import ArgumentParser
import Logging
import RowcastCore
import RowcastPostgres

/// The flags that choose and configure a capture source, shared by `tail` and `serve`.
struct CaptureOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Capture mode: trigger or replication (default: replication).", valueName: "mode"))
    var mode: String?

    @Option(name: .long, help: ArgumentHelp("A table to capture, schema.table or table (repeatable); default: all the mode sees.", valueName: "table"))
    var table: [String] = []

    @Option(name: .long, help: ArgumentHelp("trigger: forward plain NOTIFY traffic on this channel as op \"notify\" records (repeatable).", valueName: "channel"))
    var channel: [String] = []

    @Option(name: .long, help: ArgumentHelp("replication: the slot to consume, created when missing.", valueName: "name"))
    var slot: String = "rowcast"

    @Option(name: .long, help: ArgumentHelp("replication: the publication to use, created when missing.", valueName: "name"))
    var publication: String = "rowcast"

    @Flag(name: .long, help: "replication: with no --table and no publication, publish every table (FOR ALL TABLES), after checking that no table's UPDATE or DELETE would then fail.")
    var allTables = false

    @Flag(name: .long, help: "replication: --all-tables even though tables without a primary key or replica identity will then refuse UPDATE and DELETE.")
    var forceAllTables = false

    @Option(name: .long, help: ArgumentHelp("trigger: the name this process listens under; run again under it, it catches up on what was committed meanwhile (default: host and tables).", valueName: "name"))
    var listener: String?

    @Option(name: .long, help: ArgumentHelp("trigger: seconds a stopped or paused listener stays registered, its changes kept for it (default 300).", valueName: "seconds"))
    var listenerTimeout: Double = 300

    @Option(name: .long, help: ArgumentHelp("Deliver only records after this cursor.", valueName: "cursor"))
    var since: String?

    @Option(name: .long, help: ArgumentHelp("replication: confirm delivered positions to the server at least this often (default 10).", valueName: "seconds"))
    var statusInterval: Double = 10

    /// Connects the chosen source; failures become the contract's exit codes.
    func connect(
        _ settings: ConnectionSettings, endPosition: UInt64? = nil, onSlotLost: ReplicationCapture.SlotLostPolicy = .wait, logger: Logger
    ) throws -> any CaptureSource {
        let mode = try ModeOption(mode: mode).resolve(default: .replication)
        let tables = Set(try parseTables(table))
        guard statusInterval > 0 else { throw CommandFailure.usage("--status-interval takes a number of seconds above 0") }
        var cursor: Cursor?
        if let since {
            guard let parsed = Cursor(since) else { throw CommandFailure.usage("--since \"\(since)\" is not a rowcast cursor") }
            cursor = parsed
        }
        do {
            switch mode {
            case .trigger:
                guard endPosition == nil else {
                    throw CommandFailure.usage("--endpos needs --mode replication: it is a WAL position")
                }
                guard cursor == nil else {
                    throw CommandFailure.usage("--since needs --mode replication: a trigger-mode cursor is one process's (fix: run tail again under the same --listener name, and it catches up on what was committed meanwhile)")
                }
                // Three heartbeats (one every 10 s) at least: a live listener is never dropped.
                guard listenerTimeout >= 30, listenerTimeout <= 86_400 * 30 else {
                    throw CommandFailure.usage("--listener-timeout takes a number of seconds from 30 (three heartbeats) to 2592000 (30 days)")
                }
                if let listener, listener.isEmpty || listener.utf8.count > 200 {
                    throw CommandFailure.usage("--listener takes a name of 1 to 200 bytes")
                }
                return try TriggerCapture.connect(
                    configuration: .init(
                        connection: settings, tables: tables, channels: channel, listenerName: listener, listenerTimeoutSeconds: listenerTimeout
                    ),
                    logger: logger
                )
            case .replication:
                guard channel.isEmpty else {
                    throw CommandFailure.usage("--channel needs --mode trigger: NOTIFY is not written to the WAL (in replication mode, send pg_logical_emit_message instead)")
                }
                var configuration = ReplicationCapture.Configuration(
                    connection: settings, slot: slot, publication: publication,
                    session: .init(tables: tables, since: cursor, statusInterval: statusInterval, endPosition: endPosition)
                )
                configuration.onSlotLost = onSlotLost
                return try ReplicationCapture.connect(
                    configuration: configuration,
                    allTables: forceAllTables ? .evenIfWritesFail : (allTables ? .checked : .no),
                    logger: logger
                )
            }
        } catch let error as CaptureError {
            throw CommandFailure(error)
        }
    }
}
