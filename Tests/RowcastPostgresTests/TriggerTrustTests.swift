import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

/// Trigger mode against a database role that may not read the captured tables: it
/// can LISTEN and NOTIFY on any channel, so neither may give it rows or let it pass
/// records off as changes.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct TriggerTrustTests {
    /// A login role with no privilege at all, and a connection as that role.
    struct Stranger {
        let role: String
        let connection: PostgresConnection

        init(_ admin: PostgresConnection) throws {
            role = LiveDatabase.uniqueName("stranger")
            try admin.execute("CREATE ROLE \(role) LOGIN")
            var url = URLComponents(string: LiveDatabase.url ?? "")
            url?.user = role
            connection = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url?.string ?? "")))
        }

        func drop(_ admin: PostgresConnection) {
            connection.close()
            _ = try? admin.execute("DROP OWNED BY \(role)")
            _ = try? admin.execute("DROP ROLE \(role)")
        }

        /// Notifications on `rowcast` until one satisfies `done`, or a minute passes.
        func listen(until done: ([PostgresNotification]) -> Bool) throws -> [PostgresNotification] {
            var received: [PostgresNotification] = []
            let deadline = Date().addingTimeInterval(60)
            while !done(received), Date() < deadline {
                if connection.waitReadable(milliseconds: 200) { try connection.consumeInput() }
                received += connection.drainNotifications().filter { $0.channel == TriggerPayload.channel }
            }
            return received
        }
    }

    /// rowcast connecting as a role other than the one that set trigger mode up needs
    /// what `rowcast doctor` asks for, and nothing more: with its fix applied, that role
    /// registers, receives a change and trims it. Doctor used to ask only for
    /// rowcast.changes, and such a role could not register as a listener.
    @Test func aRoleGrantedWhatDoctorAsksForListensAndTrims() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        let role = LiveDatabase.uniqueName("listener_role")
        try admin.execute("CREATE ROLE \(role) LOGIN")
        defer {
            _ = try? admin.execute("DROP OWNED BY \(role)")
            _ = try? admin.execute("DROP ROLE \(role)")
        }
        var components = URLComponents(string: url)
        components?.user = role
        let roleURL = components?.string ?? ""
        let asRole = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(roleURL)))
        let failed = try Doctor.check(on: asRole, modes: [.trigger], tables: [table], publication: "rowcast").filter { $0.outcome == .fail }
        asRole.close()
        // Only what listening needs: not TRIGGER on a table already set up.
        #expect(failed.count == 1, "\(failed.map(\.summary))")
        let fix = try #require(failed.first?.fix, "doctor found nothing to fix: \(failed)")
        try admin.executeScript(fix)

        let capture = try RunningCapture(.init(connection: ConnectionSettings(conninfo: roleURL), tables: [table], listenerName: "role", maintenanceSeconds: 1))
        defer { capture.finish() }
        try await eventually("the role registered", within: 60, seen: { capture.capture.state.lastError ?? "" }) {
            try admin.execute("SELECT count(*) FROM rowcast.listeners WHERE name = 'role'").scalar == "1"
        }
        try admin.execute("INSERT INTO t VALUES (1)")
        #expect(await capture.sink.wait(for: 1).count == 1)
        try await eventually("the role trimmed what it read", within: 60, seen: { capture.capture.state.lastError ?? "" }) {
            try admin.execute("SELECT count(*) FROM rowcast.changes").scalar == "0"
        }
    }

    @Test func aRoleWithoutPrivilegesReadsNoRowByListening() throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("secret"))
        let admin = try LiveDatabase.connect()
        try admin.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, card text)")
        try TriggerSetup.install(on: admin, tables: [table])
        let stranger = try Stranger(admin)
        defer { stranger.drop(admin) }
        try stranger.connection.execute("LISTEN rowcast")
        // A live listener, so that the trigger writes and notifies.
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }

        let secret = LiveDatabase.uniqueName("card-4242")
        try admin.execute("BEGIN")
        try admin.execute("INSERT INTO \(table.quoted) VALUES (1, $1)", [secret])
        let xid = try admin.execute("SELECT txid_current()").scalar
        try admin.execute("COMMIT")
        let heard = try stranger.listen { $0.contains { $0.payload == Array((xid ?? "").utf8) } }
        let mine = heard.filter { String(decoding: $0.payload, as: UTF8.self) == xid }
        #expect(mine.count == 1, "the transaction's notification reaches every listener")
        #expect(!heard.contains { String(decoding: $0.payload, as: UTF8.self).contains(secret) }, "no row in any payload")
        // And the rows behind the id are closed to it.
        #expect {
            try stranger.connection.execute("SELECT * FROM rowcast.changes")
        } throws: { error in
            (error as? PostgresError)?.sqlState == "42501"
        }
    }

    @Test func aRoleWithoutPrivilegesCannotForgeOrReplayARecord() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("payments"))
        let admin = try LiveDatabase.connect()
        try admin.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, amount int)")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }
        let stranger = try Stranger(admin)
        defer { stranger.drop(admin) }
        try stranger.connection.execute("LISTEN rowcast")

        // A real change, whose notification the stranger hears.
        try admin.executeScript("BEGIN; INSERT INTO \(table.quoted) VALUES (1, 10);")
        let xid = try admin.execute("SELECT txid_current()").scalar ?? ""
        try admin.execute("COMMIT")
        #expect(await capture.sink.wait(for: 1).count == 1)
        _ = try stranger.listen { $0.contains { $0.payload == Array(xid.utf8) } }

        // Forgeries: a record in the payload (what rowcast 0.1's trigger sent), an id
        // no transaction wrote, garbage, and the real notification replayed.
        let forged = [
            #"{"op":"insert","schema":"public","table":"\#(table.name)","xid":1,"i":1,"row":{"id":666,"amount":1000000}}"#,
            "123", "999999999999", "-1", "", "1 OR 1=1", xid, xid,
        ]
        for payload in forged {
            try stranger.connection.execute("SELECT pg_notify('rowcast', $1)", [payload])
        }
        // A real change after them: once it arrives, every forgery was handled.
        try admin.execute("INSERT INTO \(table.quoted) VALUES (2, 20)")
        let records = await capture.sink.wait(for: 2)
        try await pause(for: .milliseconds(200))
        let ids = capture.sink.snapshot.compactMap { record in
            record.row.flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }?["id"] as? Int
        }
        #expect(records.count == 2)
        #expect(ids == [1, 2], "only the two real rows, once each")
    }

    @Test func aMultiRowTransactionIsOneNotificationInOrderWithPairedUpdates() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("bulk"))
        let admin = try LiveDatabase.connect()
        try admin.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, v text)")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }
        let listener = try LiveDatabase.connect()
        try listener.execute("LISTEN rowcast")

        // Three statements in one transaction; the update changes every key.
        try admin.executeScript(
            """
            BEGIN;
            INSERT INTO \(table.quoted) SELECT g, 'v' || g FROM generate_series(1, 1000) g;
            UPDATE \(table.quoted) SET id = id + 10000, v = v || 'x';
            DELETE FROM \(table.quoted) WHERE id % 2 = 0;
            """
        )
        let xid = try admin.execute("SELECT txid_current()").scalar ?? ""
        try admin.execute("COMMIT")
        let records = await capture.sink.wait(for: 2500)
        #expect(records.count == 2500)
        #expect(records.map(\.op) == Array(repeating: .insert, count: 1000) + Array(repeating: .update, count: 1000) + Array(repeating: .delete, count: 500))
        func object(_ json: RawJSON?) -> [String: Any]? {
            json.flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }
        }
        let inserted = records.prefix(1000).compactMap { object($0.row)?["id"] as? Int }
        #expect(inserted.sorted() == Array(1...1000))
        let pairs = records.dropFirst(1000).prefix(1000).map { (object($0.old), object($0.row)) }
        let paired = pairs.filter { old, new in
            guard let oldID = old?["id"] as? Int, let newID = new?["id"] as? Int, let oldV = old?["v"] as? String else { return false }
            return newID == oldID + 10000 && new?["v"] as? String == oldV + "x"
        }
        #expect(paired.count == 1000, "each update's old row is its own")
        #expect(Set(records.map(\.xid)) == [UInt32(truncatingIfNeeded: Int64(xid) ?? 0)])

        var notified = 0
        let deadline = Date().addingTimeInterval(60)
        while notified == 0, Date() < deadline {
            if listener.waitReadable(milliseconds: 200) { try listener.consumeInput() }
            notified += listener.drainNotifications().filter { $0.payload == Array(xid.utf8) }.count
        }
        // Anything still on its way would be in libpq's queue by now: one query flushes it.
        try listener.execute("SELECT 1")
        notified += listener.drainNotifications().filter { $0.payload == Array(xid.utf8) }.count
        #expect(notified == 1, "one notification for the whole transaction")
    }

    @Test func aWriteStraightIntoAPartitionIsCaptured() async throws {
        let name = LiveDatabase.uniqueName("parted")
        let table = TableName(schema: "public", name: name)
        let partition = TableName(schema: "public", name: name + "_low")
        let admin = try LiveDatabase.connect()
        try admin.execute("CREATE TABLE \(table.quoted) (id int, v text) PARTITION BY RANGE (id)")
        try admin.execute("CREATE TABLE \(partition.quoted) PARTITION OF \(table.quoted) FOR VALUES FROM (0) TO (100)")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(tables: [])
        defer { capture.finish() }
        try admin.execute("INSERT INTO \(table.quoted) VALUES (1, 'through the parent')")
        try admin.execute("INSERT INTO \(partition.quoted) VALUES (2, 'straight in')")
        // Named as replication mode names them (pgoutput reports the partition).
        let records = await capture.sink.wait(for: 2) { $0.table == partition.name }
        #expect(records.compactMap { $0.row?.text } == [#"{"id":1,"v":"through the parent"}"#, #"{"id":2,"v":"straight in"}"#])
    }

    /// A change is deleted once every live listener read it (the only one here), and
    /// a notification replayed afterwards reads nothing.
    @Test func deliveredRowsAreDeletedOnceEveryListenerReadThemAndAReplayThenFindsNothing() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("retained"))
        // A database of its own: its listeners are this test's alone.
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        try admin.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(.init(connection: ConnectionSettings(conninfo: url), tables: [table], maintenanceSeconds: 1))
        defer { capture.finish() }
        try admin.executeScript("BEGIN; INSERT INTO \(table.quoted) VALUES (1);")
        let xid = try admin.execute("SELECT txid_current()").scalar ?? ""
        try admin.execute("COMMIT")
        #expect(await capture.sink.wait(for: 1).count == 1)
        var left = "1"
        let deadline = Date().addingTimeInterval(60)
        while left != "0", Date() < deadline {
            left = try admin.execute("SELECT count(*) FROM rowcast.changes WHERE batch = $1::bigint", [xid]).scalar ?? ""
            try await pause(for: .milliseconds(100))
        }
        #expect(left == "0", "the delivered rows were deleted")
        try admin.execute("SELECT pg_notify('rowcast', $1)", [xid])
        try admin.execute("INSERT INTO \(table.quoted) VALUES (2)")
        _ = await capture.sink.wait(for: 2)
        try await pause(for: .milliseconds(200))
        #expect(capture.sink.snapshot.count == 2, "the replayed id delivered nothing")
    }
}
