import RowcastCore

/// The columns of tables and how their values compare in a filter, from the catalog.
package enum CatalogColumns {
    /// How the columns of each of `tables` compare, in one query however many tables
    /// (the capture reads them every 10 s: a query per table stalled it for seconds
    /// with thousands). A table that is gone has no entry.
    package static func kinds(of tables: Set<TableName>, on connection: PostgresConnection) throws(PostgresError) -> [TableName: [String: ColumnKind]] {
        guard !tables.isEmpty else { return [:] }
        let named = Array(tables)
        let rows = try connection.execute(
            """
            SELECT n.i, a.attname, t.typcategory, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END,
                   \(connection.serverVersion >= 120000 ? "coalesce(c.collisdeterministic, true)" : "true")
            FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
            JOIN pg_attribute a ON a.attrelid = to_regclass(n.name)
            JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation c ON c.oid = a.attcollation
            WHERE a.attnum > 0 AND NOT a.attisdropped
            """,
            [textArray(named.map(\.quoted))]
        ).rows
        var columns: [TableName: [String: ColumnKind]] = [:]
        for row in rows {
            guard let index = row[0].flatMap({ Int($0) }), named.indices.contains(index - 1), let name = row[1] else { continue }
            let kind = ColumnKind(typeCategory: row[2] ?? "", type: row[3].flatMap { UInt32($0) }, deterministic: row[4] != "f")
            if columns[named[index - 1], default: [:]][name] == nil { columns[named[index - 1], default: [:]][name] = kind }
        }
        return columns
    }

    /// `values` as a PostgreSQL `text[]` literal: each element quoted, its quotes and
    /// backslashes escaped.
    static func textArray(_ values: [String]) -> String {
        "{" + values.map { value in
            "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }.joined(separator: ",") + "}"
    }

    /// The columns of relation `oid` (a Relation message's): each one's type OID and how
    /// it compares, as ``kinds(of:on:)`` reads them. Empty for a relation that is gone.
    package static func columns(ofRelation oid: UInt32, on connection: PostgresConnection) throws(PostgresError) -> [String: (type: UInt32, kind: ColumnKind)] {
        let rows = try connection.execute(
            """
            SELECT a.attname, a.atttypid::int8, t.typcategory, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END,
                   \(connection.serverVersion >= 120000 ? "coalesce(c.collisdeterministic, true)" : "true")
            FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation c ON c.oid = a.attcollation
            WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
            """,
            [String(oid)]
        ).rows
        var columns: [String: (type: UInt32, kind: ColumnKind)] = [:]
        for row in rows {
            guard let name = row[0], let type = row[1].flatMap({ UInt32($0) }) else { continue }
            columns[name] = (type, ColumnKind(typeCategory: row[2] ?? "", type: row[3].flatMap { UInt32($0) }, deterministic: row[4] != "f"))
        }
        return columns
    }

    /// The partitioned tables relation `oid` is a partition of, at any depth (none for a
    /// table that is no partition, one that is gone, or before PostgreSQL 12).
    package static func partitionAncestors(ofRelation oid: UInt32, on connection: PostgresConnection) throws(PostgresError) -> Set<TableName> {
        guard connection.serverVersion >= 120000 else { return [] }
        let rows = try connection.execute(
            """
            SELECT n.nspname, c.relname FROM pg_partition_ancestors($1::oid) p
            JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE p.relid <> $1::oid
            """,
            [String(oid)]
        ).rows
        return Set(rows.compactMap { row in row[0].flatMap { schema in row[1].map { TableName(schema: schema, name: $0) } } })
    }

    /// Of `tables`, those whose replica identity is FULL: their updates and deletes carry
    /// the whole old row in replication mode.
    package static func fullIdentity(of tables: Set<TableName>, on connection: PostgresConnection) throws(PostgresError) -> Set<TableName> {
        var full: Set<TableName> = []
        for table in tables {
            let result = try connection.execute("SELECT relreplident = 'f' FROM pg_class WHERE oid = to_regclass($1)", [table.quoted])
            if result.scalar == "t" { full.insert(table) }
        }
        return full
    }

    /// For each of `tables` that is a partition, the partitioned tables it belongs to
    /// (at any depth; none before PostgreSQL 12), in one query however many tables.
    package static func partitionAncestors(of tables: Set<TableName>, on connection: PostgresConnection) throws(PostgresError) -> [TableName: Set<TableName>] {
        guard !tables.isEmpty, connection.serverVersion >= 120000 else { return [:] }
        let named = Array(tables)
        let rows = try connection.execute(
            """
            SELECT n.i, pn.nspname, pc.relname
            FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i),
                 LATERAL pg_partition_ancestors(to_regclass(n.name)) p
            JOIN pg_class pc ON pc.oid = p.relid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
            WHERE p.relid <> to_regclass(n.name)
            """,
            [textArray(named.map(\.quoted))]
        ).rows
        var ancestors: [TableName: Set<TableName>] = [:]
        for row in rows {
            guard let index = row[0].flatMap({ Int($0) }), named.indices.contains(index - 1), let schema = row[1], let name = row[2] else { continue }
            ancestors[named[index - 1], default: []].insert(TableName(schema: schema, name: name))
        }
        return ancestors
    }

    /// The partitioned tables `table` is a partition of, at any depth (none for a table
    /// that is no partition, or on a server before PostgreSQL 12).
    static func partitionAncestors(of table: TableName, on connection: PostgresConnection) throws(PostgresError) -> Set<TableName> {
        try partitionRelatives(of: table, through: "pg_partition_ancestors", on: connection)
    }

    /// The partitions of `table`, at any depth (none for a table that is not partitioned).
    static func partitions(of table: TableName, on connection: PostgresConnection) throws(PostgresError) -> Set<TableName> {
        try partitionRelatives(of: table, through: "pg_partition_tree", on: connection)
    }

    /// The tables `function` (a set-returning partition function whose rows have
    /// `relid`) names for `table`, but `table` itself.
    private static func partitionRelatives(of table: TableName, through function: String, on connection: PostgresConnection) throws(PostgresError) -> Set<TableName> {
        guard try connection.execute("SELECT current_setting('server_version_num')::int >= 120000").scalar == "t" else { return [] }
        let rows = try connection.execute(
            """
            SELECT n.nspname, c.relname FROM \(function)(to_regclass($1)) p
            JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE p.relid <> to_regclass($1)
            """,
            [table.quoted]
        ).rows
        return Set(rows.compactMap { row in row[0].flatMap { schema in row[1].map { TableName(schema: schema, name: $0) } } })
    }
}
