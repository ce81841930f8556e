import ArgumentParser
import Foundation
import Logging
import RowcastCore
import RowcastPostgres

/// `--db` and `--log-level`, shared by every command that talks to PostgreSQL.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("libpq URI or key=value string; else DATABASE_URL, else PG* variables.", valueName: "conninfo"))
    var db: String?

    @Option(name: .long, help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: String?

    var settings: ConnectionSettings {
        ConnectionSettings.resolve(db: db)
    }

    /// Sends logs to stderr at the chosen level; data goes to stdout.
    func bootstrapLogging() throws -> Logger {
        let text = logLevel ?? "info"
        guard let level = Logger.Level(rawValue: text) else {
            throw CommandFailure.usage("unknown log level \"\(text)\"; use trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "rowcast")
        logger.logLevel = level
        return logger
    }

    /// Opens an ordinary connection or fails with exit 3.
    func connect() throws -> PostgresConnection {
        do {
            return try PostgresConnection(settings)
        } catch {
            throw CommandFailure.cannotConnect(error)
        }
    }
}

/// `--mode`, with the default each command documents.
struct ModeOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Capture mode: trigger or replication.", valueName: "mode"))
    var mode: String?

    init() {}

    init(mode: String?) {
        self.mode = mode
    }

    func resolve(default fallback: CaptureMode?) throws -> CaptureMode {
        guard let text = mode ?? fallback?.rawValue else {
            throw CommandFailure.usage("--mode is required: trigger or replication")
        }
        guard let mode = CaptureMode(rawValue: text) else {
            throw CommandFailure.usage("unknown mode \"\(text)\"; use trigger or replication")
        }
        return mode
    }
}

/// Parses `--table` values.
func parseTables(_ texts: [String]) throws -> [TableName] {
    try texts.map { text in
        guard let table = TableName(parsing: text) else {
            throw CommandFailure.usage("\"\(text)\" is not a table name; use schema.table or table")
        }
        return table
    }
}

