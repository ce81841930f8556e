import Foundation
import RowcastCore

/// Installs and removes trigger mode's database objects: the SQL in `sql/`,
/// embedded in the binary, plus the capture triggers on each table (`rowcast.attach`).
package enum TriggerSetup {
    /// `sql/rowcast_trigger.sql`: schema, changes table, trigger functions, `rowcast.attach`.
    package static let installScript = String(decoding: PackageResources.rowcast_trigger_sql, as: UTF8.self)
    /// `sql/rowcast_trigger_teardown.sql`.
    package static let teardownScript = String(decoding: PackageResources.rowcast_trigger_teardown_sql, as: UTF8.self)

    /// The advisory lock that serialises setups and teardowns ("rowcast" in ASCII).
    static let setupLockKey: Int64 = 0x726F_7763_6173_74

    /// Installs the function and attaches it to `tables`, in one transaction.
    /// Idempotent: running it again replaces the function and the triggers.
    package static func install(on connection: PostgresConnection, tables: [TableName]) throws(SetupError) {
        do {
            for table in tables {
                let kind = try connection.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass($1)", [table.quoted])
                guard let relkind = kind.scalar else { throw SetupError.unknownTable(table) }
                guard relkind == "r" || relkind == "p" else { throw SetupError.notATable(table, relkind: relkind) }
            }
            var attempt = 1
            while try !installOnce(on: connection, tables: tables) {
                guard attempt < lockAttempts else {
                    throw SetupError.tablesLocked(tables, holders: try lockHolders(of: tables, on: connection))
                }
                attempt += 1
                usleep(useconds_t(lockPauseSeconds * 1_000_000))
            }
        } catch {
            throw SetupError(wrapping: error)
        }
    }

    /// How long setup waits for its tables' lock, and how many times: a request for an
    /// ACCESS EXCLUSIVE lock queues every later reader and writer of the table behind
    /// it, so setup never waits long for a transaction that holds one (a long query, a
    /// session idle in a transaction); it lets go, pauses, and tries again.
    static let lockTimeoutSeconds = 3
    static let lockAttempts = 5
    static let lockPauseSeconds = 1.0

    /// One attempt, in one transaction: false when a lock it needs was not granted
    /// within ``lockTimeoutSeconds``, or it was the victim of a deadlock (nothing
    /// changed). Every lock it waits for is bounded: the tables', and rowcast.changes'
    /// when an upgrade builds its index (writers of other captured tables hold that one).
    private static func installOnce(on connection: PostgresConnection, tables: [TableName]) throws(PostgresError) -> Bool {
        try connection.execute("BEGIN")
        do {
            // Two setups at once would race on CREATE OR REPLACE FUNCTION.
            try connection.execute("SELECT pg_advisory_xact_lock(\(setupLockKey))")
            try connection.execute("SET LOCAL lock_timeout = '\(lockTimeoutSeconds)s'")
            // The tables first, as a writer takes them (its table, then the changes its
            // trigger writes): locking rowcast.changes before a table a writer holds
            // would deadlock with that writer, and PostgreSQL might abort the writer.
            if !tables.isEmpty {
                try connection.execute("LOCK TABLE \(tables.map(\.quoted).joined(separator: ", ")) IN ACCESS EXCLUSIVE MODE")
            }
            try connection.executeScript(installScript)
            for table in tables {
                try connection.execute("SELECT rowcast.attach($1::regclass)", [table.quoted])
            }
            try connection.execute("COMMIT")
            return true
        } catch where error.sqlState == "55P03" || error.sqlState == "40P01" {
            _ = try? connection.execute("ROLLBACK")
            return false
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// The sessions holding a lock on one of `tables`, for the error: pid, state, for how
    /// long, and what they run.
    private static func lockHolders(of tables: [TableName], on connection: PostgresConnection) throws(PostgresError) -> [String] {
        try connection.execute(
            """
            SELECT a.pid, coalesce(a.state, ''), coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0),
                left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 80),
                -- Holders of the named tables first.
                bool_and(l.relation = to_regclass('rowcast.changes')) AS changes_only
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
              AND (l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) t)
                -- On rowcast.changes only what an upgrade's index build waits for (not
                -- listeners reading it): writers.
                OR (l.relation = to_regclass('rowcast.changes') AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'ShareLock')))
            GROUP BY 1, 2, 3, 4
            ORDER BY 5, 1
            """,
            [TriggerReader.textArray(tables.map(\.quoted))]
        ).rows.compactMap { row in
            guard let pid = row[0] else { return nil }
            return "pid \(pid) (\(row[1] ?? ""), in a transaction for \(row[2] ?? "?") s: \(row[3] ?? ""))"
        }
    }

    /// Removes everything ``install(on:tables:)`` made, triggers included.
    package static func teardown(on connection: PostgresConnection) throws(SetupError) {
        do {
            try connection.executeScript("BEGIN; SELECT pg_advisory_xact_lock(\(setupLockKey)); \(teardownScript) COMMIT;")
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw .database(error)
        }
    }
}

/// Why `setup` or `teardown` failed; every case is exit code 1 except a lost connection.
package enum SetupError: Error, Sendable, CustomStringConvertible {
    case unknownTable(TableName)
    case notATable(TableName, relkind: String)
    case database(PostgresError)
    case slot(SlotError)
    /// Replication: no publication and no table named; FOR ALL TABLES needs consent.
    case noTables(publication: String)
    /// Replication: FOR ALL TABLES would make UPDATE/DELETE fail on these tables.
    case allTablesWouldBreakWrites([String])
    /// Trigger: another transaction held a table's lock through every attempt.
    case tablesLocked([TableName], holders: [String])

    /// Any error from a set-up step, as the SetupError the CLI reports.
    init(wrapping error: any Error) {
        switch error {
        case let error as SetupError: self = error
        case let error as SlotError: self = .slot(error)
        case let error as PostgresError: self = .database(error)
        default: self = .database(.protocolViolation("\(error)"))
        }
    }

    package var description: String {
        switch self {
        case .unknownTable(let table):
            "table \(table) does not exist (fix: create it first, or name it as schema.table)"
        case .notATable(let table, let relkind):
            "\(table) is not a table (relkind '\(relkind)'); rowcast captures ordinary and partitioned tables"
        case .database(let error):
            error.description
        case .slot(let error):
            error.description
        case .noTables(let publication):
            "publication \"\(publication)\" does not exist and no --table was named (fix: name the tables to capture with --table, or pass --all-tables to publish every table)"
        case .tablesLocked(let tables, let holders):
            "could not take its locks on \((tables.map(\.description) + ["rowcast.changes"]).joined(separator: ", ")) within \(TriggerSetup.lockTimeoutSeconds) s, \(TriggerSetup.lockAttempts) times (waiting longer would hold up every reader and writer of the table behind setup): "
                + (holders.isEmpty ? "another transaction holds it" : "held by " + holders.prefix(3).joined(separator: "; "))
                + "; nothing was changed (fix: end that transaction, then run setup again)"
        case .allTablesWouldBreakWrites(let tables):
            "--all-tables would make every UPDATE and DELETE fail on \(tables.count) table\(tables.count == 1 ? "" : "s") without a primary key or replica identity: "
                + tables.prefix(10).joined(separator: ", ") + (tables.count > 10 ? ", …" : "")
                + " (fix: add a primary key or ALTER TABLE … REPLICA IDENTITY FULL, name the tables with --table, or pass --force-all-tables)"
        }
    }
}
