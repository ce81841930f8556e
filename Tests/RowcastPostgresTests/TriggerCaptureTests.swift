import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct TriggerCaptureTests {
    @Test func rowsTooBigForNotifyArriveWholeAtEveryListener() async throws {
        let name = LiveDatabase.uniqueName("big")
        let table = TableName(schema: "public", name: name)
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, body text)")
        try TriggerSetup.install(on: database, tables: [table])
        // Two rowcast processes listening at once must both get every oversized row.
        let first = try RunningCapture(tables: [table])
        let second = try RunningCapture(tables: [table])
        defer { first.finish(); second.finish() }

        // The last row follows the overflow reads: its notification must not wait in
        // libpq's queue for more traffic (a bug this test caught once).
        let sizes = [1: 100_000, 2: 2_000_000, 3: 7_990]
        for (id, size) in sizes.sorted(by: { $0.key < $1.key }) {
            try database.execute("INSERT INTO \(table.quoted) VALUES ($1, repeat('ab€', $2 / 5))", [String(id), String(size)])
        }
        for capture in [first, second] {
            let records = await capture.sink.wait(for: sizes.count)
            #expect(records.count == sizes.count)
            for record in records {
                guard let row = record.row else {
                    Issue.record("insert without row")
                    continue
                }
                let view = try serverView(of: row, table: table, on: database)
                #expect(view.expected != nil && view.expected == view.actual)
            }
        }
    }

    @Test func aJSONValueThatJSONBRejectsNeitherFailsTheWriterNorGoesMissing() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("nul"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, doc json)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }
        // Valid json that PostgreSQL stores, but to_jsonb (and so the old trigger) rejects.
        try database.execute(#"INSERT INTO \#(table.quoted) VALUES (1, '{"a":"\u0000","b":[1,2]}')"#)
        try database.execute(#"UPDATE \#(table.quoted) SET doc = '{"a":"x\u0000y"}' WHERE id = 1"#)
        try database.execute("DELETE FROM \(table.quoted) WHERE id = 1")
        let records = await capture.sink.wait(for: 3)
        #expect(records.map(\.op) == [.insert, .update, .delete])
        func doc(_ json: RawJSON?) -> [String: Any]? {
            let object = json.flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }
            return object?["doc"] as? [String: Any]
        }
        #expect(doc(records.first?.row)?["a"] as? String == "\u{0}")
        #expect(doc(records.dropFirst().first?.row)?["a"] as? String == "x\u{0}y")
        #expect(doc(records.dropFirst().first?.old)?["a"] as? String == "\u{0}")
        #expect(doc(records.last?.old)?["a"] as? String == "x\u{0}y")
    }

    @Test func upgradingAnInstalledTriggerInPlaceLosesNoChange() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("upgrade"))
        // A database of its own: the upgrade moves every table of the database at once.
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        try admin.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, doc jsonb)")
        // A database set up by rowcast 0.1: its script, its row-level triggers.
        try admin.executeScript(previousTriggerScript)
        try admin.executeScript(
            """
            CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON \(table.quoted)
                FOR EACH ROW EXECUTE FUNCTION rowcast.capture();
            CREATE TRIGGER rowcast_capture_truncate AFTER TRUNCATE ON \(table.quoted)
                FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture();
            """
        )
        let capture = try RunningCapture(.init(connection: ConnectionSettings(conninfo: url), tables: [table]))
        defer { capture.finish() }
        // Writes flow while `rowcast setup` installs the new version, twice.
        let rows = 300
        let writer = Task.detached {
            let connection = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
            for id in 1...rows { try connection.execute("INSERT INTO \(table.quoted) VALUES ($1::int, '{\"k\": 1}')", [String(id)]) }
        }
        for _ in 0..<2 {
            try await pause(for: .milliseconds(20))
            try TriggerSetup.install(on: admin, tables: [table])
        }
        try await within(120, "300 inserts beside two upgrades") { try await writer.value }
        let records = await capture.sink.wait(for: rows)
        let ids = records.compactMap { record in
            record.row.flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }?["id"] as? Int
        }
        #expect(ids == Array(1...rows), "\(Set(1...rows).subtracting(ids).count) rows missing across the upgrade")
        #expect(try admin.execute("SELECT to_regprocedure('rowcast.capture()') IS NULL").scalar == "t", "the old function is gone")

        // After the upgrade an old-style payload is a forgery, and is not delivered.
        try admin.execute("SELECT pg_notify('rowcast', $1)", [#"{"op":"insert","schema":"public","table":"\#(table.name)","row":{"id":-1}}"#])
        try admin.execute("INSERT INTO \(table.quoted) VALUES (\(rows + 1), '{}')")
        let after = await capture.sink.wait(for: rows + 1)
        #expect(after.dropFirst(rows).map { $0.row?.text.contains("\"id\":\(rows + 1)") } == [true])
    }

    @Test func identicalChangesInOneTransactionAreNotFolded() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("twins"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (v text)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }
        try database.execute("INSERT INTO \(table.quoted) VALUES ('same'), ('same'), ('same')")
        let records = await capture.sink.wait(for: 3)
        #expect(records.count == 3)
    }

    @Test func writesSucceedForARoleWithoutRowcastPrivileges() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("plain"))
        let role = LiveDatabase.uniqueName("writer")
        let admin = try LiveDatabase.connect()
        try admin.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, body text)")
        try TriggerSetup.install(on: admin, tables: [table])
        try admin.execute("CREATE ROLE \(role) LOGIN")
        try admin.execute("GRANT INSERT ON \(table.quoted) TO \(role)")
        defer { _ = try? admin.execute("DROP OWNED BY \(role); DROP ROLE \(role)") }
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }

        let writer = try LiveDatabase.connect()
        try writer.execute("SET ROLE \(role)")
        try writer.execute("INSERT INTO \(table.quoted) VALUES (1, 'small'), (2, repeat('x', 50000))")
        try writer.execute("RESET ROLE")
        let records = await capture.sink.wait(for: 2)
        #expect(records.count == 2)
        #expect(records.last?.row.map { $0.bytes.count > 50_000 } == true)
    }

    @Test func burstFromSeveralConnectionsArrivesCompleteInCommitOrder() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("burst"))
        let slot = LiveDatabase.uniqueName("order")
        // A database of its own: decoding the oracle's slot in the shared database, while
        // other tests created and dropped tables there, failed in PostgreSQL itself
        // ("unexpected duplicate for tablespace 0, relfilenode …").
        let url = try await LiveDatabase.freshDatabase(prefix: "burst")
        let database = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, writer int)")
        try TriggerSetup.install(on: database, tables: [table])
        // Logical decoding emits transactions in commit order: the oracle for the order NOTIFY must keep.
        // Off the cooperative pool: making a slot waits for the cluster's open transactions.
        try await onThread("the oracle's slot", within: 300) {
            _ = try database.execute("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", [slot])
        }
        defer { _ = try? database.execute("SELECT pg_drop_replication_slot($1)", [slot]) }
        let capture = try RunningCapture(.init(connection: ConnectionSettings(conninfo: url), tables: [table]))
        defer { capture.finish() }

        let writers = 4, perWriter = 2_500
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    try await onThread("a writer of the concurrent-transactions test", within: 120) {
                        let connection = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
                        for n in 0..<perWriter {
                            try connection.execute("INSERT INTO \(table.quoted) VALUES ($1, $2)", [String(writer * perWriter + n), String(writer)])
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let records = await capture.sink.wait(for: writers * perWriter, seconds: 120)
        let delivered = try records.map { record -> Int in
            let text = try #require(record.row?.text)
            let id = try #require(text.firstMatch(of: /"id":\s*(\d+)/)?.1)
            return try #require(Int(id))
        }
        #expect(delivered.count == writers * perWriter)
        #expect(Set(delivered).count == writers * perWriter)

        let changes = try database.execute(
            "SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL) WHERE data LIKE $2",
            [slot, "table public.\(table.name): INSERT:%"]
        )
        let committed = try changes.rows.map { row -> Int in
            let data = try #require(row.first ?? nil)
            let id = try #require(data.firstMatch(of: /id\[integer\]:(\d+)/)?.1)
            return try #require(Int(id))
        }
        #expect(committed.count == writers * perWriter)
        #expect(delivered == committed)
    }

    @Test func plainNotifyOnANamedChannelIsForwarded() async throws {
        let channel = LiveDatabase.uniqueName("addedrecord")
        let capture = try RunningCapture(tables: [], channels: [channel])
        defer { capture.finish() }
        let database = try LiveDatabase.connect()
        try database.execute("SELECT pg_notify($1, $2)", [channel, "Hello \"world\" ünïcode"])
        let records = await capture.sink.wait(for: 1)
        let record = try #require(records.first)
        #expect(record.op == .notify)
        #expect(record.source == .trigger)
        #expect(record.channel == channel)
        #expect(record.payload == "Hello \"world\" ünïcode")
        #expect(record.schema == nil && record.table == nil && record.row == nil)
    }

    @Test func theClassicRecipeTriggerWorksUnchanged() async throws {
        // The trigger-plus-socket.io recipe: pg_notify('addedrecord', NEW.title).
        let table = LiveDatabase.uniqueName("classic")
        let channel = LiveDatabase.uniqueName("addedrecord")
        let database = try LiveDatabase.connect()
        try database.executeScript(
            """
            CREATE TABLE \(table) (title varchar(128));
            CREATE FUNCTION \(table)_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('\(channel)', NEW.title); RETURN NULL; END $$;
            CREATE TRIGGER \(table)_t AFTER INSERT ON \(table) FOR EACH ROW EXECUTE FUNCTION \(table)_notify();
            """
        )
        let capture = try RunningCapture(tables: [], channels: [channel])
        defer { capture.finish() }
        try database.execute("INSERT INTO \(table) VALUES ('first'), ('second')")
        let records = await capture.sink.wait(for: 2)
        #expect(records.map(\.payload) == ["first", "second"])
    }

    @Test func reconnectsAndListensAgainAfterTheBackendIsKilled() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("reconnect"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int)")
        try TriggerSetup.install(on: database, tables: [table])
        let applicationName = LiveDatabase.uniqueName("rowcast-reconnect")
        let capture = try RunningCapture(tables: [table], applicationName: applicationName)
        defer { capture.finish() }
        try database.execute("INSERT INTO \(table.quoted) VALUES (1)")
        #expect(await capture.sink.wait(for: 1).count == 1)

        let before = try database.execute("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [applicationName]).scalar
        let killed = try database.execute("SELECT pg_terminate_backend($1::int)", [before]).scalar
        #expect(killed == "t")
        // The capture notices, reconnects with backoff and LISTENs again on a new backend.
        // (Its last query may be an overflow read for another test's rows, not LISTEN:
        // so wait for a new backend, then insert until a row written after it arrives.)
        let deadline = Date().addingTimeInterval(60)
        var after: String?
        while Date() < deadline {
            after = try database.execute("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [applicationName]).scalar
            if let after, after != before { break }
            try await pause(for: .milliseconds(50))
        }
        #expect(after != nil && after != before, "a new backend for the capture")
        var id = 1
        var arrived = false
        while !arrived, Date() < deadline {
            id += 1
            try database.execute("INSERT INTO \(table.quoted) VALUES (\(id))")
            arrived = await capture.sink.wait(for: 1, seconds: 2) { $0.row?.text.replacingOccurrences(of: " ", with: "") == #"{"id":\#(id)}"# }.count == 1
        }
        #expect(arrived, "rows written after the reconnect arrive")
    }

    @Test func aTableSetUpWhileCapturingIsLearnedWithItsColumnsAtItsFirstChange() async throws {
        // A database of its own: without --table, the capture hears every table with the trigger.
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let first = TableName(schema: "public", name: "first")
        try admin.execute("CREATE TABLE first (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [first])
        let running = try RunningCapture(.init(connection: ConnectionSettings(conninfo: url)))
        defer { running.finish() }
        let state = running.capture.state
        #expect(state.capturedTables == [first])

        let late = TableName(schema: "public", name: "late")
        try admin.execute("CREATE TABLE late (id int PRIMARY KEY, n numeric, label text, flag boolean)")
        try TriggerSetup.install(on: admin, tables: [late])
        #expect(!state.captures(late), "learned from its first change, not before")
        try admin.execute("INSERT INTO late VALUES (1, 5, 'x', true)")
        let records = await running.sink.wait(for: 1) { $0.table == "late" }
        #expect(records.count == 1)
        // Learned before the record reached the sink: a client that saw it can subscribe.
        #expect(state.capturedTables == [first, late])
        #expect(state.columns[late] == ["id": .number, "n": .number, "label": .text, "flag": .bool])
    }

    @Test func captureRefusesAMissingSetUpWithTheFix() throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("untriggered"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int)")
        try TriggerSetup.install(on: database, tables: [])
        #expect {
            _ = try RunningCapture(tables: [table])
        } throws: { error in
            "\(error)".contains("rowcast setup --mode trigger --table \(table)")
        }
    }
}

@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct TriggerSetupTests {
    @Test func unknownTableFailsClearlyAndInstallsNothing() throws {
        let database = try LiveDatabase.connect()
        let missing = TableName(schema: "public", name: LiveDatabase.uniqueName("missing"))
        #expect {
            try TriggerSetup.install(on: database, tables: [missing])
        } throws: { error in
            "\(error)" == "table \(missing) does not exist (fix: create it first, or name it as schema.table)"
        }
    }

    @Test func setupIsIdempotentAndTheScriptRunsUnderPsql() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("idem"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int)")
        try TriggerSetup.install(on: database, tables: [table])
        try TriggerSetup.install(on: database, tables: [table])
        let triggers = try database.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal", [table.quoted]
        )
        // Insert, update and delete (each with its transition tables), and truncate.
        #expect(triggers.scalar == "4")
        // The embedded copy is the file in sql/, which psql -f runs as well.
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../sql/rowcast_trigger.sql").standardized
        #expect(try String(contentsOf: file, encoding: .utf8) == TriggerSetup.installScript)
        let url = LiveDatabase.url ?? ""
        let psql = try await onThread("psql -f sql/rowcast_trigger.sql") {
            try runChild("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", file.path])
        }
        #expect(psql.status == 0, "\(psql.stderr)")
    }
}
