import Foundation
import RowcastTestSupport
import Testing

/// `slot` and `doctor` against the live server; `pg_replication_slots` is the oracle.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct OperationsTests {
    static func slotName() -> String { "cli_slot_" + String(UInt32.random(in: 0...UInt32.max), radix: 36) }

    @Test func slotStatusJSONMatchesPgReplicationSlots() async throws {
        let url = try #require(LiveDatabase.url)
        let slot = Self.slotName()
        let created = try await Rowcast.run(["slot", "create", slot, "--db", url])
        #expect(created.status == 0, "stderr: \(created.stderr)")
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--db", url]) }

        let status = try await Rowcast.run(["slot", "status", "--slot", slot, "--json", "--db", url])
        #expect(status.status == 0)
        let array = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [[String: Any]])
        #expect(array.count == 1)
        let reported = try #require(array.first)
        let server = try await LiveDatabase.psql(
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
        #expect(reported["lag"] as? String == (try await LiveDatabase.psql(url, "SELECT pg_size_pretty(\(lag)::bigint)")))
        for key in ["active_pid", "safe_wal_size"] { #expect(reported.keys.contains(key)) }

        let table = try await Rowcast.run(["slot", "status", "--slot", slot, "--db", url])
        #expect(table.status == 0)
        let lines = table.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("slot ") == true)
        #expect(lines.count == 2)
        #expect(lines.last?.hasPrefix(slot + " ") == true)
    }

    @Test func aMissingSlotExits1WithTheFix() async throws {
        let url = try #require(LiveDatabase.url)
        let status = try await Rowcast.run(["slot", "status", "--slot", "no_such_slot", "--db", url])
        #expect(status.status == 1)
        #expect(status.stderr == "rowcast: replication slot \"no_such_slot\" does not exist (fix: rowcast slot create no_such_slot, or rowcast setup --mode replication)\n")
        let drop = try await Rowcast.run(["slot", "drop", "no_such_slot", "--db", url])
        #expect(drop.status == 1)
    }

    @Test func anInactiveSlotHoldingWALIsWarnedAbout() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = Self.slotName()
        #expect(try await Rowcast.run(["slot", "create", slot, "--db", url]).status == 0)
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--db", url]) }
        // About 24 MB of WAL that the inactive slot now holds back.
        try await LiveDatabase.psql(url, "CREATE TABLE filler AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 24000)")
        let status = try await Rowcast.run(["slot", "status", "--slot", slot, "--db", url])
        #expect(status.status == 0)
        #expect(status.stderr.contains("warning: slot \(slot) is inactive and holds back"))
    }

    @Test func createRefusesADuplicateAndDropRefusesAnActiveSlotUnlessForced() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = Self.slotName()
        #expect(try await Rowcast.run(["slot", "create", slot, "--db", url]).status == 0)
        let again = try await Rowcast.run(["slot", "create", slot, "--db", url])
        #expect(again.status == 1)
        #expect(again.stderr.contains("already exists"))

        // Make the slot active with a real consumer.
        try await LiveDatabase.psql(url, "CREATE PUBLICATION cli_pub FOR ALL TABLES")
        let consumer = Process()
        consumer.executableURL = try Rowcast.postgresBinary("pg_recvlogical")
        consumer.arguments = ["-d", url, "--slot", slot, "--start", "-f", "/dev/null", "-o", "proto_version=1", "-o", "publication_names=cli_pub", "--no-loop"]
        consumer.standardError = FileHandle.nullDevice
        // Not the test process's stdout: a child holding it keeps swift test waiting.
        consumer.standardOutput = FileHandle.nullDevice
        try consumer.runWithNoSignalBlocked()
        defer { if consumer.isRunning { consumer.terminate() } }
        for _ in 0..<100 where try await LiveDatabase.psql(url, "SELECT active FROM pg_replication_slots WHERE slot_name = '\(slot)'") != "t" {
            try await pause(for: .milliseconds(100))
        }
        #expect(try await LiveDatabase.psql(url, "SELECT active FROM pg_replication_slots WHERE slot_name = '\(slot)'") == "t")

        let refused = try await Rowcast.run(["slot", "drop", slot, "--db", url])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("is in use by process"))
        #expect(refused.stderr.contains("--force"))

        let forced = try await Rowcast.run(["slot", "drop", slot, "--force", "--db", url])
        #expect(forced.status == 0, "stderr: \(forced.stderr)")
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(slot)'") == "0")
        _ = try await consumer.exit(within: 60)
    }

    @Test func doctorPassesOnALogicalClusterAndNamesTheFixForAMissingTrigger() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE loose (v text)")
        let replication = try await Rowcast.run(["doctor", "--mode", "replication", "--table", "orders", "--db", url])
        #expect(replication.status == 0, "stdout: \(replication.stdout)")
        #expect(replication.stdout.contains("ok    replication mode: wal_level is logical"))

        let loose = try await Rowcast.run(["doctor", "--mode", "replication", "--table", "loose", "--db", url])
        #expect(loose.status == 0)
        #expect(loose.stdout.contains("warn  replication mode: public.loose has no primary key"))
        #expect(loose.stdout.contains("fix: ALTER TABLE \"public\".\"loose\" ADD PRIMARY KEY"))

        let trigger = try await Rowcast.run(["doctor", "--mode", "trigger", "--table", "orders", "--db", url])
        #expect(trigger.status == 1)
        #expect(trigger.stdout.contains("FAIL  trigger mode: public.orders has no rowcast trigger"))
        #expect(trigger.stdout.contains("fix: rowcast setup --mode trigger --table public.orders"))
        #expect(try await Rowcast.run(["setup", "--mode", "trigger", "--table", "orders", "--db", url]).status == 0)
        #expect(try await Rowcast.run(["doctor", "--mode", "trigger", "--table", "orders", "--db", url]).status == 0)
    }

    @Test func doctorFailsOnAClusterWithoutLogicalWAL() async throws {
        // Two-phase commit on, too: trigger mode's doctor says it polls.
        // And a WAL cap far below what a stopped serve needs for ten minutes: doctor says so.
        let started = try await Rowcast.run([
            "dev-cluster", "start", "--wal-level", "replica", "--setting", "max_prepared_transactions=2", "--setting", "max_slot_wal_keep_size=1MB",
        ])
        #expect(started.status == 0, "stderr: \(started.stderr)")
        let parts = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
        try #require(parts.count == 2)
        defer { _ = try? Rowcast.runBlocking(["dev-cluster", "stop", parts[0]]) }

        try await LiveDatabase.psql(parts[1], "CREATE TABLE wal AS SELECT repeat('x', 1000) FROM generate_series(1, 10000)")
        let doctor = try await Rowcast.run(["doctor", "--mode", "replication", "--db", parts[1]])
        #expect(doctor.status == 1)
        #expect(doctor.stdout.contains("warn  replication mode: max_slot_wal_keep_size is 1MB: at this server's average WAL rate"), "\(doctor.stdout)")
        #expect(doctor.stdout.contains("FAIL  replication mode: wal_level is replica"))
        #expect(doctor.stdout.contains("fix: ALTER SYSTEM SET wal_level = logical;"))
        let slot = try await Rowcast.run(["slot", "create", "x", "--db", parts[1]])
        #expect(slot.status == 1)
        #expect(slot.stderr.contains("wal_level = logical"))
        // Trigger mode needs none of it, and says how it works beside two-phase commit.
        let trigger = try await Rowcast.run(["doctor", "--mode", "trigger", "--db", parts[1]])
        #expect(trigger.status == 0)
        #expect(trigger.stdout.contains("max_prepared_transactions is 2: the trigger sends no NOTIFY"), "\(trigger.stdout)")
    }

    @Test func everyFlagReadsItsEnvironmentVariable() async throws {
        let url = try #require(LiveDatabase.url)
        let viaEnvironment = try await Rowcast.run(["slot", "status", "--slot", "no_such_slot"], environment: ["ROWCAST_DB": url])
        #expect(viaEnvironment.status == 1)
        #expect(viaEnvironment.stderr.contains("does not exist"))
        let json = try await Rowcast.run(["slot", "status"], environment: ["ROWCAST_DB": url, "ROWCAST_JSON": "true"])
        #expect(json.stdout.hasPrefix("["))
        let badMode = try await Rowcast.run(["tail"], environment: ["ROWCAST_MODE": "sideways"])
        #expect(badMode.status == 2)
        let flagWins = try await Rowcast.run(["slot", "status", "--slot", "no_such_slot", "--db", url], environment: ["ROWCAST_DB": "postgresql://127.0.0.1:1/x"])
        #expect(flagWins.status == 1)
    }
}

/// `tail --mode replication` across a crash: nothing lost, repeats only past the confirmed position.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct ReplicationTailTests {
    /// Reads NDJSON lines from a running tail until `enough` (called with each new
    /// line) says so, or the output ends. Never drops a line tail already wrote: the
    /// rest of the chunk in hand is kept too, and after the process is gone
    /// ``drain(_:)`` returns every complete line still in the pipe.
    final class LineReader: @unchecked Sendable {
        private let pipe: Pipe
        private var buffer = Data()

        init(_ pipe: Pipe) { self.pipe = pipe }

        func read(until enough: (String) -> Bool) -> [String] {
            var lines: [String] = []
            var done = false
            while !done {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { return lines }
                buffer.append(chunk)
                guard let end = buffer.lastIndex(of: UInt8(ascii: "\n")) else { continue }
                for line in String(decoding: buffer[...end], as: UTF8.self).split(separator: "\n") {
                    lines.append(String(line))
                    if !done, enough(String(line)) { done = true }
                }
                buffer.removeSubrange(...end)
            }
            return lines
        }

        /// Every complete line left, once the writer has exited.
        func drain() -> [String] {
            read { _ in false }
        }
    }

    static func read(_ process: Process, pipe: Pipe, until enough: (String) -> Bool) -> [String] {
        LineReader(pipe).read(until: enough)
    }

    static func start(_ arguments: [String]) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = Rowcast.binary
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.runWithNoSignalBlocked()
        // A watchdog so that a hang fails the test instead of blocking the suite.
        let pid = process.processIdentifier
        Thread {
            Thread.sleep(forTimeInterval: 120)
            if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        }.start()
        return (process, pipe)
    }

    static func parse(_ line: String) -> (id: Int, lsn: UInt64, cursor: String)? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            let row = object["row"] as? [String: Any], let id = row["id"] as? Int,
            let lsn = (object["lsn"] as? String).flatMap(lsnValue), let cursor = object["cursor"] as? String
        else { return nil }
        return (id, lsn, cursor)
    }

    static func lsnValue(_ text: String) -> UInt64? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16) else { return nil }
        return high << 32 | low
    }

    @Test func killNineMidStreamThenRestartLosesNothing() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = OperationsTests.slotName()
        try await LiveDatabase.psql(url, "CREATE TABLE crash (id int PRIMARY KEY, pad text)")
        #expect(try await Rowcast.run(["setup", "--mode", "replication", "--table", "crash", "--slot", slot, "--db", url]).status == 0)
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--force", "--db", url]) }
        // 20,000 rows in 200 transactions.
        let script = (0..<200).map { "INSERT INTO crash SELECT g, repeat('p', 50) FROM generate_series(\($0 * 100 + 1), \($0 * 100 + 100)) g;" }.joined(separator: "\n")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-crash-\(slot).sql")
        try script.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let load = try await onThread("psql -f to load 20,000 rows") {
            try runChild("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", file.path])
        }
        #expect(load.status == 0, "\(load.stderr)")

        let arguments = ["tail", "--mode", "replication", "--table", "crash", "--slot", slot, "--status-interval", "0.05", "--db", url]
        let initial = try #require(Self.lsnValue(try await LiveDatabase.psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")))
        let (first, firstPipe) = try Self.start(arguments)
        // Read slowly enough that tail confirms part of what it printed before it dies.
        let firstReader = LineReader(firstPipe)
        var before = try await onThread("5,000 lines from the first tail", within: 150) {
            var count = 0
            return firstReader.read { _ in
                count += 1
                if count % 1_000 == 0 { Thread.sleep(forTimeInterval: 0.2) }
                return count >= 5_000
            }
        }
        kill(first.processIdentifier, SIGKILL)
        _ = try await first.exit(within: 60)
        // What tail wrote before it died counts as printed (it may be confirmed).
        before += try await onThread("the rest of the first tail's output", within: 60) { firstReader.drain() }
        let confirmed = try #require(Self.lsnValue(try await LiveDatabase.psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")))
        #expect(confirmed > initial, "tail confirmed progress while streaming")
        #expect(confirmed <= (before.compactMap(Self.parse).map(\.lsn).max() ?? 0) + 1_000_000, "nothing far beyond what was read was confirmed")

        let (second, secondPipe) = try Self.start(arguments)
        let printed = Set(before.compactMap { Self.parse($0)?.id })
        let secondReader = LineReader(secondPipe)
        let after = try await onThread("the second tail to print every row", within: 150) {
            var seen = printed
            return secondReader.read { line in
                if let id = Self.parse(line)?.id { seen.insert(id) }
                return seen.count >= 20_000
            }
        }
        kill(second.processIdentifier, SIGINT)
        #expect(try await second.exit(within: 60) == 0)

        let firstRecords = before.compactMap(Self.parse)
        let secondRecords = after.compactMap(Self.parse)
        let seen = Set(firstRecords.map(\.id)).union(secondRecords.map(\.id))
        let missing = Set(1...20_000).subtracting(seen)
        #expect(missing.isEmpty, "every row printed at least once: \(missing.count) missing, e.g. \(missing.sorted().prefix(5))")
        let printedBefore = Set(firstRecords.map(\.cursor))
        let repeats = secondRecords.filter { printedBefore.contains($0.cursor) }
        #expect(repeats.allSatisfy { $0.lsn >= confirmed }, "repeats are confined to what was not acknowledged")
        #expect(!secondRecords.contains { $0.lsn < confirmed }, "nothing acknowledged is sent again")
        // On SIGINT, tail confirmed everything it printed.
        let finalConfirmed = try #require(Self.lsnValue(try await LiveDatabase.psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")))
        #expect(finalConfirmed > (secondRecords.map(\.lsn).max() ?? 0))
    }
}

extension ReplicationTailTests {
    @Test func tailWithEndposPrintsTheBacklogAndExits() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = OperationsTests.slotName()
        try await LiveDatabase.psql(url, "CREATE TABLE backlog (id int PRIMARY KEY)")
        #expect(try await Rowcast.run(["setup", "--mode", "replication", "--table", "backlog", "--slot", slot, "--db", url]).status == 0)
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--force", "--db", url]) }
        for batch in 0..<3 {
            try await LiveDatabase.psql(url, "INSERT INTO backlog SELECT g FROM generate_series(\(batch * 100 + 1), \(batch * 100 + 100)) g")
        }
        let end = try await LiveDatabase.psql(url, "SELECT pg_current_wal_lsn()")
        try await LiveDatabase.psql(url, "INSERT INTO backlog VALUES (1000)")  // after the end: not printed

        let tail = try await Rowcast.run(["tail", "--mode", "replication", "--slot", slot, "--endpos", end, "--db", url])
        #expect(tail.status == 0, "stderr: \(tail.stderr)")
        let ids = tail.stdout.split(separator: "\n").compactMap { Self.parse(String($0))?.id }
        #expect(ids == Array(1...300))
        let confirmed = try #require(Self.lsnValue(try await LiveDatabase.psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")))
        #expect(confirmed >= Self.lsnValue(end) ?? .max, "what was printed is confirmed")

        // Rows over 1 MB go to stdout straight from their bytes: whole lines still.
        try await LiveDatabase.psql(url, "CREATE TABLE wide (id int PRIMARY KEY, body text)")
        #expect(try await Rowcast.run(["setup", "--mode", "replication", "--table", "wide", "--slot", slot + "_w", "--db", url]).status == 0)
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot + "_w", "--force", "--db", url]) }
        try await LiveDatabase.psql(url, #"INSERT INTO wide VALUES (1, 'a'), (2, repeat('é"\', 1000000)), (3, 'c')"#)
        let wideEnd = try await LiveDatabase.psql(url, "SELECT pg_current_wal_lsn()")
        let wide = try await Rowcast.run(["tail", "--mode", "replication", "--slot", slot + "_w", "--endpos", wideEnd, "--db", url])
        #expect(wide.status == 0, "stderr: \(wide.stderr)")
        let rows = wide.stdout.split(separator: "\n").map { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["row"] as? [String: Any]
        }
        #expect(rows.map { $0?["id"] as? Int } == [1, 2, 3])
        #expect((rows[1]?["body"] as? String) == String(repeating: "é\"\\", count: 1_000_000))

        let bad = try await Rowcast.run(["tail", "--mode", "replication", "--endpos", "yesterday", "--db", url])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("is not a WAL position"))
    }
}

@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct ReplicationSetupCLITests {
    @Test func setupIsIdempotentAndTeardownKeepsTheSlotUnlessAsked() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = OperationsTests.slotName()
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--db", url]) }
        try await LiveDatabase.psql(url, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
        let first = try await Rowcast.run(["setup", "--mode", "replication", "--table", "a", "--slot", slot, "--db", url])
        #expect(first.status == 0, "stderr: \(first.stderr)")
        #expect(first.stdout.contains("created publication rowcast for public.a"))
        #expect(first.stdout.contains("created replication slot \(slot)"))
        let again = try await Rowcast.run(["setup", "--mode", "replication", "--table", "a", "--table", "b", "--slot", slot, "--db", url])
        #expect(again.status == 0)
        #expect(again.stdout == "added public.b to publication rowcast\n")
        #expect(try await LiveDatabase.psql(url, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'rowcast'") == "a,b")
        let unknown = try await Rowcast.run(["setup", "--mode", "replication", "--table", "nope", "--slot", slot, "--db", url])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("table public.nope does not exist"))

        let keep = try await Rowcast.run(["teardown", "--mode", "replication", "--slot", slot, "--db", url])
        #expect(keep.status == 0)
        #expect(keep.stdout.contains("kept replication slot \(slot); pass --drop-slot"))
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_publication") == "0")
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(slot)'") == "1")
        let drop = try await Rowcast.run(["teardown", "--mode", "replication", "--slot", slot, "--drop-slot", "--db", url])
        #expect(drop.status == 0)
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(slot)'") == "0")
    }
}
