import RowcastCore

/// Looks up how each type renders in `to_jsonb` (``ValueShape``), on an ordinary
/// connection beside the replication stream, caching per type OID. Built-in
/// scalars need no query. Used by one capture thread only.
final class TypeCatalog {
    private let settings: ConnectionSettings
    private var connection: PostgresConnection?
    private var cache: [UInt32: ValueShape] = [:]

    init(settings: ConnectionSettings) {
        self.settings = settings
    }

    /// Forgets what it learnt (a Relation message may mean a type changed).
    func invalidate() {
        cache.removeAll(keepingCapacity: true)
    }

    func shape(of oid: UInt32) throws(PostgresError) -> ValueShape {
        if let builtin = ValueShape.builtin(oid) { return builtin }
        if let cached = cache[oid] { return cached }
        let shape = try lookUp(oid, depth: 0)
        cache[oid] = shape
        return shape
    }

    private func lookUp(_ oid: UInt32, depth: Int) throws(PostgresError) -> ValueShape {
        if let builtin = ValueShape.builtin(oid) { return builtin }
        if let cached = cache[oid] { return cached }
        guard depth < 32 else { return .text }
        let connection = try catalogConnection()
        let row = try connection.execute(
            """
            SELECT t.typtype, t.typelem, t.typbasetype, t.typrelid, t.typcategory = 'A' AND t.typelem <> 0 AND t.typlen = -1,
                   e.typdelim
            FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
            WHERE t.oid = $1
            """,
            [String(oid)]
        ).rows.first
        guard let row else { return .text }
        let shape: ValueShape
        if row[0] == "d", let base = row[2].flatMap({ UInt32($0) }) {
            shape = try lookUp(base, depth: depth + 1)
        } else if row[4] == "t", let element = row[1].flatMap({ UInt32($0) }) {
            let delimiter = row[5]?.utf8.first ?? UInt8(ascii: ",")
            shape = .array(element: try lookUp(element, depth: depth + 1), delimiter: delimiter)
        } else if row[0] == "c", let relation = row[3] {
            let attributes = try connection.execute(
                "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                [relation]
            ).rows
            var shapes: [ValueShape.Attribute] = []
            for attribute in attributes {
                let type = attribute[1].flatMap { UInt32($0) } ?? 25
                shapes.append(ValueShape.Attribute(name: attribute[0] ?? "", shape: try lookUp(type, depth: depth + 1)))
            }
            shape = .composite(shapes)
        } else {
            shape = .text
        }
        cache[oid] = shape
        return shape
    }

    /// The stored generated columns of relation `oid`, in column order.
    func generatedColumns(of oid: UInt32) throws(PostgresError) -> [String] {
        try catalogConnection().execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated <> '' ORDER BY attnum",
            [String(oid)]
        ).rows.compactMap { $0.first ?? nil }
    }

    /// The columns of relation `oid` as the catalog has them now: each one's type OID
    /// and how it compares (``CatalogColumns/columns(ofRelation:on:)``).
    func columns(ofRelation oid: UInt32) throws(PostgresError) -> [String: (type: UInt32, kind: ColumnKind)] {
        try CatalogColumns.columns(ofRelation: oid, on: catalogConnection())
    }

    /// How the columns of `tables` compare, and what each is a partition of, as the
    /// catalog has them now (read every ``Driver/catalogSeconds``).
    func tables(_ tables: Set<TableName>) throws(PostgresError) -> (kinds: [TableName: [String: ColumnKind]], ancestors: [TableName: Set<TableName>]) {
        let connection = try catalogConnection()
        return (try CatalogColumns.kinds(of: tables, on: connection), try CatalogColumns.partitionAncestors(of: tables, on: connection))
    }

    /// The partitioned tables relation `oid` is a partition of, at any depth.
    func partitionAncestors(ofRelation oid: UInt32) throws(PostgresError) -> Set<TableName> {
        try CatalogColumns.partitionAncestors(ofRelation: oid, on: catalogConnection())
    }

    private func catalogConnection() throws(PostgresError) -> PostgresConnection {
        if let connection, connection.isConnected { return connection }
        let fresh = try PostgresConnection(settings)
        connection = fresh
        return fresh
    }
}
