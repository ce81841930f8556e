import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

/// Filters against PostgreSQL's own operators: a random filter on a column of each
/// comparable type matches, in rowcast (on each row's `to_jsonb`), exactly the rows
/// PostgreSQL selects with the filter's value as a literal of the column's type.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct FilterOracleTests {
    /// Values for each column, tricky ones included: floats that read back as the same
    /// float (`0.10000000000000001` is 0.1 in double precision, and in real so is
    /// `0.1000000015`), integers past 2^53, NaN and the infinities, -0, strings that
    /// differ only in bytes. A `real` or `double precision` filter used to compare as
    /// the exact decimal `to_jsonb` prints: `d=eq.0.10000000000000001` matched nothing.
    static let pools: [(column: String, type: String, values: [String])] = [
        ("r", "real", ["0", "-0", "0.1", "0.1000000015", "0.10000000000000001", "1.5", "-2.25", "16777217", "16777216", "3.4028235e38", "1e-7", "NaN", "Infinity", "-Infinity"]),
        ("d", "double precision", ["0", "-0", "0.1", "0.10000000000000001", "0.30000000000000004", "0.3", "9007199254740993", "9007199254740992", "1e300", "1e-7", "NaN", "Infinity", "-Infinity"]),
        ("n", "numeric", ["0", "1.10", "1.1", "-5", "100", "1e2", "9007199254740993", "9007199254740992", "0.1", "NaN", "Infinity", "-Infinity"]),
        ("i", "bigint", ["0", "1", "-1", "9007199254740993", "9007199254740992", "9223372036854775807", "-9223372036854775808"]),
        ("t", "text", ["", "a", "b", "B", "ab", "abc", "é", "e\u{301}", "Z"]),
    ]

    /// `text` parsed and told how `column` compares in `table`, as a subscription is.
    static func filter(_ text: String, on column: String, of table: TableName, kinds: [String: ColumnKind]) throws -> RowFilter {
        try RowFilter(parsing: text).resolved(
            numberIn: kinds[column]?.isNumber == true ? [table] : [],
            float4In: kinds[column] == .float4 ? [table] : [],
            float8In: kinds[column] == .float8 ? [table] : []
        )
    }

    /// Whether `filter` takes `row`, an insert's row of `table`.
    static func matches(_ filter: RowFilter, _ row: RawJSON, of table: TableName) -> Bool {
        var record = ChangeRecord(cursor: .trigger(stream: 0, sequence: 0), source: .trigger, op: .insert)
        record.schema = table.schema
        record.table = table.name
        record.row = row
        var values = RecordValues(record)
        return filter.matches(&values)
    }

    @Test func filtersMatchWhatPostgreSQLSelects() throws {
        var generator = SystemRandomNumberGenerator()
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("oracle"))
        let database = try LiveDatabase.connect()
        try database.execute(
            "CREATE TABLE \(table.quoted) (id int PRIMARY KEY, " + Self.pools.map { "\($0.column) \($0.type)" }.joined(separator: ", ") + ")"
        )
        let rowCount = 80
        for id in 1...rowCount {
            // A value from the pool, or now and then null.
            let values = Self.pools.map { pool in Int.random(in: 0..<8, using: &generator) == 0 ? nil : pool.values.randomElement(using: &generator) }
            try database.execute(
                "INSERT INTO \(table.quoted) VALUES ($1, " + Self.pools.indices.map { "$\($0 + 2)::\(Self.pools[$0].type)" }.joined(separator: ", ") + ")",
                [String(id)] + values
            )
        }
        let kinds = try CatalogColumns.kinds(of: [table], on: database)[table] ?? [:]
        #expect(kinds["r"] == .float4 && kinds["d"] == .float8 && kinds["n"] == .number && kinds["i"] == .number && kinds["t"] == .text)
        let rows = try database.execute("SELECT id, to_jsonb(x)::text FROM \(table.quoted) x").rows.compactMap { row -> (Int, RawJSON)? in
            guard let id = row[0].flatMap({ Int($0) }), let json = row[1] else { return nil }
            return (id, RawJSON(trusted: Array(json.utf8)))
        }
        #expect(rows.count == rowCount)
        let operators: [(String, String)] = [("eq", "="), ("neq", "<>"), ("lt", "<"), ("lte", "<="), ("gt", ">"), ("gte", ">="), ("in", "= ANY")]
        var mismatches: [String] = []
        for _ in 0..<400 {
            guard let pool = Self.pools.randomElement(using: &generator), let (name, sql) = operators.randomElement(using: &generator) else { continue }
            let values = name == "in" ? (0..<Int.random(in: 1...4, using: &generator)).compactMap { _ in pool.values.randomElement(using: &generator) }
                : [pool.values.randomElement(using: &generator) ?? "0"]
            // An empty string cannot be told apart in an `in` list: single values only.
            if name == "in", values.contains("") { continue }
            let text = "\(pool.column)=\(name)." + (name == "in" ? "(" + values.joined(separator: ",") + ")" : values[0])
            let collate = pool.type == "text" ? " COLLATE \"C\"" : ""
            let condition = name == "in"
                ? "\(pool.column)\(collate) = ANY($1::\(pool.type)[])"
                : "\(pool.column)\(collate) \(sql) $1::\(pool.type)"
            let parameter = name == "in" ? "{" + values.map { "\"" + $0 + "\"" }.joined(separator: ",") + "}" : values[0]
            let expected = Set(try database.execute("SELECT id FROM \(table.quoted) WHERE \(condition)", [parameter]).rows.compactMap { $0[0].flatMap { Int($0) } })
            let filter = try Self.filter(text, on: pool.column, of: table, kinds: kinds)
            let actual = Set(rows.filter { Self.matches(filter, $0.1, of: table) }.map(\.0))
            if actual != expected {
                mismatches.append("\(text): rowcast \(actual.count) rows, PostgreSQL \(expected.count) (differ on ids \(actual.symmetricDifference(expected).sorted().prefix(3)))")
            }
        }
        let examples = mismatches.prefix(5).joined(separator: "\n")
        #expect(mismatches.count == 0, "\(mismatches.count) of 400 filters differ, e.g.\n\(examples)")
    }

    /// A snapshot's pushed condition never drops a row the filter matches: random filters
    /// on each type, `null` among the values, read through a snapshot with the filter
    /// as its condition, against the filter applied to every row. Text `eq.null` was
    /// pushed as `= 'null'`: the snapshot lost the rows whose column is null, which the
    /// filter (and so the live stream) matches.
    @Test func aSnapshotsConditionKeepsEveryRowTheFilterMatches() throws {
        var generator = SystemRandomNumberGenerator()
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("pushed"))
        let database = try LiveDatabase.connect()
        try database.execute(
            "CREATE TABLE \(table.quoted) (id int PRIMARY KEY, " + Self.pools.map { "\($0.column) \($0.type)" }.joined(separator: ", ") + ")"
        )
        let pools = Self.pools.map { pool in (pool.column, pool.type, pool.values + (pool.type == "text" ? ["null"] : [])) }
        let rowCount = 80
        for id in 1...rowCount {
            let values = pools.map { pool in Int.random(in: 0..<4, using: &generator) == 0 ? nil : pool.2.randomElement(using: &generator) }
            try database.execute(
                "INSERT INTO \(table.quoted) VALUES ($1, " + pools.indices.map { "$\($0 + 2)::\(pools[$0].1)" }.joined(separator: ", ") + ")",
                [String(id)] + values
            )
        }
        let kinds = try CatalogColumns.kinds(of: [table], on: database)[table] ?? [:]
        let source = PostgresSnapshotSource(connection: LiveDatabase.settings, followsWAL: false)
        let snapshot = try source.open(tables: [table])
        defer { snapshot.close() }
        func ids(_ conditions: [RowFilter]) throws -> [Int: RawJSON] {
            var rows: [Int: RawJSON] = [:]
            try snapshot.read(table, conditions: conditions, pageRows: 1_000) { page in
                for row in page {
                    if let id = (try? JSONSerialization.jsonObject(with: Data(row.bytes)) as? [String: Any])?["id"] as? Int { rows[id] = row }
                }
                return true
            }
            return rows
        }
        let all = try ids([])
        #expect(all.count == rowCount)
        var lost: [String] = []
        for _ in 0..<300 {
            guard let pool = pools.randomElement(using: &generator),
                let name = ["eq", "neq", "lt", "lte", "gt", "gte", "in"].randomElement(using: &generator)
            else { continue }
            // Null often: the value PostgreSQL and the filter read differently.
            func value() -> String { Int.random(in: 0..<3, using: &generator) == 0 ? "null" : pool.2.randomElement(using: &generator) ?? "0" }
            let values = name == "in" ? (0..<Int.random(in: 1...3, using: &generator)).map { _ in value() }.filter { !$0.isEmpty } : [value()]
            if values.isEmpty { continue }
            let text = "\(pool.0)=\(name)." + (name == "in" ? "(" + values.joined(separator: ",") + ")" : values[0])
            let filter = try Self.filter(text, on: pool.0, of: table, kinds: kinds)
            let matching = Set(all.filter { Self.matches(filter, $0.value, of: table) }.keys)
            let read = Set(try ids([filter]).keys)
            if !matching.isSubset(of: read) {
                lost.append("\(text): the snapshot lost \(matching.subtracting(read).count) of \(matching.count) matching rows")
            }
        }
        #expect(lost.count == 0, "\(lost.count) of 300 conditions lose rows, e.g.\n\(lost.prefix(5).joined(separator: "\n"))")
    }
}
