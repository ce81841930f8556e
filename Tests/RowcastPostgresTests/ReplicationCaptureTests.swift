import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct ReplicationCaptureTests {
    static func connect(_ url: String) throws -> PostgresConnection {
        try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
    }

    /// Every type of the matrix, plus composites, domains, enums, ranges and
    /// multiranges, in a database whose defaults try to change the text output.
    @Test func rowsEqualToJSONBWhateverTheDatabaseDefaults() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try Self.connect(url)
        let name = try #require(admin.execute("SELECT current_database()").scalar)
        try admin.executeScript(
            """
            ALTER DATABASE \(name) SET TimeZone = 'Asia/Kolkata';
            ALTER DATABASE \(name) SET DateStyle = 'SQL, DMY';
            ALTER DATABASE \(name) SET IntervalStyle = 'sql_standard';
            ALTER DATABASE \(name) SET bytea_output = 'escape';
            ALTER DATABASE \(name) SET extra_float_digits = 0;
            CREATE TYPE mood AS ENUM ('sad', 'happy', 'with "quotes"');
            CREATE DOMAIN positive AS numeric(10,2) CHECK (VALUE > 0);
            CREATE DOMAIN moods AS mood[];
            CREATE TYPE inner_t AS (n int, t text, ts timestamptz);
            CREATE TYPE outer_t AS (label text, inner_v inner_t, list int[], d positive);
            CREATE TABLE matrix (\(RowJSONTests.columns),
                mo mood, dom positive, dmo moods, comp outer_t, comps inner_t[], nr numrange, mr int4multirange, bxa box[], dt date[], tsn timestamp[]);
            """
        )
        let extra = [
            ", 'happy', 12.50, '{sad,\"with \\\"quotes\\\"\"}', ROW('x,y', ROW(1, 'a\"b', '2024-01-01 00:00+00')::inner_t, '{1,NULL}', 3.5)::outer_t, ARRAY[ROW(1,NULL,NULL)::inner_t, NULL], '[1.5,2.5)', '{[1,3),[5,7)}', '{(1,1),(0,0);(3,3),(2,2)}', '{2024-01-01,infinity}', '{\"2024-01-01 10:00:00.5\"}'",
            ", 'sad', 0.01, '{}', ROW(NULL, NULL, NULL, NULL)::outer_t, '{}', 'empty', '{}', '{}', '{}', '{}'",
            ", 'with \"quotes\"', 99999999.99, NULL, ROW('', ROW(NULL, '', 'infinity')::inner_t, '{}', NULL)::outer_t, '{\"(2,\\\"\\\",)\"}', '(,)', '{(,)}', NULL, '{\"4713-01-01 BC\"}', '{NULL}'",
            String(repeating: ", NULL", count: 10),
        ]
        let capture = try await RunningCapture.replication( .init(
            connection: ConnectionSettings(conninfo: url),
            slot: LiveDatabase.uniqueName("matrix"), publication: "matrix", tables: [TableName(schema: "public", name: "matrix")]
        ))
        defer { capture.finish(droppingSlotIn: url) }
        let writer = try Self.connect(url)
        for (values, more) in zip(RowJSONTests.rows, extra) {
            try writer.execute("INSERT INTO matrix VALUES (\(values)\(more))")
        }
        let records = await capture.sink.wait(for: extra.count)
        #expect(records.count == extra.count)
        let checker = try Self.connect(url)
        try checker.executeScript(LiveDatabase.referenceSettings)
        let table = TableName(schema: "public", name: "matrix")
        for record in records {
            #expect(record.source == .replication && record.op == .insert)
            let row = try #require(record.row)
            let view = try serverView(of: row, table: table, on: checker)
            #expect(view.expected != nil)
            #expect(view.expected == view.actual, "row \(row.text)")
        }
    }

    @Test func updatesListUnchangedToastAndDeletesCarryTheKey() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try Self.connect(url)
        try admin.executeScript(
            """
            CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
            ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
            INSERT INTO docs VALUES (1, 'a', repeat('long ', 2000));
            """
        )
        let capture = try await RunningCapture.replication( .init(connection: ConnectionSettings(conninfo: url), slot: LiveDatabase.uniqueName("docs"), tables: [TableName(schema: "public", name: "docs")]))
        defer { capture.finish(droppingSlotIn: url) }
        try admin.execute("UPDATE docs SET title = 'b' WHERE id = 1")
        try admin.execute("DELETE FROM docs WHERE id = 1")
        let records = await capture.sink.wait(for: 2)
        #expect(records.count == 2)
        let update = try #require(records.first)
        #expect(update.op == .update)
        #expect(update.unchanged == ["body"])
        #expect(try admin.execute("SELECT $1::jsonb::text", [update.row?.text]).scalar == #"{"id": 1, "title": "b"}"#)
        #expect(update.old == nil)
        let delete = try #require(records.last)
        #expect(delete.op == .delete)
        #expect(try admin.execute("SELECT $1::jsonb::text", [delete.old?.text]).scalar == #"{"id": 1}"#)
        // Cursors: commit LSN and index, increasing; lsn and commit_time present.
        #expect(update.cursor < delete.cursor)
        #expect(update.lsn == update.cursor.major)
        #expect(update.commitTime?.hasSuffix("Z") == true)
    }

    @Test func theSameChangeGivesTheSameRecordInBothModes() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try Self.connect(url)
        try admin.executeScript(
            """
            CREATE TABLE both_modes (id int PRIMARY KEY, n numeric, ts timestamptz, tags text[], doc jsonb);
            ALTER TABLE both_modes REPLICA IDENTITY FULL;
            """
        )
        let table = TableName(schema: "public", name: "both_modes")
        try TriggerSetup.install(on: admin, tables: [table])
        let trigger = try RunningCapture(.init(connection: ConnectionSettings(conninfo: url), tables: [table]))
        let replication = try await RunningCapture.replication( .init(connection: ConnectionSettings(conninfo: url), slot: LiveDatabase.uniqueName("both"), tables: [table]))
        defer { trigger.finish(); replication.finish(droppingSlotIn: url) }
        try admin.executeScript(
            """
            INSERT INTO both_modes VALUES (1, 1.50, '2024-02-29 12:00+01', '{a,"b c",NULL}', '{"k": [1, 2]}');
            UPDATE both_modes SET n = 2.000, tags = '{}' WHERE id = 1;
            DELETE FROM both_modes WHERE id = 1;
            """
        )
        let fromTrigger = await trigger.sink.wait(for: 3)
        let fromReplication = await replication.sink.wait(for: 3)
        #expect(fromTrigger.count == 3 && fromReplication.count == 3)
        for (a, b) in zip(fromTrigger, fromReplication) {
            #expect(a.op == b.op && a.schema == b.schema && a.table == b.table && a.xid == b.xid)
            for (left, right) in [(a.row, b.row), (a.old, b.old)] {
                #expect((left == nil) == (right == nil))
                guard let left, let right else { continue }
                #expect(try admin.execute("SELECT $1::jsonb::text = $2::jsonb::text", [left.text, right.text]).scalar == "t", "\(left.text) vs \(right.text)")
                // Not only the same value: the same bytes, so a user switching modes sees no difference.
                #expect(left.text == right.text)
            }
        }
    }

    /// pgoutput (before a PostgreSQL 18 publication asks) leaves stored generated
    /// columns out: the replication record says which, trigger mode's row has them,
    /// and the rest of the row is the same bytes. doctor names the table.
    @Test func storedGeneratedColumnsTheServerDoesNotSendAreNamed() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try Self.connect(url)
        try admin.executeScript(
            """
            CREATE TABLE priced (id int PRIMARY KEY, price numeric, qty int,
                total numeric GENERATED ALWAYS AS (price * qty) STORED, note text);
            ALTER TABLE priced REPLICA IDENTITY FULL;
            CREATE TABLE plain (id int PRIMARY KEY);
            """
        )
        let table = TableName(schema: "public", name: "priced")
        try TriggerSetup.install(on: admin, tables: [table])
        let trigger = try RunningCapture(.init(connection: ConnectionSettings(conninfo: url), tables: [table]))
        let replication = try await RunningCapture.replication(.init(
            connection: ConnectionSettings(conninfo: url), slot: LiveDatabase.uniqueName("generated"), publication: "generated", tables: [table]
        ))
        defer { trigger.finish(); replication.finish(droppingSlotIn: url) }
        try admin.executeScript("INSERT INTO priced VALUES (1, 2.50, 4, DEFAULT, 'a'); UPDATE priced SET qty = 5 WHERE id = 1;")
        let fromTrigger = await trigger.sink.wait(for: 2)
        let fromReplication = await replication.sink.wait(for: 2)
        try #require(fromTrigger.count == 2 && fromReplication.count == 2)
        for (a, b) in zip(fromTrigger, fromReplication) {
            #expect(b.generated == ["total"], "\(b)")
            #expect(a.generated == nil)
            #expect(a.row?.text.contains(#""total":"#) == true && b.row?.text.contains(#""total""#) == false)
            let withoutTotal = try admin.execute("SELECT ($1::jsonb - 'total')::text = $2::jsonb::text", [a.row?.text, b.row?.text]).scalar
            #expect(withoutTotal == "t", "\(a.row?.text ?? "") vs \(b.row?.text ?? "")")
        }
        let checks = try Doctor.check(on: admin, modes: [.replication], tables: [table], publication: "generated")
        let named = checks.filter { $0.summary.contains("stored generated columns (total)") }
        #expect(named.count == 1 && named.first?.outcome == .warn, "\(checks.map(\.summary))")
        // And where serve's window is kept, beside what the slot retains.
        #expect(checks.contains { $0.outcome == .ok && $0.summary.contains("resume window on its own disk (--window-dir") })
    }

    @Test func reconnectsAfterTheWalsenderIsTerminatedAndLosesNothing() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try Self.connect(url)
        try admin.execute("CREATE TABLE ticks (id int PRIMARY KEY)")
        let applicationName = LiveDatabase.uniqueName("walsender")
        let capture = try await RunningCapture.replication( .init(
            connection: ConnectionSettings(conninfo: url, applicationName: applicationName),
            slot: LiveDatabase.uniqueName("ticks"),
            tables: [TableName(schema: "public", name: "ticks")]
        ))
        defer { capture.finish(droppingSlotIn: url) }
        try admin.execute("INSERT INTO ticks SELECT generate_series(1, 100)")
        #expect(await capture.sink.wait(for: 100).count == 100)
        let killed = try admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication WHERE application_name = $1", [applicationName])
        #expect(killed.scalar == "1")
        for n in 101...300 { try admin.execute("INSERT INTO ticks VALUES ($1)", [String(n)]) }
        let records = await capture.sink.wait(for: 300, seconds: 60)
        let ids = Set(records.compactMap { $0.row?.text.firstMatch(of: /"id":(\d+)/).flatMap { Int($0.1) } })
        #expect(ids == Set(1...300))
        #expect(records.count == 300, "repeats after a reconnect are skipped by cursor")
    }

    @Test func aQuietPublicationDoesNotHoldBackWAL() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try Self.connect(url)
        try admin.executeScript("CREATE TABLE quiet (id int PRIMARY KEY); CREATE TABLE churn (v text)")
        let quietSlot = LiveDatabase.uniqueName("quiet")
        let capture = try await RunningCapture.replication( .init(
            connection: ConnectionSettings(conninfo: url), slot: quietSlot, publication: "quiet",
            tables: [TableName(schema: "public", name: "quiet")], statusInterval: 1
        ))
        defer { capture.finish(droppingSlotIn: url) }
        // About 200 MB of WAL on a table the publication does not include.
        let start = try #require(admin.execute("SELECT pg_current_wal_lsn()::text").scalar)
        for _ in 0..<10 {
            try admin.execute("INSERT INTO churn SELECT repeat('x', 1000) FROM generate_series(1, 20000)")
        }
        let written = try #require(admin.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint", [start]).scalar.flatMap { Int64($0) })
        #expect(written > 150_000_000)
        var lag = written
        let deadline = Date().addingTimeInterval(60)
        while lag > 4 * 1024 * 1024, Date() < deadline {
            try await pause(for: .milliseconds(250))
            lag = try #require(admin.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1", [quietSlot]).scalar.flatMap { Int64($0) })
        }
        #expect(lag < 4 * 1024 * 1024, "confirmed_flush_lsn is \(lag) bytes behind")
        #expect(capture.sink.snapshot.isEmpty)
    }

    @Test func aSlotInUseIsAOneLineErrorWithTheFix() async throws {
        let url = try await LiveDatabase.freshDatabase()
        try Self.connect(url).execute("CREATE TABLE held (id int PRIMARY KEY)")
        let heldSlot = LiveDatabase.uniqueName("held")
        let configuration = ReplicationCapture.Configuration(connection: ConnectionSettings(conninfo: url), slot: heldSlot, publication: "held", tables: [TableName(schema: "public", name: "held")])
        let first = try await RunningCapture.replication( configuration)
        defer { first.finish(droppingSlotIn: url) }
        #expect {
            _ = try ReplicationCapture.connect(configuration: configuration, logger: LiveDatabase.logger)
        } throws: { error in
            let text = "\(error)"
            return text.contains("is in use by process") && text.contains("rowcast slot drop \(heldSlot) --force") && !text.contains("\n")
        }
    }
}

@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct ReplicationResumeTests {
    @Test func cursorsAreTheSameOnEverySlotAndSinceSkipsUpToOne() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        try admin.execute("CREATE TABLE seq (id int PRIMARY KEY)")
        let table = TableName(schema: "public", name: "seq")
        let first = LiveDatabase.uniqueName("first"), second = LiveDatabase.uniqueName("second")
        // Off the cooperative pool: making a slot waits for the cluster's open transactions.
        try await onThread("two slots", within: 300) {
            try ReplicationSetup.install(on: admin, publication: "seq", slot: first, tables: [table])
            try ReplicationSetup.install(on: admin, publication: "seq", slot: second, tables: [table])
        }
        for n in 1...10 { try admin.execute("INSERT INTO seq VALUES ($1)", [String(n)]) }

        let a = try await RunningCapture.replication( .init(connection: ConnectionSettings(conninfo: url), slot: first, publication: "seq", tables: [table]))
        let all = await a.sink.wait(for: 10)
        a.finish(droppingSlotIn: url)
        #expect(all.count == 10)
        let since = try #require(all.count == 10 ? all[4].cursor : nil)

        let b = try await RunningCapture.replication( .init(connection: ConnectionSettings(conninfo: url), slot: second, publication: "seq", tables: [table], since: since))
        defer { b.finish(droppingSlotIn: url) }
        let rest = await b.sink.wait(for: 5)
        try await pause(for: .milliseconds(300))
        #expect(b.sink.snapshot.map(\.cursor) == Array(all[5...]).map(\.cursor))
        #expect(rest.count == 5)
    }
}
