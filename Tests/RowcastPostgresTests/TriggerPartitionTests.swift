import Foundation
import Logging
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

/// Partitions that come and go after set-up: each change still arrives once.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(5)))
struct TriggerPartitionTests {
    static func start(_ url: String, tables: Set<TableName>, name: String) throws -> (RunningCapture, LogCollector) {
        let messages = LogCollector()
        let logger = Logger(label: "rowcast-tests") { _ in messages }
        let source = try TriggerCapture.connect(configuration: TriggerListenerTests.configuration(url, tables: tables, name: name), logger: logger)
        return (RunningCapture(source: source), messages)
    }

    /// A table set up on its own, then attached as a partition of a set-up table, has
    /// both its own statement triggers and the clone of its new parent's row trigger:
    /// each change was written, and delivered, twice, and setting the parent up again
    /// left it so. Now the listener names it when it starts, and setting the parent up
    /// again leaves the clone alone.
    @Test func aSetUpTableAttachedAsAPartitionDeliversOnceAfterItsParentIsSetUpAgain() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let parent = TableName(schema: "public", name: "p"), leaf = TableName(schema: "public", name: "a")
        try admin.execute("CREATE TABLE p (id int, k int) PARTITION BY LIST (k)")
        try admin.execute("CREATE TABLE a (id int, k int)")
        try TriggerSetup.install(on: admin, tables: [parent, leaf])
        try admin.execute("ALTER TABLE p ATTACH PARTITION a FOR VALUES IN (1)")

        let (capture, messages) = try Self.start(url, tables: [parent], name: "attached")
        try await eventually("a warning naming the attached partition", within: 60, seen: { messages.lines.joined(separator: " | ") }) {
            messages.lines.contains { $0.hasPrefix("warning ") && $0.contains("public.a") && $0.contains("twice") }
        }
        try await TriggerListenerTests.stop(capture)

        try TriggerSetup.install(on: admin, tables: [parent])
        let (again, _) = try Self.start(url, tables: [parent], name: "attached")
        defer { again.finish() }
        try admin.execute("INSERT INTO p VALUES (1, 1)")
        try admin.execute("INSERT INTO p VALUES (2, 1)")
        // A last change: once it is in, everything before it is.
        try admin.execute("INSERT INTO p VALUES (99, 1)")
        _ = await again.sink.wait(for: 1) { TriggerListenerTests.ids([$0]) == [99] }
        let ids = TriggerListenerTests.ids(again.sink.snapshot)
        #expect(ids == [1, 2, 99], "delivered \(ids)")
    }

    /// A sub-partitioned partition set up before its parent: setting the parent up
    /// replaces the partition's own row trigger with the clone of the parent's. It
    /// used to fail ("trigger rowcast_capture for relation p1 already exists").
    @Test func aPartitionSetUpBeforeItsParentGivesWayToTheParentsTrigger() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let parent = TableName(schema: "public", name: "p"), middle = TableName(schema: "public", name: "p1")
        try admin.executeScript(
            """
            CREATE TABLE p (id int, k int, PRIMARY KEY (id, k) DEFERRABLE) PARTITION BY LIST (k);
            CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1) PARTITION BY LIST (id);
            CREATE TABLE p11 PARTITION OF p1 FOR VALUES IN (1, 2, 3, 99);
            """
        )
        try TriggerSetup.install(on: admin, tables: [middle])
        try TriggerSetup.install(on: admin, tables: [parent])
        let (capture, _) = try Self.start(url, tables: [parent], name: "order")
        defer { capture.finish() }
        try admin.execute("INSERT INTO p VALUES (1, 1)")
        try admin.execute("INSERT INTO p VALUES (99, 1)")
        _ = await capture.sink.wait(for: 1) { TriggerListenerTests.ids([$0]) == [99] }
        #expect(TriggerListenerTests.ids(capture.sink.snapshot) == [1, 99])
    }

    /// A partition with a DEFERRABLE key of its own (not its parent's) keeps its
    /// commit-time mark when the parent is set up, and gets one if it had none; the
    /// parent's set-up used to drop it, and then name the partition as lacking it.
    @Test func aPartitionsOwnDeferrableKeyKeepsItsMarkWhenTheParentIsSetUp() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let parent = TableName(schema: "public", name: "q"), leaf = TableName(schema: "public", name: "q1")
        try admin.executeScript(
            """
            CREATE TABLE q (id int, k int, v int) PARTITION BY LIST (k);
            CREATE TABLE q1 PARTITION OF q FOR VALUES IN (1);
            ALTER TABLE q1 ADD CONSTRAINT q1_id UNIQUE (id) DEFERRABLE INITIALLY DEFERRED;
            """
        )
        let marks = { try admin.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'q1'::regclass AND tgname = 'rowcast_capture_order'").scalar }
        try TriggerSetup.install(on: admin, tables: [parent])
        #expect(try marks() == "1", "the parent's set-up gave the partition no mark")
        try TriggerSetup.install(on: admin, tables: [leaf])
        try TriggerSetup.install(on: admin, tables: [parent])
        #expect(try marks() == "1", "the parent's set-up dropped the partition's mark")
    }

    /// A sub-partitioned partition with a deferrable key of its own: its mark, cloned
    /// onto its partitions, is made once. Setting up the top table failed with
    /// PostgreSQL's 42710 (the mark made again on the partition's partition).
    @Test func aSubPartitionsOwnDeferrableKeyIsMarkedOnce() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        try admin.executeScript(
            """
            CREATE TABLE a (id int, k int) PARTITION BY LIST (k);
            CREATE TABLE a_m PARTITION OF a FOR VALUES IN (1) PARTITION BY LIST (k);
            ALTER TABLE a_m ADD UNIQUE (id, k) DEFERRABLE;
            CREATE TABLE a_m1 PARTITION OF a_m FOR VALUES IN (1);
            """
        )
        try TriggerSetup.install(on: admin, tables: [TableName(schema: "public", name: "a")])
        let marks = try admin.execute("SELECT string_agg(tgrelid::regclass::text, ',' ORDER BY tgrelid::regclass::text) FROM pg_trigger WHERE tgname = 'rowcast_capture_order'").scalar
        #expect(marks == "a_m,a_m1", "\(marks ?? "none")")
    }

    /// A partition detached from a set-up table keeps only its own truncate trigger:
    /// its rows are no longer captured. Named with `--table` it is refused, as a table
    /// never set up is; it used to be accepted, and its changes went nowhere.
    @Test func aDetachedPartitionIsNotTakenForSetUp() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let parent = TableName(schema: "public", name: "r"), leaf = TableName(schema: "public", name: "c")
        try admin.executeScript(
            """
            CREATE TABLE r (id int, k int) PARTITION BY LIST (k);
            CREATE TABLE c PARTITION OF r FOR VALUES IN (3);
            """
        )
        try TriggerSetup.install(on: admin, tables: [parent])
        try admin.execute("ALTER TABLE r DETACH PARTITION c")
        var refusal = ""
        do {
            let capture = RunningCapture(source: try TriggerCapture.connect(
                configuration: TriggerListenerTests.configuration(url, tables: [leaf], name: "detached"), logger: LiveDatabase.logger
            ))
            capture.finish()
        } catch {
            refusal = "\(error)"
        }
        #expect(refusal.contains("public.c") && refusal.contains("rowcast setup --mode trigger --table"), "\(refusal)")
        // Capturing every set-up table, it is named at start.
        let (all, messages) = try Self.start(url, tables: [], name: "everything")
        defer { all.finish() }
        try await eventually("a warning naming the detached partition", within: 60, seen: { messages.lines.joined(separator: " | ") }) {
            messages.lines.contains { $0.hasPrefix("warning ") && $0.contains("public.c has only rowcast's truncate trigger") }
        }
    }

    /// `setup --table` on a partition of a table already set up: the partition is
    /// captured already (by the clone of its parent's trigger), and setting it up
    /// succeeds and changes nothing. It used to fail with PostgreSQL's "cannot drop
    /// trigger rowcast_capture on table … because trigger rowcast_capture on table p
    /// requires it".
    @Test func settingUpAPartitionOfASetUpTableSucceedsAndDeliversOnce() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let parent = TableName(schema: "public", name: "p"), leaf = TableName(schema: "public", name: "p1")
        try admin.execute("CREATE TABLE p (id int, k int) PARTITION BY LIST (k)")
        try admin.execute("CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)")
        try TriggerSetup.install(on: admin, tables: [parent])
        try TriggerSetup.install(on: admin, tables: [leaf])
        let (capture, _) = try Self.start(url, tables: [leaf], name: "leaf")
        defer { capture.finish() }
        try admin.execute("INSERT INTO p VALUES (1, 1)")
        try admin.execute("INSERT INTO p1 VALUES (2, 1)")
        try admin.execute("TRUNCATE p1")
        try admin.execute("INSERT INTO p1 VALUES (99, 1)")
        _ = await capture.sink.wait(for: 1) { TriggerListenerTests.ids([$0]) == [99] }
        let ops = capture.sink.snapshot.map { "\($0.op.rawValue) \($0.table ?? "")" }
        #expect(ops == ["insert p1", "insert p1", "truncate p1", "insert p1"], "delivered \(ops)")
    }
}
