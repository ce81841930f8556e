import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Synchronization
import Testing

/// `rowcast setup` run again beside a writer never fails the writer: setup locks the
/// tables it attaches to before it touches `rowcast.changes`, the order every writer
/// takes them in (its table, then the changes its trigger writes).
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct TriggerSetupLockTests {
    /// A transaction that holds a table (a long query, a session idle in a
    /// transaction) while setup runs: setup waits 3 s for the lock, lets go, and after
    /// five tries fails naming the session, having changed nothing. It used to wait
    /// for good, and its queued ACCESS EXCLUSIVE request held up every later reader and
    /// writer of the table behind it.
    @Test func setupGivesUpOnATableAnotherTransactionHoldsAndNamesIt() async throws {
        let table = TableName(schema: "public", name: "held_" + String(UInt32.random(in: 0...UInt32.max), radix: 36))
        let (outcome, holderPID) = try await onThread("setup beside a transaction that holds the table", within: 150) { () throws -> (String, String) in
            let setup = try LiveDatabase.connect(applicationName: "rowcast-held-setup")
            try setup.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY)")
            try TriggerSetup.install(on: setup, tables: [table])
            let holder = try LiveDatabase.connect(applicationName: "rowcast-held-holder")
            try holder.execute("BEGIN")
            try holder.execute("SELECT count(*) FROM \(table.quoted)")
            let pid = try holder.execute("SELECT pg_backend_pid()").scalar ?? "?"
            var outcome = "installed"
            do {
                try TriggerSetup.install(on: setup, tables: [table])
            } catch {
                outcome = "\(error)"
            }
            try holder.execute("ROLLBACK")
            return (outcome, pid)
        }
        #expect(outcome.contains("could not take its locks") && outcome.contains("pid \(holderPID) (idle in transaction") && outcome.contains("nothing was changed"), "\(outcome)")
    }

    /// Setup upgrading an install whose rowcast.changes has the old index, while a
    /// writer of another captured table holds rowcast.changes in an open transaction:
    /// building the new index waits for that writer, 3 s at most, five times, then
    /// setup fails naming it, having changed nothing; once the writer is done it
    /// upgrades. It used to wait for good (its lock timeout covered the tables alone),
    /// and under several writers it deadlocked. (A cluster of its own: the upgrade
    /// rebuilds the suite's shared rowcast.changes otherwise.)
    @Test func anUpgradeThatWaitsForAWriterOfAnotherTableGivesUpThenUpgrades() async throws {
        let cluster = try await onThread("a cluster of its own", within: 300) { try ThrowawayCluster.start() }
        defer { cluster.destroy() }
        let (one, other) = (TableName(schema: "public", name: "one"), TableName(schema: "public", name: "other"))
        let (outcome, writerPID, again) = try await onThread("an upgrade beside a writer of another table", within: 150) { () throws -> (String, String, String) in
            let setup = try PostgresConnection(ConnectionSettings(conninfo: cluster.url))
            try setup.executeScript("CREATE TABLE one (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)")
            try TriggerSetup.install(on: setup, tables: [one, other])
            // As the previous set-up left it: the old index instead of the new one.
            try setup.executeScript("DROP INDEX rowcast.changes_batch_seq_n; CREATE INDEX changes_batch_n ON rowcast.changes (batch, n)")
            let listener = try RunningCapture(.init(connection: ConnectionSettings(conninfo: cluster.url), tables: [one, other], channels: []))
            defer { listener.finish() }
            let writer = try PostgresConnection(ConnectionSettings(conninfo: cluster.url))
            try writer.execute("BEGIN")
            try writer.execute("INSERT INTO other VALUES (1)")
            let pid = try writer.execute("SELECT pg_backend_pid()").scalar ?? "?"
            var outcome = "installed"
            do {
                try TriggerSetup.install(on: setup, tables: [one])
            } catch {
                outcome = "\(error)"
            }
            try writer.execute("COMMIT")
            var again = "installed"
            do {
                try TriggerSetup.install(on: setup, tables: [one])
            } catch {
                again = "\(error)"
            }
            return (outcome, pid, again)
        }
        #expect(outcome.contains("could not take its locks") && outcome.contains("pid \(writerPID) (idle in transaction"), "\(outcome)")
        #expect(again == "installed", "\(again)")
    }

    @Test func aWriterHoldingItsTableWhileSetupRunsAgainIsNotTheDeadlockVictim() async throws {
        let table = TableName(schema: "public", name: "lock_" + String(UInt32.random(in: 0...UInt32.max), radix: 36))
        // On threads of their own, not the cooperative pool: while this setup holds the
        // set-up lock and waits for the writer, other tests' set-ups wait for it, and a
        // wait of this test's own must not need a pool thread they hold.
        let (writerError, setupError) = try await onThread("a setup run again beside a writer", within: 150) { () -> (String?, String?) in
            let setup = try LiveDatabase.connect(applicationName: "rowcast-lock-setup")
            try setup.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY)")
            try TriggerSetup.install(on: setup, tables: [table])
            // A live listener, so that the writer's trigger writes to rowcast.changes.
            let listener = try RunningCapture(tables: [table])
            defer { listener.finish() }
            // The writer holds its table as an INSERT does, then setup runs again.
            let writer = try LiveDatabase.connect(applicationName: "rowcast-lock-writer")
            try writer.execute("BEGIN")
            try writer.execute("LOCK TABLE \(table.quoted) IN ROW EXCLUSIVE MODE")
            let outcome = Mutex<String??>(nil)
            let setupPID = try setup.execute("SELECT pg_backend_pid()").scalar ?? "0"
            Thread {
                do {
                    try TriggerSetup.install(on: setup, tables: [table])
                    outcome.withLock { $0 = .some(nil) }
                } catch {
                    outcome.withLock { $0 = .some("\(error)") }
                }
            }.start()
            // Once setup waits for a lock, the writer writes (its trigger writes to
            // rowcast.changes) and commits.
            let observer = try LiveDatabase.connect()
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let waiting = try observer.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = \(setupPID)")
                if (waiting.scalar.flatMap { Int($0) } ?? 0) > 0 { break }
                usleep(20_000)
            }
            var writerError: String?
            do {
                try writer.execute("INSERT INTO \(table.quoted) VALUES (1)")
                try writer.execute("COMMIT")
            } catch {
                writerError = "\(error)"
            }
            while Date() < deadline.addingTimeInterval(60), outcome.withLock({ $0 == nil }) { usleep(20_000) }
            return (writerError, outcome.withLock { $0 ?? "setup did not finish within 120 s" })
        }
        #expect(writerError == nil, "the writer failed: \(writerError ?? "")")
        #expect(setupError == nil, "setup failed: \(setupError ?? "")")
    }
}
