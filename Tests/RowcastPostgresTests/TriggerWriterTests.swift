import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

/// What trigger mode must never do to the application's writes: fail one, or miss a
/// change, whatever way the application writes (isolation level, two-phase commit, a
/// partition named directly, a session that writes as a replica).
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct TriggerWriterTests {
    /// Two SERIALIZABLE transactions that write different rows of a captured table,
    /// interleaved: PostgreSQL commits both, and so must the trigger let it. The trigger
    /// used to read its transaction's earlier changes from rowcast.changes to number the
    /// next ones, a read that serializable transactions track: each read what the other
    /// wrote, and one of every such pair failed with a serialization failure.
    @Test func serializableWritersNeverFailBecauseOfTheCapture() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("serial"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, body text)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }
        let (first, second) = (try LiveDatabase.connect(), try LiveDatabase.connect())
        var failures: [String] = []
        let rounds = 20
        for round in 0..<rounds {
            let insert = { (connection: PostgresConnection, id: Int) throws in
                try connection.execute("INSERT INTO \(table.quoted) VALUES ($1, 'round ' || $2)", [String(id), String(round)])
            }
            do {
                try first.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                try second.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                try insert(first, round * 4 + 1)
                try insert(second, round * 4 + 2)
                try insert(first, round * 4 + 3)
                try insert(second, round * 4 + 4)
                try first.execute("COMMIT")
                try second.execute("COMMIT")
            } catch {
                failures.append("\(error)")
                _ = try? first.execute("ROLLBACK")
                _ = try? second.execute("ROLLBACK")
            }
        }
        #expect(failures.count == 0, "\(failures.count) of \(rounds) rounds failed: \(failures.first ?? "")")
        guard failures.isEmpty else { return }
        let records = await capture.sink.wait(for: rounds * 4)
        let ids = Set(records.compactMap { $0.row.flatMap { Self.id(in: $0) } })
        #expect(ids == Set(1...(rounds * 4)), "\(ids.count) of \(rounds * 4) rows arrived")
    }

    /// A transaction prepared for two-phase commit while a listener is live: PostgreSQL
    /// refuses to PREPARE a transaction that sent a NOTIFY, and the trigger used to send
    /// one, failing every such writer. On a server that allows prepared transactions the
    /// trigger sends none, and the listener reads new changes on its own every 100 ms.
    /// (A cluster of its own: the suite's keeps PostgreSQL's default, no prepared
    /// transactions, so every other test goes through the NOTIFY.)
    @Test func aPreparedTransactionCommitsAndItsChangesArrive() async throws {
        let cluster = try await onThread("a cluster that allows prepared transactions", within: 300) {
            try ThrowawayCluster.start(settings: ["max_prepared_transactions = 4"])
        }
        defer { cluster.destroy() }
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("twophase"))
        let database = try PostgresConnection(ConnectionSettings(conninfo: cluster.url))
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, body text)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(.init(connection: ConnectionSettings(conninfo: cluster.url), tables: [table], channels: []))
        defer { capture.finish() }
        let gid = LiveDatabase.uniqueName("gid")
        var failure: String?
        do {
            try database.execute("BEGIN")
            try database.execute("INSERT INTO \(table.quoted) VALUES (1, 'prepared')")
            try database.execute("PREPARE TRANSACTION '\(gid)'")
            try database.execute("COMMIT PREPARED '\(gid)'")
        } catch {
            failure = "\(error)"
            _ = try? database.execute("ROLLBACK")
            _ = try? database.execute("ROLLBACK PREPARED '\(gid)'")
        }
        #expect(failure == nil, "two-phase commit failed: \(failure ?? "")")
        // An ordinary transaction after it arrives too, after it.
        try database.execute("INSERT INTO \(table.quoted) VALUES (2, 'plain')")
        let records = await capture.sink.wait(for: failure == nil ? 2 : 1)
        #expect(records.compactMap { $0.row.flatMap(Self.id) } == (failure == nil ? [1, 2] : [2]))
    }

    /// TRUNCATE of one partition of a captured partitioned table. Its statement-level
    /// trigger was the parent's alone, which PostgreSQL does not fire for a partition
    /// truncated on its own: the change was lost.
    @Test func truncatingOnePartitionIsCaptured() async throws {
        let parent = TableName(schema: "public", name: LiveDatabase.uniqueName("parted"))
        let (one, two) = (TableName(schema: "public", name: parent.name + "_1"), TableName(schema: "public", name: parent.name + "_2"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(parent.quoted) (id int, k int) PARTITION BY LIST (k)")
        try database.execute("CREATE TABLE \(one.quoted) PARTITION OF \(parent.quoted) FOR VALUES IN (1)")
        try database.execute("CREATE TABLE \(two.quoted) PARTITION OF \(parent.quoted) FOR VALUES IN (2)")
        try TriggerSetup.install(on: database, tables: [parent])
        let capture = try RunningCapture(tables: [parent])
        defer { capture.finish() }
        try database.execute("INSERT INTO \(parent.quoted) VALUES (1, 1), (2, 2)")
        try database.execute("TRUNCATE \(one.quoted)")
        try database.execute("INSERT INTO \(parent.quoted) VALUES (3, 2)")
        let records = await capture.sink.wait(for: 4)
        let seen = records.map { "\($0.op.rawValue) \($0.table ?? "")" }
        #expect(seen == ["insert \(one.name)", "insert \(two.name)", "truncate \(one.name)", "insert \(two.name)"], "\(seen)")
    }

    /// A session that writes as a replica (`session_replication_role = replica`: a
    /// logical-replication subscriber's apply worker, tools that load data) fires only
    /// triggers enabled ALWAYS. Replication mode sees such changes in the WAL; trigger
    /// mode used to miss them.
    @Test func changesWrittenAsAReplicaAreCaptured() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("replica"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, body text)")
        try TriggerSetup.install(on: database, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }
        try database.execute("SET session_replication_role = replica")
        try database.execute("INSERT INTO \(table.quoted) VALUES (1, 'applied'), (2, 'applied')")
        try database.execute("UPDATE \(table.quoted) SET body = 'changed' WHERE id = 1")
        try database.execute("RESET session_replication_role")
        try database.execute("DELETE FROM \(table.quoted) WHERE id = 2")
        let records = await capture.sink.wait(for: 4)
        #expect(records.map(\.op.rawValue) == ["insert", "insert", "update", "delete"])
    }

    /// The `id` of a row's JSON.
    static func id(in row: RawJSON) -> Int? {
        (try? JSONSerialization.jsonObject(with: Data(row.text.utf8)) as? [String: Any])?["id"] as? Int
    }
}
