import RowcastCore

/// The columns of tables and how their values compare in a filter, from the catalog.
enum CatalogColumns {
    static func kinds(of tables: Set<TableName>, on connection: PostgresConnection) throws(PostgresError) -> [TableName: [String: ColumnKind]] {
        var columns: [TableName: [String: ColumnKind]] = [:]
        for table in tables {
            let rows = try connection.execute(
                """
                SELECT a.attname, t.typcategory FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                """,
                [table.quoted]
            ).rows
            guard !rows.isEmpty else { continue }
            columns[table] = Dictionary(rows.compactMap { row in row[0].map { ($0, ColumnKind(typeCategory: row[1] ?? "")) } }) { first, _ in first }
        }
        return columns
    }
}
