import Foundation
import Testing

/// `slot` and `doctor` against the live server; `pg_replication_slots` is the oracle.
@Suite(.enabled(if: Rowcast.databaseURL != nil, "needs the cluster that make test starts"))
struct OperationsTests {
    static func slotName() -> String { "cli_slot_" + String(UInt32.random(in: 0...UInt32.max), radix: 36) }

    @Test func slotStatusJSONMatchesPgReplicationSlots() throws {
        let url = try #require(Rowcast.databaseURL)
        let slot = Self.slotName()
        let created = try Rowcast.run(["slot", "create", slot, "--db", url])
        #expect(created.status == 0, "stderr: \(created.stderr)")
        defer { _ = try? Rowcast.run(["slot", "drop", slot, "--db", url]) }

        let status = try Rowcast.run(["slot", "status", "--slot", slot, "--json", "--db", url])
        #expect(status.status == 0)
        let array = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [[String: Any]])
        #expect(array.count == 1)
        let reported = try #require(array.first)
        let server = try Rowcast.psql(
            url,
            """
            SELECT concat_ws('|', slot_name, plugin, database, active, restart_lsn, confirmed_flush_lsn, wal_status)
            FROM pg_replication_slots WHERE slot_name = '\(slot)'
            """
        ).split(separator: "|").map(String.init)
        #expect(reported["slot_name"] as? String == server[0])
        #expect(reported["plugin"] as? String == server[1])
        #expect(reported["database"] as? String == server[2])
        #expect((reported["active"] as? Bool).map { $0 ? "t" : "f" } == server[3])
        #expect(reported["restart_lsn"] as? String == server[4])
        #expect(reported["confirmed_flush_lsn"] as? String == server[5])
        #expect(reported["wal_status"] as? String == server[6])
        let lag = try #require(reported["lag_bytes"] as? Int)
        #expect(lag >= 0)
        #expect(reported["lag"] as? String == (try Rowcast.psql(url, "SELECT pg_size_pretty(\(lag)::bigint)")))
        for key in ["active_pid", "safe_wal_size"] { #expect(reported.keys.contains(key)) }

        let table = try Rowcast.run(["slot", "status", "--slot", slot, "--db", url])
        #expect(table.status == 0)
        let lines = table.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("slot ") == true)
        #expect(lines.count == 2)
        #expect(lines.last?.hasPrefix(slot + " ") == true)
    }

    @Test func aMissingSlotExits1WithTheFix() throws {
        let url = try #require(Rowcast.databaseURL)
        let status = try Rowcast.run(["slot", "status", "--slot", "no_such_slot", "--db", url])
        #expect(status.status == 1)
        #expect(status.stderr == "rowcast: replication slot \"no_such_slot\" does not exist (fix: rowcast slot create no_such_slot, or rowcast setup --mode replication)\n")
        let drop = try Rowcast.run(["slot", "drop", "no_such_slot", "--db", url])
        #expect(drop.status == 1)
    }

    @Test func anInactiveSlotHoldingWALIsWarnedAbout() throws {
        let url = try Rowcast.freshDatabase()
        let slot = Self.slotName()
        #expect(try Rowcast.run(["slot", "create", slot, "--db", url]).status == 0)
        defer { _ = try? Rowcast.run(["slot", "drop", slot, "--db", url]) }
        // About 24 MB of WAL that the inactive slot now holds back.
        try Rowcast.psql(url, "CREATE TABLE filler AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 24000)")
        let status = try Rowcast.run(["slot", "status", "--slot", slot, "--db", url])
        #expect(status.status == 0)
        #expect(status.stderr.contains("warning: slot \(slot) is inactive and holds back"))
    }

    @Test func createRefusesADuplicateAndDropRefusesAnActiveSlotUnlessForced() async throws {
        let url = try Rowcast.freshDatabase()
        let slot = Self.slotName()
        #expect(try Rowcast.run(["slot", "create", slot, "--db", url]).status == 0)
        let again = try Rowcast.run(["slot", "create", slot, "--db", url])
        #expect(again.status == 1)
        #expect(again.stderr.contains("already exists"))

        // Make the slot active with a real consumer.
        try Rowcast.psql(url, "CREATE PUBLICATION cli_pub FOR ALL TABLES")
        let consumer = Process()
        consumer.executableURL = try Rowcast.postgresBinary("pg_recvlogical")
        consumer.arguments = ["-d", url, "--slot", slot, "--start", "-f", "/dev/null", "-o", "proto_version=1", "-o", "publication_names=cli_pub", "--no-loop"]
        consumer.standardError = FileHandle.nullDevice
        try consumer.run()
        defer { if consumer.isRunning { consumer.terminate() } }
        for _ in 0..<100 where try Rowcast.psql(url, "SELECT active FROM pg_replication_slots WHERE slot_name = '\(slot)'") != "t" {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try Rowcast.psql(url, "SELECT active FROM pg_replication_slots WHERE slot_name = '\(slot)'") == "t")

        let refused = try Rowcast.run(["slot", "drop", slot, "--db", url])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("is in use by process"))
        #expect(refused.stderr.contains("--force"))

        let forced = try Rowcast.run(["slot", "drop", slot, "--force", "--db", url])
        #expect(forced.status == 0, "stderr: \(forced.stderr)")
        #expect(try Rowcast.psql(url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(slot)'") == "0")
        consumer.waitUntilExit()
    }

    @Test func doctorPassesOnALogicalClusterAndNamesTheFixForAMissingTrigger() throws {
        let url = try Rowcast.freshDatabase()
        try Rowcast.psql(url, "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE loose (v text)")
        let replication = try Rowcast.run(["doctor", "--mode", "replication", "--table", "orders", "--db", url])
        #expect(replication.status == 0, "stdout: \(replication.stdout)")
        #expect(replication.stdout.contains("ok    replication mode: wal_level is logical"))

        let loose = try Rowcast.run(["doctor", "--mode", "replication", "--table", "loose", "--db", url])
        #expect(loose.status == 0)
        #expect(loose.stdout.contains("warn  replication mode: public.loose has no primary key"))
        #expect(loose.stdout.contains("fix: ALTER TABLE \"public\".\"loose\" ADD PRIMARY KEY"))

        let trigger = try Rowcast.run(["doctor", "--mode", "trigger", "--table", "orders", "--db", url])
        #expect(trigger.status == 1)
        #expect(trigger.stdout.contains("FAIL  trigger mode: public.orders has no rowcast trigger"))
        #expect(trigger.stdout.contains("fix: rowcast setup --mode trigger --table public.orders"))
        #expect(try Rowcast.run(["setup", "--mode", "trigger", "--table", "orders", "--db", url]).status == 0)
        #expect(try Rowcast.run(["doctor", "--mode", "trigger", "--table", "orders", "--db", url]).status == 0)
    }

    @Test func doctorFailsOnAClusterWithoutLogicalWAL() throws {
        let started = try Rowcast.run(["dev-cluster", "start", "--wal-level", "replica"])
        #expect(started.status == 0, "stderr: \(started.stderr)")
        let parts = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
        try #require(parts.count == 2)
        defer { _ = try? Rowcast.run(["dev-cluster", "stop", parts[0]]) }

        let doctor = try Rowcast.run(["doctor", "--mode", "replication", "--db", parts[1]])
        #expect(doctor.status == 1)
        #expect(doctor.stdout.contains("FAIL  replication mode: wal_level is replica"))
        #expect(doctor.stdout.contains("fix: ALTER SYSTEM SET wal_level = logical;"))
        let slot = try Rowcast.run(["slot", "create", "x", "--db", parts[1]])
        #expect(slot.status == 1)
        #expect(slot.stderr.contains("wal_level = logical"))
        // Trigger mode needs none of it.
        #expect(try Rowcast.run(["doctor", "--mode", "trigger", "--db", parts[1]]).status == 0)
    }

    @Test func everyFlagReadsItsEnvironmentVariable() throws {
        let url = try #require(Rowcast.databaseURL)
        let viaEnvironment = try Rowcast.run(["slot", "status", "--slot", "no_such_slot"], environment: ["ROWCAST_DB": url])
        #expect(viaEnvironment.status == 1)
        #expect(viaEnvironment.stderr.contains("does not exist"))
        let json = try Rowcast.run(["slot", "status"], environment: ["ROWCAST_DB": url, "ROWCAST_JSON": "true"])
        #expect(json.stdout.hasPrefix("["))
        let badMode = try Rowcast.run(["tail"], environment: ["ROWCAST_MODE": "sideways"])
        #expect(badMode.status == 2)
        let flagWins = try Rowcast.run(["slot", "status", "--slot", "no_such_slot", "--db", url], environment: ["ROWCAST_DB": "postgresql://127.0.0.1:1/x"])
        #expect(flagWins.status == 1)
    }
}
