import Foundation
import RowcastCore

/// Opens snapshots on their own connections (``PostgresTableSnapshot``).
package struct PostgresSnapshotSource: SnapshotSource {
    let connection: ConnectionSettings
    /// Whether to read the WAL position after the snapshot (replication mode).
    let followsWAL: Bool

    package init(connection: ConnectionSettings, followsWAL: Bool) {
        self.connection = connection
        self.followsWAL = followsWAL
    }

    package func open(tables: [TableName]) throws(SnapshotError) -> any TableSnapshot {
        do {
            return try PostgresTableSnapshot(connection, tables: tables, followsWAL: followsWAL)
        } catch {
            throw SnapshotError("cannot take a snapshot: \(error.description)")
        }
    }
}

/// One snapshot: a REPEATABLE READ READ ONLY transaction on a connection of its own,
/// with the settings that shape `to_json`'s output pinned as the trigger pins them
/// (so its rows are byte for byte what either mode sends), and a lock wait bounded so
/// that it never queues the application's DDL behind it for long: a table that a
/// `lock_timeout` keeps out ends the snapshot with an error, not a wait.
final class PostgresTableSnapshot: TableSnapshot {
    private var connection: PostgresConnection?
    let visibility: TransactionSnapshot
    let walPosition: UInt64?

    /// How long reading a table may wait for its ACCESS SHARE lock (a DDL holding it).
    static let lockTimeout = "2s"
    /// The most bytes one page holds before the next is asked for with fewer rows.
    static let pageBytes = 4 << 20

    init(_ settings: ConnectionSettings, tables: [TableName], followsWAL: Bool) throws(PostgresError) {
        let connection = try PostgresConnection(settings)
        do throws(PostgresError) {
            // Named in pg_stat_activity, for whoever wonders what holds a transaction open.
            try connection.execute("SET application_name = 'rowcast snapshot'")
            try connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try connection.executeScript(
                """
                SET LOCAL search_path = pg_catalog, pg_temp; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY';
                SET LOCAL IntervalStyle = 'postgres'; SET LOCAL bytea_output = 'hex'; SET LOCAL extra_float_digits = 1;
                SET LOCAL lock_timeout = '\(Self.lockTimeout)'; SET LOCAL statement_timeout = 0;
                SET LOCAL idle_in_transaction_session_timeout = 0
                """
            )
            // Every table locked before the snapshot is taken (LOCK takes none): a rewrite
            // that commits after the snapshot (ALTER … TYPE, TRUNCATE) is not MVCC-safe,
            // and the table would look empty to it. From here on the application's DDL
            // waits for the snapshot, which gives way to it (``blocksAnother()``).
            if !tables.isEmpty {
                try connection.execute("LOCK TABLE " + tables.map(\.quoted).joined(separator: ", ") + " IN ACCESS SHARE MODE")
            }
            // The snapshot is taken by the first query, this one; the WAL position after it.
            // The insert position, not the write position: a commit with
            // synchronous_commit off is visible before its record is written out.
            let row = try connection.execute(
                followsWAL
                    ? """
                    SELECT txid_current_snapshot()::text, CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn()::text END,
                        current_setting('wal_block_size'), pg_size_bytes(current_setting('wal_segment_size'))
                    """
                    : "SELECT txid_current_snapshot()::text, NULL, NULL, NULL"
            ).rows.first
            guard let text = row?[0] ?? nil, let visibility = TransactionSnapshot(text) else {
                throw PostgresError.protocolViolation("the server gave no snapshot")
            }
            self.visibility = visibility
            // Past a page's header when the WAL ends on a page boundary: the stream's own
            // position stops at the end of the last record, before it.
            self.walPosition = (row?[1] ?? nil).flatMap(Self.parseLSN).map { insert in
                Self.endOfLastRecord(insert, page: (row?[2] ?? nil).flatMap { UInt64($0) }, segment: (row?[3] ?? nil).flatMap { UInt64($0) })
            }
            self.connection = connection
        } catch {
            connection.close()
            throw error
        }
    }

    /// The insert position less the page header it points past, if it does (a short
    /// header, 24 bytes, on a page; a long one, 40, at a segment's start).
    static func endOfLastRecord(_ insert: UInt64, page: UInt64?, segment: UInt64?) -> UInt64 {
        if let segment, segment > 0, insert % segment == 40 { return insert - 40 }
        if let page, page > 0, insert % page == 24 { return insert - 24 }
        return insert
    }

    static func parseLSN(_ text: String) -> UInt64? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16), high <= UInt64(UInt32.max), low <= UInt64(UInt32.max) else { return nil }
        return high << 32 | low
    }

    func read(_ table: TableName, conditions: [RowFilter], pageRows: Int, page: ([RawJSON]) -> Bool) throws(SnapshotError) {
        guard let connection else { throw SnapshotError("the snapshot is closed") }
        do {
            var parameters: [String?] = []
            var pushed: [String] = []
            for filter in conditions {
                if let sql = try Self.condition(for: filter, on: table, connection: connection, parameters: &parameters) { pushed.append(sql) }
            }
            let condition = pushed.isEmpty ? "" : " WHERE " + pushed.map { "(\($0))" }.joined(separator: " AND ")
            // `t.*`: a column named `t` cannot stand for the row. ONLY: the table's own rows,
            // as its changes are named (a partition's are the partition's, never its parent's).
            // The condition's casts may still refuse a value (out of range): then without it,
            // rowcast deciding every row, the transaction kept by a savepoint.
            try connection.execute("SAVEPOINT rowcast_condition")
            do {
                try connection.execute(
                    "DECLARE rowcast_snapshot NO SCROLL CURSOR FOR SELECT to_json(t.*)::text FROM ONLY \(table.quoted) t" + condition, parameters
                )
            } catch where !condition.isEmpty && error.sqlState?.hasPrefix("22") == true {
                try connection.execute("ROLLBACK TO SAVEPOINT rowcast_condition")
                try connection.execute("DECLARE rowcast_snapshot NO SCROLL CURSOR FOR SELECT to_json(t.*)::text FROM ONLY \(table.quoted) t")
            }
            try connection.execute("RELEASE SAVEPOINT rowcast_condition")
            var rows = max(1, pageRows)
            while true {
                let result = try connection.execute("FETCH \(rows) FROM rowcast_snapshot")
                var bytes = 0
                let values = result.rows.compactMap { row -> RawJSON? in
                    guard let text = row.first ?? nil else { return nil }
                    bytes += text.utf8.count
                    // As trigger mode sends it: a `json` column's line breaks as spaces.
                    return TriggerReader.oneLine(text)
                }
                let full = result.rows.count == rows
                if !values.isEmpty, !page(values) { break }
                guard full else { break }
                // Large rows: fewer at a time, so a page's memory stays bounded.
                if bytes > Self.pageBytes { rows = max(1, rows / 2) } else if bytes < Self.pageBytes / 4 { rows = min(max(1, pageRows), rows * 2) }
            }
            try connection.execute("CLOSE rowcast_snapshot")
        } catch {
            throw SnapshotError("cannot read \(table): \(error.description)")
        }
    }

    func columns(of tables: [TableName]) throws(SnapshotError) -> [TableName: [String: ColumnKind]] {
        guard let connection else { throw SnapshotError("the snapshot is closed") }
        do {
            return try CatalogColumns.kinds(of: Set(tables), on: connection)
        } catch {
            throw SnapshotError("cannot read the columns of \(tables.map(\.description).joined(separator: ", ")): \(error.description)")
        }
    }

    func blocksAnother() -> Bool {
        guard let connection else { return false }
        let waits = try? connection.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE NOT l.granted AND pg_catalog.pg_backend_pid() = ANY (pg_catalog.pg_blocking_pids(l.pid)))"
        ).scalar
        return waits == "t"
    }

    func close() {
        guard let connection else { return }
        self.connection = nil
        _ = try? connection.execute("ROLLBACK")
        connection.close()
    }

    deinit { close() }

    /// The part of `filter` PostgreSQL can decide exactly as rowcast does, as a condition
    /// whose values are bound parameters (appended to `parameters`); nil when the
    /// column's type has no such comparison (rowcast then decides every row). Shown
    /// equal by `FilterOracleTests`: numbers compared as `numeric`, `real` and `double
    /// precision` in their own type, text in the "C" collation.
    static func condition(
        for filter: RowFilter, on table: TableName, connection: PostgresConnection, parameters: inout [String?]
    ) throws(PostgresError) -> String? {
        let type = try connection.execute(
            """
            SELECT a.atttypid::int FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = $1::regclass AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
            """,
            [table.quoted, filter.column]
        ).scalar.flatMap { Int($0) }
        let cast: String
        let valid: (String) -> Bool
        switch type {
        case 20, 21, 23, 1700: (cast, valid) = ("numeric", Self.isNumeric)
        case 700: (cast, valid) = ("float4", Self.isNumeric)
        case 701: (cast, valid) = ("float8", Self.isNumeric)
        // `null` is also JSON null to a filter (`eq.null` matches a null column), never to SQL.
        case 25, 1043: (cast, valid) = ("text", { $0 != "null" })
        default: return nil
        }
        guard filter.values.allSatisfy(valid), !filter.values.contains(where: { $0.utf8.contains(0) }) else { return nil }
        let column = "t." + TableName.quoteIdentifier(filter.column)
        let left = cast == "text" ? column + " COLLATE \"C\"" : cast == "numeric" ? column + "::numeric" : column
        func parameter(_ value: String) -> String {
            parameters.append(value)
            return "$\(parameters.count)::\(cast)"
        }
        switch filter.comparison {
        case .eq: return "\(left) = \(parameter(filter.values[0]))"
        case .neq: return "\(left) <> \(parameter(filter.values[0]))"
        case .lt: return "\(left) < \(parameter(filter.values[0]))"
        case .lte: return "\(left) <= \(parameter(filter.values[0]))"
        case .gt: return "\(left) > \(parameter(filter.values[0]))"
        case .gte: return "\(left) >= \(parameter(filter.values[0]))"
        case .in: return "\(left) IN (" + filter.values.map(parameter).joined(separator: ", ") + ")"
        }
    }

    /// A decimal number, or NaN and the infinities as PostgreSQL spells them: what
    /// `numeric`, `real` and `double precision` all take (no hex, no `inf`).
    static func isNumeric(_ text: String) -> Bool {
        if text == "NaN" || text == "Infinity" || text == "-Infinity" { return true }
        var bytes = text.utf8[...]
        if let first = bytes.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") { bytes = bytes.dropFirst() }
        var digits = 0, dot = false
        while let byte = bytes.first {
            if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                digits += 1
            } else if byte == UInt8(ascii: "."), !dot {
                dot = true
            } else {
                break
            }
            bytes = bytes.dropFirst()
        }
        guard digits > 0 else { return false }
        if let e = bytes.first, e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") { bytes = bytes.dropFirst() }
            guard let digit = bytes.first, digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return false }
            bytes = bytes.drop { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        }
        return bytes.isEmpty
    }
}
