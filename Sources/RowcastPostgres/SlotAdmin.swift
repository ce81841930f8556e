import Foundation
import RowcastCore

/// One logical replication slot as `rowcast slot status` reports it.
package struct SlotStatus: Sendable, Equatable {
    package var name: String
    package var plugin: String?
    package var database: String?
    package var active: Bool
    package var activePID: Int?
    package var restartLSN: String?
    package var confirmedFlushLSN: String?
    /// Bytes between the server's current WAL position and `confirmed_flush_lsn`.
    package var lagBytes: Int64?
    /// `lagBytes` in the server's own units (`pg_size_pretty`).
    package var lag: String?
    /// Bytes of WAL the slot keeps on disk (from `restart_lsn`).
    package var retainedBytes: Int64?
    package var walStatus: String?
    package var safeWALSize: Int64?
}

/// Reads and manages logical replication slots.
package enum SlotAdmin {
    /// Every logical slot, or the one named `slot` (empty when it does not exist).
    package static func status(on connection: PostgresConnection, slot: String? = nil) throws(PostgresError) -> [SlotStatus] {
        let result = try connection.execute(
            """
            WITH here AS (
                SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END AS lsn
            )
            SELECT slot_name, plugin, database, active, active_pid, restart_lsn::text, confirmed_flush_lsn::text,
                   pg_wal_lsn_diff(here.lsn, confirmed_flush_lsn)::bigint,
                   pg_size_pretty(pg_wal_lsn_diff(here.lsn, confirmed_flush_lsn)::bigint),
                   pg_wal_lsn_diff(here.lsn, restart_lsn)::bigint,
                   wal_status, safe_wal_size
            FROM pg_replication_slots, here
            WHERE slot_type = 'logical' AND ($1::text IS NULL OR slot_name = $1)
            ORDER BY slot_name
            """,
            [slot]
        )
        return result.rows.map { row in
            SlotStatus(
                name: row[0] ?? "",
                plugin: row[1],
                database: row[2],
                active: row[3] == "t",
                activePID: row[4].flatMap { Int($0) },
                restartLSN: row[5],
                confirmedFlushLSN: row[6],
                lagBytes: row[7].flatMap { Int64($0) },
                lag: row[8],
                retainedBytes: row[9].flatMap { Int64($0) },
                walStatus: row[10],
                safeWALSize: row[11].flatMap { Int64($0) }
            )
        }
    }

    /// `max_slot_wal_keep_size` in bytes; nil when unlimited (-1).
    package static func maxSlotWALKeepSize(on connection: PostgresConnection) throws(PostgresError) -> Int64? {
        let megabytes = try connection.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'").scalar
        guard let megabytes, let value = Int64(megabytes), value >= 0 else { return nil }
        return value * 1024 * 1024
    }

    /// Creates a logical slot using `pgoutput`.
    package static func create(on connection: PostgresConnection, slot: String) throws(SlotError) {
        try mappingErrors(slot: slot) {
            if try !status(on: connection, slot: slot).isEmpty { throw SlotError.exists(slot) }
            try connection.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot])
        }
    }

    /// Drops a slot. An active slot is refused unless `force`, which terminates its
    /// holder first and waits (up to `timeoutSeconds`) for the slot to be released.
    package static func drop(on connection: PostgresConnection, slot: String, force: Bool, timeoutSeconds: Double = 10) throws(SlotError) {
        try mappingErrors(slot: slot) {
            guard let current = try status(on: connection, slot: slot).first else { throw SlotError.missing(slot) }
            if current.active {
                guard force, let pid = current.activePID else { throw SlotError.active(slot, pid: current.activePID) }
                try connection.execute("SELECT pg_terminate_backend($1)", [String(pid)])
                var waited = 0.0
                while try status(on: connection, slot: slot).first?.active == true {
                    guard waited < timeoutSeconds else { throw SlotError.active(slot, pid: pid) }
                    usleep(100_000)
                    waited += 0.1
                }
            }
            try connection.execute("SELECT pg_drop_replication_slot($1)", [slot])
        }
    }

    /// Runs `body`, turning server errors into the ``SlotError`` users can act on.
    private static func mappingErrors(slot: String, _ body: () throws -> Void) throws(SlotError) {
        do {
            try body()
        } catch let error as SlotError {
            throw error
        } catch let error as PostgresError {
            throw SlotError.from(error, slot: slot)
        } catch {
            throw SlotError.database(.protocolViolation("\(error)"))
        }
    }
}

/// Why a slot command failed. All are exit code 1.
package enum SlotError: Error, Sendable, CustomStringConvertible {
    case missing(String)
    case exists(String)
    case active(String, pid: Int?)
    case needsLogicalWAL
    case database(PostgresError)

    static func from(_ error: PostgresError, slot: String) -> SlotError {
        switch error.sqlState {
        case "42704": return .missing(slot)
        case "42710": return .exists(slot)
        case "55006": return .active(slot, pid: nil)
        case "55000" where "\(error)".contains("wal_level"): return .needsLogicalWAL
        default: return .database(error)
        }
    }

    package var description: String {
        switch self {
        case .missing(let slot):
            "replication slot \"\(slot)\" does not exist (fix: rowcast slot create \(slot), or rowcast setup --mode replication)"
        case .exists(let slot):
            "replication slot \"\(slot)\" already exists (see: rowcast slot status --slot \(slot))"
        case .active(let slot, let pid):
            "replication slot \"\(slot)\" is in use by process \(pid.map(String.init) ?? "?") (fix: stop that consumer, or rowcast slot drop \(slot) --force to terminate it)"
        case .needsLogicalWAL:
            "logical replication slots need wal_level = logical (fix: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL)"
        case .database(let error):
            error.description
        }
    }
}
