import Foundation
import Logging
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

/// Trigger mode keeps every row's history in commit order: two transactions that wrote
/// the same row arrive in the order they committed, whatever anyone NOTIFYs and
/// whichever way the listener reads them (live, or catching up after a restart).
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(5)))
struct TriggerOrderTests {
    /// The `v` of each record of row `id`, in the order they arrived.
    static func values(of id: Int, in records: [ChangeRecord]) -> [String] {
        records.compactMap { record in
            guard let object = (record.row ?? record.old).flatMap({ try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }),
                object["id"] as? Int == id
            else { return nil }
            return record.row == nil ? "deleted" : "\(object["v"] ?? "null")"
        }
    }

    /// A NOTIFY from another session naming a transaction before it commits (its id is
    /// easy to guess) used to put that transaction where the forged notification was:
    /// read by a listener that was behind, an update arrived before the one it followed.
    /// Only the writing session's own notification places a transaction now.
    @Test func aForgedNotificationCannotPutATransactionBeforeOneItFollows() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let connect = { () throws -> PostgresConnection in try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url))) }
        let admin = try connect(), first = try connect(), second = try connect(), forger = try connect(), blocker = try connect()
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        try admin.execute("INSERT INTO t VALUES (1, 0)")
        try TriggerSetup.install(on: admin, tables: [table])
        let applicationName = LiveDatabase.uniqueName("rowcast-forged")
        var configuration = TriggerListenerTests.configuration(url, tables: [table], name: "forged")
        configuration.connection = ConnectionSettings(conninfo: url, applicationName: applicationName)
        let capture = try RunningCapture(configuration)
        defer { capture.finish() }
        try admin.execute("INSERT INTO t VALUES (2, 0)")
        #expect(await capture.sink.wait(for: 1).count == 1)

        // On a thread of its own, start to end: while a transaction here holds an id,
        // PostgreSQL makes every new replication slot of the cluster wait (other tests
        // create them on the cooperative pool), so nothing here may wait on that pool.
        let secondID = try await onThread("a forged notification between two transactions", within: 120) { () throws -> String in
            // The listener falls behind: its next window waits to move its position.
            try blocker.execute("BEGIN")
            try blocker.execute("SELECT 1 FROM rowcast.listeners FOR UPDATE")
            defer { _ = try? blocker.execute("ROLLBACK") }
            try admin.execute("INSERT INTO t VALUES (3, 0)")
            let deadline = Date().addingTimeInterval(60)
            while try admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [applicationName]
            ).scalar != "1" {
                guard Date() < deadline else { throw DeadlinePassed(awaited: "the listener to wait on its position", seconds: 60, seen: "") }
                Thread.sleep(forTimeInterval: 0.05)
            }
            // The first transaction updates the row; the second, whose id is known before
            // it writes, updates it after the first committed. The forged notification
            // names the second before either committed.
            try first.execute("BEGIN")
            try first.execute("UPDATE t SET v = 1 WHERE id = 1")
            try second.execute("BEGIN")
            let secondID = try second.execute("SELECT txid_current()").scalar ?? ""
            try forger.execute("SELECT pg_notify('rowcast', $1)", [secondID])
            try first.execute("COMMIT")
            try second.execute("UPDATE t SET v = 2 WHERE id = 1")
            try second.execute("COMMIT")
            return secondID
        }
        #expect(!secondID.isEmpty)

        let records = await capture.sink.wait(for: 4)
        #expect(Self.values(of: 1, in: records) == ["1", "2"], "row 1's updates arrived as \(Self.values(of: 1, in: records))")
    }

    /// A deferrable key is checked at commit: a transaction inserting a key another
    /// deletes does not wait at its INSERT, so its statements can all end before the
    /// other's last one, though it commits after. Caught up after a restart (the
    /// listener reads many transactions at once), the insert used to arrive before the
    /// delete it follows.
    @Test func aDeferrableKeyKeepsARowsHistoryInCommitOrderWhenCatchingUp() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let connect = { () throws -> PostgresConnection in try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url))) }
        let admin = try connect(), first = try connect(), second = try connect()
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int, v text, CONSTRAINT t_key PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED)")
        try admin.execute("INSERT INTO t VALUES (1, 'old')")
        try TriggerSetup.install(on: admin, tables: [table])
        var capture = try RunningCapture(TriggerListenerTests.configuration(url, tables: [table], name: "deferrable"))
        try admin.execute("INSERT INTO t VALUES (2, 'x')")
        #expect(await capture.sink.wait(for: 1).count == 1)
        try await TriggerListenerTests.stop(capture)

        try first.execute("BEGIN")
        try first.execute("DELETE FROM t WHERE id = 1")
        try second.execute("BEGIN")
        try second.execute("INSERT INTO t VALUES (1, 'new')")
        try first.execute("INSERT INTO t VALUES (3, 'later')")
        try first.execute("COMMIT")
        try second.execute("COMMIT")

        capture = try RunningCapture(TriggerListenerTests.configuration(url, tables: [table], name: "deferrable"))
        defer { capture.finish() }
        let records = await capture.sink.wait(for: 3)
        #expect(Self.values(of: 1, in: records) == ["deleted", "new"], "row 1 arrived as \(Self.values(of: 1, in: records))")
        #expect(try admin.execute("SELECT v FROM t WHERE id = 1").scalar == "new")
    }

    /// A deferrable key added after set-up has no commit-time mark: the listener says
    /// so when it starts, and how to fix it.
    @Test func aDeferrableKeyAddedAfterSetUpIsNamedAtStart() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "later")
        try admin.execute("CREATE TABLE later (id int)")
        try TriggerSetup.install(on: admin, tables: [table])
        try admin.execute("ALTER TABLE later ADD CONSTRAINT later_key UNIQUE (id) DEFERRABLE")
        let messages = LogCollector()
        let logger = Logger(label: "rowcast-tests") { _ in messages }
        let capture = RunningCapture(source: try TriggerCapture.connect(
            configuration: TriggerListenerTests.configuration(url, tables: [table], name: "later"), logger: logger
        ))
        defer { capture.finish() }
        try await eventually("a warning naming the table", within: 60, seen: { messages.lines.suffix(3).joined(separator: " | ") }) {
            messages.lines.contains { $0.hasPrefix("warning ") && $0.contains("public.later has a DEFERRABLE key") }
        }
        try TriggerSetup.install(on: admin, tables: [table])
        #expect(try admin.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'rowcast_capture_order'").scalar == "1")
    }
}
