import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

/// Nothing about the captured table or the writer's session can break capture or the
/// writer: column names like any name the trigger functions use, partitioned tables
/// named with `--table`, settings the writer's session makes.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct TriggerNamesTests {
    /// Every word in the trigger functions' bodies (variables, aliases, the special
    /// TG_ variables, keywords, function names), read from the script itself so that a
    /// name added there is tested too.
    static let identifiers: [String] = {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../sql/rowcast_trigger.sql").standardized
        let sql = (try? String(contentsOf: script, encoding: .utf8)) ?? ""
        var words = Set<String>()
        for function in ["rowcast.capture_statement()", "rowcast.capture_row()"] {
            guard let start = sql.range(of: "CREATE OR REPLACE FUNCTION \(function)"),
                let open = sql.range(of: "$function$", range: start.upperBound..<sql.endIndex),
                let close = sql.range(of: "$function$", range: open.upperBound..<sql.endIndex)
            else { continue }
            let body = sql[open.upperBound..<close.lowerBound]
                .split(separator: "\n").map { $0.split(separator: "--", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }.joined(separator: "\n")
            var word = ""
            for character in body + " " {
                if character.isASCII, character.isLetter || character == "_" || (character.isNumber && !word.isEmpty) {
                    word.append(character)
                } else {
                    if word.count > 0 { words.insert(word.lowercased()) }
                    word = ""
                }
            }
        }
        return words.subtracting(["id"]).sorted()
    }()

    /// A table with a column named like every word the functions use (`batch`, `base`
    /// and `tg_table_name` made the writer's statements fail as ambiguous; `r` replaced
    /// every record's row with that column's value), ordinary and partitioned: every
    /// insert, update and delete is captured whole, and the writer never fails.
    @Test(arguments: [false, true])
    func columnsNamedLikeTheFunctionsNamesBreakNeitherCaptureNorTheWriter(partitioned: Bool) async throws {
        #expect(Self.identifiers.count > 30, "read \(Self.identifiers.count) words from the trigger functions")
        #expect(Self.identifiers.contains("batch") && Self.identifiers.contains("r") && Self.identifiers.contains("tg_table_name"))
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("names"))
        let database = try LiveDatabase.connect()
        let columns = Self.identifiers.map { TableName.quoteIdentifier($0) + " text" }.joined(separator: ", ")
        let partitioning = partitioned ? " PARTITION BY RANGE (id)" : ""
        try database.execute("CREATE TABLE \(table.quoted) (id int, \(columns))\(partitioning)")
        if partitioned {
            try database.execute("CREATE TABLE \(TableName.quoteIdentifier(table.name + "_p")) PARTITION OF \(table.quoted) FOR VALUES FROM (0) TO (1000)")
        }
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }

        let values = Self.identifiers.map { "'" + $0 + "-' || n" }.joined(separator: ", ")
        try database.execute("INSERT INTO \(table.quoted) SELECT n, \(values) FROM generate_series(1, 3) n")
        try database.execute("BEGIN")
        try database.execute("UPDATE \(table.quoted) SET id = id + 10, \"batch\" = 'changed' WHERE id = 2")
        try database.execute("DELETE FROM \(table.quoted) WHERE id = 3")
        try database.execute("COMMIT")

        let records = await capture.sink.wait(for: 5)
        #expect(records.map(\.op) == [.insert, .insert, .insert, .update, .delete])
        func object(_ json: RawJSON?) -> [String: Any] {
            json.flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] } ?? [:]
        }
        for record in records {
            let row = object(record.row ?? record.old)
            guard let id = row["id"] as? Int else {
                Issue.record("a \(record.op.rawValue) whose row is not the row: \(String(describing: (record.row ?? record.old)?.text.prefix(200)))")
                continue
            }
            let n = id > 10 ? id - 10 : id
            let wrong = Self.identifiers.filter { name in
                (row[name] as? String) != (record.op == .update && name == "batch" ? "changed" : "\(name)-\(n)")
            }
            #expect(wrong.isEmpty, "\(record.op.rawValue) of \(id): wrong or missing columns \(wrong.prefix(8))")
            #expect(record.table == (partitioned ? table.name + "_p" : table.name), "a record names \(record.table ?? "no table")")
        }
        #expect(object(records[3].old)["id"] as? Int == 2)
    }

    /// What the writer's session sets reaches neither its writes nor their capture:
    /// the change numbers once came from a setting it could set (`x` failed its
    /// INSERT; `1000` made its later transactions deliver nothing).
    @Test func aWritersSessionSettingsBreakNeitherItsWritesNorTheirCapture() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("settings"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, title text)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }

        try database.execute("SET rowcast.change_index = 'x'")
        try database.execute("INSERT INTO \(table.quoted) VALUES (1, 'one')")
        try database.execute("SET rowcast.change_index = '1000'")
        try database.execute("INSERT INTO \(table.quoted) VALUES (2, 'two')")
        try database.execute("BEGIN")
        try database.execute("SET LOCAL rowcast.change_index = '-5'")
        try database.execute("INSERT INTO \(table.quoted) VALUES (3, 'three'), (4, 'four')")
        try database.execute("UPDATE \(table.quoted) SET title = 'FOUR' WHERE id = 4")
        try database.execute("COMMIT")
        try database.execute("SET search_path = pg_temp, public")
        try database.execute("SET TimeZone = 'Asia/Kathmandu'")
        try database.execute("INSERT INTO \(table.quoted) VALUES (5, 'five')")

        let records = await capture.sink.wait(for: 6)
        let ids = records.compactMap { record -> Int? in
            let row = record.row.flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }
            return row?["id"] as? Int
        }
        #expect(records.map(\.op) == [.insert, .insert, .insert, .insert, .update, .insert])
        #expect(ids == [1, 2, 3, 4, 4, 5])
    }

    /// A partition named alone with `--table` captures that partition, not its siblings.
    @Test func aPartitionNamedAloneIsCapturedAlone() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("parts"))
        let low = TableName(schema: "public", name: table.name + "_low"), high = TableName(schema: "public", name: table.name + "_high")
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int, title text) PARTITION BY RANGE (id)")
        try database.execute("CREATE TABLE \(low.quoted) PARTITION OF \(table.quoted) FOR VALUES FROM (0) TO (100)")
        try database.execute("CREATE TABLE \(high.quoted) PARTITION OF \(table.quoted) FOR VALUES FROM (100) TO (200)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [high])
        defer { capture.finish() }
        try database.execute("INSERT INTO \(table.quoted) VALUES (1, 'low'), (101, 'high'), (2, 'low'), (102, 'high')")
        let records = await capture.sink.wait(for: 2)
        #expect(records.map(\.table) == [high.name, high.name])
        // Nothing of the other partition follows.
        try database.execute("INSERT INTO \(table.quoted) VALUES (103, 'last')")
        let all = await capture.sink.wait(for: 3)
        #expect(all.map(\.table) == [high.name, high.name, high.name])
    }

    /// A column added while rowcast runs is known to filters within a maintenance
    /// round (they refused it as unknown until a restart).
    @Test func aColumnAddedWhileCapturingIsLearned() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("grows"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }
        #expect(capture.capture.state.columns[table]?["added"] == nil)
        try database.execute("ALTER TABLE \(table.quoted) ADD COLUMN added numeric")
        try await eventually("the new column known", within: 60, seen: { "\(capture.capture.state.columns[table] ?? [:])" }) {
            capture.capture.state.columns[table]?["added"] == .number
        }
    }
}
