import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Synchronization
import Testing

/// Trigger mode against two oracles, on a randomized workload: several listeners with
/// different tables, restarted at random and stalled at random in the middle of a
/// window; writers at once on the same rows, with savepoints rolled back, deadlocks, a
/// partitioned table, a table whose key is DEFERRABLE (checked at commit: a key
/// deleted by one writer and inserted by another), one transaction of 20,000 rows,
/// and a session forging notifications for the transaction ids about to be used.
/// Without the commit-time mark on the deferrable table, or with forged notifications
/// placing transactions, the polling seed's replay differs from the tables. Every listener must receive exactly the committed changes of its tables
/// (as many as logical decoding counts), and replaying them must give each table's
/// final state (which also holds every row's history in order: updates add 1).
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(30)))
struct TriggerListenerRandomTests {
    /// One listener across its restarts.
    final class Listener: Sendable {
        let name: String
        let tables: Set<TableName>
        let runs = Mutex<[RunningCapture]>([])
        init(name: String, tables: Set<TableName>) {
            self.name = name
            self.tables = tables
        }
        var records: [ChangeRecord] { runs.withLock { $0.flatMap(\.sink.snapshot) } }
    }

    /// Live, the second seed on a server that allows prepared transactions: there the
    /// trigger sends no NOTIFY and every window is read by polling, transactions in
    /// order of their last statement (or commit-time mark), as a listener catching up
    /// reads them.
    @Test(.timeLimit(.minutes(5)), arguments: [(UInt64(24), false), (1207, true)])
    func everyListenerGetsExactlyTheCommittedChangesOfItsTables(seed: UInt64, polling: Bool) async throws {
        try await run(seed: seed, polling: polling, scale: .quick)
    }

    /// How much a run does.
    struct Scale {
        var rounds: Int, largest: Int, pauseMilliseconds: Int, restarts: Int
        /// What `make test` runs.
        static let quick = Scale(rounds: 60, largest: 20_000, pauseMilliseconds: 1_500, restarts: 4)
        /// The issue's scale: a transaction of 100,000 rows, listeners away up to two
        /// minutes (within their 300 s timeout). Some 15 minutes; run with
        /// `ROWCAST_LONG_TESTS=1 ROWCAST_TEST_WATCHDOG=1800 scripts/test.sh --filter atTheIssuesScale`
        /// (the watchdog's 300 s is the suite's longest limit otherwise).
        static let long = Scale(rounds: 400, largest: 100_000, pauseMilliseconds: 120_000, restarts: 4)
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["ROWCAST_LONG_TESTS"] == "1", "ROWCAST_LONG_TESTS=1 runs it"), arguments: [(UInt64(7), false), (99, true)])
    func atTheIssuesScale(seed: UInt64, polling: Bool) async throws {
        try await run(seed: seed, polling: polling, scale: .long)
    }

    func run(seed: UInt64, polling: Bool, scale: Scale) async throws {
        // initdb and a start take seconds (more under load): off the cooperative pool,
        // whose two threads every async test of the process shares.
        let cluster = polling
            ? try await onThread("a cluster that allows prepared transactions", within: 300) {
                try ThrowawayCluster.start(settings: ["max_prepared_transactions = 4"])
            }
            : nil
        defer { cluster?.destroy() }
        let url: String
        if let cluster { url = cluster.url } else { url = try await LiveDatabase.freshDatabase() }
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let a = TableName(schema: "public", name: "a"), b = TableName(schema: "public", name: "b"), p = TableName(schema: "public", name: "p")
        try admin.executeScript(
            """
            CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL);
            CREATE TABLE b (id int PRIMARY KEY, v int NOT NULL);
            CREATE TABLE p (id int, v int NOT NULL) PARTITION BY RANGE (id);
            CREATE TABLE p_low PARTITION OF p FOR VALUES FROM (0) TO (500000);
            CREATE TABLE p_high PARTITION OF p FOR VALUES FROM (500000) TO (10000000);
            CREATE UNIQUE INDEX ON p (id);
            CREATE TABLE d (id int, v int NOT NULL, CONSTRAINT d_key PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED);
            """
        )
        let d = TableName(schema: "public", name: "d")
        try TriggerSetup.install(on: admin, tables: [a, b, p, d])
        let oracle = LiveDatabase.uniqueName("oracle")
        // Made off the cooperative pool: it waits for the cluster's open transactions.
        try await onThread("the oracle's slot", within: 300) {
            _ = try admin.execute("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", [oracle])
        }
        let listeners = [
            Listener(name: "only-a", tables: [a]), Listener(name: "b-p-d", tables: [b, p, d]), Listener(name: "all", tables: [a, b, p, d]),
        ]
        let stalls = Shared(SplitMix(seed: seed ^ 0x57A11))
        func start(_ listener: Listener) throws {
            let run = try RunningCapture(.init(
                connection: ConnectionSettings(conninfo: url), tables: listener.tables, listenerName: listener.name,
                listenerTimeoutSeconds: 300, maintenanceSeconds: 1
            ))
            // Now and then the sink stops taking records for up to 3 s, mid-window.
            run.sink.onDeliver { _ in
                let stall = stalls.value.withLock { random -> Double? in
                    random.next() % 5_000 == 0 ? Double(random.next() % 3_000) / 1_000 : nil
                }
                if let stall { Thread.sleep(forTimeInterval: stall) }
            }
            listener.runs.withLock { $0.append(run) }
        }
        for listener in listeners { try start(listener) }
        defer { for listener in listeners { listener.runs.withLock { $0.forEach { $0.finish() } } } }

        // Writers: new ids of their own, updates and deletes on a shared range.
        let writers = 3, rounds = scale.rounds
        let writing = Shared(writers)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    defer { writing.value.withLock { $0 -= 1 } }
                    try await onThread("writer \(writer)", within: 1_500) {
                        var random = SplitMix(seed: seed &+ UInt64(writer))
                        let connection = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
                        var next = 1_000 + writer * 1_000_000
                        for round in 0..<rounds {
                            let table = ["a", "b", "p", "d"][Int(random.next() % 4)]
                            let shared = Int(random.next() % 50)
                            var script = "BEGIN;"
                            let rows = writer == 0 && round == rounds / 2 ? scale.largest : Int(random.next() % 200) + 1
                            script += "INSERT INTO \(table) SELECT g, 0 FROM generate_series(\(next), \(next + rows - 1)) g;"
                            next += rows
                            if random.next() % 3 == 0 {
                                script += "SAVEPOINT s; INSERT INTO \(table) SELECT g, 0 FROM generate_series(\(next), \(next + 9)) g; ROLLBACK TO SAVEPOINT s;"
                                next += 10
                            }
                            if table == "d" {
                                // A key of three deleted by one writer, which goes on writing
                                // for a moment, and inserted by another, whose INSERT does
                                // not wait: the deferrable key is checked at commit (which
                                // waits for the deleting writer, or rolls a duplicate back).
                                let key = Int(random.next() % 3)
                                if random.next() % 2 == 0 {
                                    script += "DELETE FROM d WHERE id = \(key); SELECT pg_sleep(0.1); INSERT INTO d VALUES (\(next), 0);"
                                    next += 1
                                } else {
                                    script += "INSERT INTO d VALUES (\(key), 0);"
                                }
                            } else {
                                script += "INSERT INTO \(table) VALUES (\(shared), 0) ON CONFLICT (id) DO UPDATE SET v = \(table).v + 1;"
                            }
                            script += "UPDATE \(table) SET v = v + 1 WHERE id = \(Int(random.next() % 50));"
                            if random.next() % 4 == 0 { script += "DELETE FROM \(table) WHERE id = \(Int(random.next() % 50));" }
                            script += "COMMIT;"
                            do {
                                try connection.executeScript(script)
                            } catch {
                                // A deadlock between writers on the shared rows: that transaction is rolled back.
                                _ = try? connection.execute("ROLLBACK")
                            }
                        }
                    }
                }
            }
            // Meanwhile, notifications for the transaction ids about to be taken, from a
            // session that wrote none of them.
            group.addTask {
                try await onThread("forger", within: 1_500) {
                    let forger = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
                    while writing.value.withLock({ $0 > 0 }) {
                        try forger.execute("SELECT pg_notify('rowcast', (txid_current() + k)::text) FROM generate_series(1, 5) k")
                        Thread.sleep(forTimeInterval: 0.1)
                    }
                }
            }
            // Meanwhile, listeners stop and come back under their names.
            group.addTask {
                var random = SplitMix(seed: seed ^ 0xABCDEF)
                for _ in 0..<scale.restarts {
                    let listener = listeners[Int(random.next() % UInt64(listeners.count))]
                    guard let run = listener.runs.withLock({ $0.last }) else { continue }
                    run.finish()
                    try await eventually("\(listener.name) stopped", within: 60, seen: { run.capture.state.lastError ?? "" }) {
                        !run.capture.state.isConnected && run.capture.state.lastError == "stopped"
                    }
                    try await pause(for: .milliseconds(Int(random.next() % UInt64(scale.pauseMilliseconds))))
                    try start(listener)
                    try await pause(for: .milliseconds(Int(random.next() % UInt64(scale.pauseMilliseconds))))
                }
            }
            try await group.waitForAll()
        }

        // The oracles: logical decoding's count of committed changes per table, and each table's final state.
        var committed: [String: Int] = [:]
        for row in try admin.execute("SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)", [oracle]).rows {
            guard let data = row[0], let match = data.firstMatch(of: /^table public\.(\w+): (INSERT|UPDATE|DELETE)/) else { continue }
            committed[Self.root(String(match.1)), default: 0] += 1
        }
        _ = try? admin.execute("SELECT pg_drop_replication_slot($1)", [oracle])
        var final: [String: [Int: Int]] = [:]
        for name in ["a", "b", "p", "d"] {
            for row in try admin.execute("SELECT id, v FROM \(name)").rows {
                if let id = row[0].flatMap(Int.init), let v = row[1].flatMap(Int.init) { final[name, default: [:]][id] = v }
            }
        }
        for listener in listeners {
            let names = Set(listener.tables.map(\.name))
            let seen = Mutex("")
            try await eventually("\(listener.name) has every committed change of its tables", within: 120, seen: { seen.withLock { $0 } }) {
                let (counts, state) = Self.replay(listener.records)
                let expected = committed.filter { names.contains($0.key) }
                let wrong = names.sorted().map { name in
                    let mine = state[name] ?? [:], theirs = final[name] ?? [:]
                    return "\(name): \(Set(mine.keys).union(theirs.keys).filter { mine[$0] != theirs[$0] }.count) rows differ"
                }
                seen.withLock { $0 = "received \(counts.sorted { $0.key < $1.key }), committed \(expected.sorted { $0.key < $1.key }); replayed against the tables: \(wrong)" }
                return counts == expected && names.allSatisfy { (state[$0] ?? [:]) == (final[$0] ?? [:]) }
            }
        }
        // Everything read by every live listener: the outbox empties.
        try await eventually("rowcast.changes empty", within: 60, seen: { "" }) {
            try admin.execute("SELECT count(*) FROM rowcast.changes").scalar == "0"
        }
    }

    /// State shared with the capture threads and tasks.
    final class Shared<Value: Sendable>: Sendable {
        let value: Mutex<Value>
        init(_ value: Value) { self.value = Mutex(value) }
    }

    /// A partition's records count for its partitioned table.
    static func root(_ table: String) -> String { table.hasPrefix("p_") ? "p" : table }

    /// Changes per table, and the tables replayed from them.
    static func replay(_ records: [ChangeRecord]) -> (counts: [String: Int], state: [String: [Int: Int]]) {
        var counts: [String: Int] = [:], state: [String: [Int: Int]] = [:]
        for record in records {
            guard let table = record.table.map(root) else { continue }
            counts[table, default: 0] += 1
            let values = (record.row ?? record.old).flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }
            guard let id = values?["id"] as? Int else { continue }
            switch record.op {
            case .insert, .update: state[table, default: [:]][id] = values?["v"] as? Int
            case .delete: state[table, default: [:]][id] = nil
            default: break
            }
        }
        return (counts, state)
    }
}
