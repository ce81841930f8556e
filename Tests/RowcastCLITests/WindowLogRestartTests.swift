import Foundation
import RowcastTestSupport
import Synchronization
import Testing

/// `serve` keeps its resume window in a log of its own, so the slot confirms what the
/// log kept: a long window no longer holds back the database's WAL, and the window
/// still survives `kill -9`, a torn tail included.
@Suite(
    .enabled(if: LiveDatabase.available, "needs the cluster that make test starts"),
    .timeLimit(.minutes(5)),
    // One at a time: three start clusters of their own and write hundreds of MB of WAL,
    // and together, at the suite's start, they slowed serve's own tests past their deadlines.
    .serialized
)
struct WindowLogRestartTests {
    static let isRoot = getuid() == 0

    static func serve(slot: String, url: String, _ extra: [String] = []) throws -> RunningProcess {
        try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders",
            "--status-interval", "1", "--resume-window", "100000", "--resume-window-age", "600", "--port", "0", "--db", url,
        ] + extra)
    }

    /// A fresh database with `tables`, and a slot set up for `orders` (the caller drops it).
    static func prepare(_ prefix: String, _ tables: String) async throws -> (url: String, slot: String) {
        let url = try await LiveDatabase.freshDatabase(prefix: prefix)
        try await LiveDatabase.psql(url, tables)
        let slot = LiveDatabase.uniqueName(prefix)
        let setup = try await Rowcast.run(["setup", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders", "--db", url])
        #expect(setup.status == 0, "\(setup.stderr)")
        return (url, slot)
    }

    /// A cluster of this test's own (`dev-cluster start`), in memory when root: a tmpfs
    /// takes its WAL, so the hundreds of MB these tests write never queue behind the
    /// disk's writeback, which throttled every process writing a file (the suite's own
    /// log, and with it the test process) until tests elsewhere missed their deadlines.
    struct OwnCluster: Sendable {
        let directory: String
        let url: String
        let mount: String?

        func stop() {
            _ = try? Rowcast.runBlocking(["dev-cluster", "stop", directory])
            if let mount {
                _ = try? runChild("umount", ["-l", mount], seconds: 30)
                try? FileManager.default.removeItem(atPath: mount)
            }
        }
    }

    static func ownCluster(_ settings: [String] = []) async throws -> OwnCluster {
        var environment: [String: String] = [:]
        var mount: String?
        if isRoot {
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-ram-\(UInt32.random(in: 0...UInt32.max))").path
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let mounted = try await onThread("a tmpfs") { try runChild("mount", ["-t", "tmpfs", "-o", "size=2g,mode=1777", "tmpfs", folder], seconds: 30) }
            if mounted.status == 0 {
                mount = folder
                environment["TMPDIR"] = folder
            }
        }
        let started = try await Rowcast.run(["dev-cluster", "start", "--wal-level", "logical"] + settings.flatMap { ["--setting", $0] }, environment: environment)
        let parts = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
        guard started.status == 0, parts.count == 2 else {
            if let mount { _ = try? runChild("umount", ["-l", mount], seconds: 30) }
            throw Failure("dev-cluster start: \(started.stderr)")
        }
        return OwnCluster(directory: parts[0], url: parts[1], mount: mount)
    }

    static func status(_ port: String) async throws -> [String: Any] {
        let number = Int(port) ?? 0
        let body = try await onThread("GET /status", within: 60) { try RawClient.body(port: number, path: "/status") }
        return (try JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:]
    }

    static func slotLag(_ url: String, slot: String) throws -> (confirmed: Int, restart: Int) {
        let line = try LiveDatabase.psqlBlocking(
            url,
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint || ' ' || pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '\(slot)'",
            seconds: 60
        ).trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
        return (Int(line.first ?? "") ?? -1, Int(line.last ?? "") ?? -1)
    }

    /// A quiet published table with a record in a ten-minute window, then 200 MB of
    /// WAL on a table nobody publishes. The slot used to stay at the window's oldest record (all 200 MB held back for ten minutes); now it
    /// follows the server's WAL end within a minute, and the window still holds the record.
    ///
    /// On a cluster of its own: every walsender of a cluster reads all of its WAL, and
    /// 200 MB read by every capture of the whole suite's shared cluster at once once
    /// starved the run.
    @Test func aQuietPublicationBesideBusyTablesLeavesTheSlotNearTheWALEnd() async throws {
        let own = try await Self.ownCluster()
        defer { own.stop() }
        let url = own.url, slot = "walkeep"
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE churn (id int, pad text)")
        let setup = try await Rowcast.run(["setup", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders", "--db", url])
        #expect(setup.status == 0, "\(setup.stderr)")
        let server = try Self.serve(slot: slot, url: url)
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (1)")
        try await eventually("the record in the window", within: 60, seen: { server.output.suffix(500).description }) {
            (try await Self.status(port)["window_records"] as? Int) == 1
        }
        let before = try await LiveDatabase.psql(url, "SELECT pg_current_wal_lsn()").trimmingCharacters(in: .whitespacesAndNewlines)
        for _ in 0..<4 {
            try await LiveDatabase.psql(url, "INSERT INTO churn SELECT g, repeat('x', 1000) FROM generate_series(1, 55000) g", seconds: 180)
        }
        let written = Int(try await LiveDatabase.psql(url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '\(before)')::bigint").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(written >= 200 << 20, "the churn wrote only \(written >> 20) MB of WAL")
        let lag = Mutex((confirmed: -1, restart: -1))
        // Both the confirmed position and the restart position (what the server keeps
        // WAL for: it moves at the next snapshot record PostgreSQL logs, every 15 s).
        try await eventually("the slot within 16 MB of the WAL end", within: 60, interval: .milliseconds(500), seen: {
            "confirmed lag \(lag.withLock { $0.confirmed }) bytes, restart lag \(lag.withLock { $0.restart }) bytes; serve:\n\(server.output.suffix(800))"
        }) {
            let now = try await onThread("the slot's lag", within: 60) { try Self.slotLag(url, slot: slot) }
            lag.withLock { $0 = now }
            return now.confirmed >= 0 && now.confirmed < 16 << 20 && now.restart >= 0 && now.restart < 16 << 20
        }
        print("rowcast-test: \(written >> 20) MB of unrelated WAL; slot confirmed lag \(lag.withLock { $0.confirmed } >> 10) KB, restart lag \(lag.withLock { $0.restart } >> 10) KB")
        let status = try await Self.status(port)
        #expect(status["window_records"] as? Int == 1, "\(status)")
        #expect(try await server.stop(SIGTERM) == 0)
    }

    /// A full disk under the window log (a 256 kB tmpfs): the log is given up, said once
    /// in serve's log and in `/status`; serve goes on serving live records; and the
    /// slot confirms nothing the log did not keep: records after the failure are only
    /// in the window, so the slot stays before them.
    @Test(.enabled(if: Self.isRoot, "mounts a tmpfs")) func aFullDiskGivesUpTheLogOnceAndConfirmsNothingItDidNotKeep() async throws {
        let (url, slot) = try await Self.prepare("fulllog", "CREATE TABLE orders (id int PRIMARY KEY, pad text)")
        defer { _ = try? LiveDatabase.psqlBlocking(url, "SELECT pg_drop_replication_slot('\(slot)')", seconds: 30) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-full-log-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let mounted = try await onThread("mount") { try runChild("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", directory], seconds: 30) }
        try #require(mounted.status == 0, "mount: \(mounted.stderr)")
        defer {
            _ = try? runChild("umount", [directory], seconds: 30)
            try? FileManager.default.removeItem(atPath: directory)
        }
        let server = try Self.serve(slot: slot, url: url, ["--window-dir", directory])
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        let client = ResumingClient()
        client.move(to: port)
        client.run()
        try await client.waitUntilSubscribed()
        // 2 kB rows, 50 a transaction, until the log fails (256 kB hold about 120 rows).
        var written = 0
        let status = Mutex<String>("")
        try await eventually("the window log to fail on the full disk", within: 120, interval: .milliseconds(200), seen: { server.output.suffix(800).description }) {
            try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g, repeat('p', 2000) FROM generate_series(\(written + 1), \(written + 50)) g")
            written += 50
            let now = try await Self.status(port)
            let error = now["window_log_error"] as? String
            status.withLock { $0 = error ?? "" }
            return error?.contains("No space left on device") == true
        }
        try await client.received.wait(for: written) { server.output.suffix(800).description }
        let failedAt = try await LiveDatabase.psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // After the failure: still live, and the slot stays before what only the window holds.
        for batch in 0..<5 {
            try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g, 'after' FROM generate_series(\(written + 1), \(written + 10)) g")
            written += 10
            try await client.received.wait(for: written) { server.output.suffix(800).description }
            _ = batch
        }
        let firstAfter = try await LiveDatabase.psql(url, "SELECT pg_current_wal_lsn()").trimmingCharacters(in: .whitespacesAndNewlines)
        try await pause(for: .seconds(2))  // two status intervals
        let past = try await LiveDatabase.psql(
            url, "SELECT confirmed_flush_lsn > '\(firstAfter)'::pg_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'"
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(past == "f", "the slot confirmed past records only the window holds (it was at \(failedAt) when the log failed)")
        let said = server.output.components(separatedBy: "failed: cannot write to it: No space left on device").count - 1
        #expect(said == 1, "said \(said) times:\n\(server.output.suffix(1500))")
        #expect(client.received.ids == Array(1...written), "\(client.received.summary)")
        try await client.finish()
        #expect(try await server.stop(SIGTERM) == 0)
    }

    /// A `--window-dir` that cannot be one is refused with one line, before anything is
    /// made in the database (a slot left behind by a failed start would hold back WAL).
    @Test func aWindowDirThatCannotBeOneIsRefusedBeforeAnySlotIsMade() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "windir")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY)")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("window-file-\(UInt32.random(in: 0...UInt32.max))").path
        FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let slot = LiveDatabase.uniqueName("windir")
        for (directory, status, line) in [("", Int32(2), "rowcast: --window-dir takes a directory"), (file, 1, "rowcast: --window-dir \(file) is not a directory")] {
            let result = try await Rowcast.run(["serve", "--mode", "replication", "--table", "orders", "--slot", slot, "--window-dir", directory, "--port", "0", "--db", url])
            #expect(result.status == status, "\(result.stderr)")
            #expect(result.stderr.hasPrefix(line), "\(result.stderr)")
        }
        let slots = try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(slot)'")
        #expect(slots.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    /// `pg_ctl` on a cluster `dev-cluster start` made in `directory`, as postgres when
    /// root; its output to a file (the server it starts would hold a pipe open).
    static func pgCtl(_ directory: String, _ arguments: [String]) throws {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).compactMap(Int.init).sorted(by: >)
        let tool = versions.first.map { "/usr/lib/postgresql/\($0)/bin/pg_ctl" } ?? "pg_ctl"
        let command = ([tool, "-D", directory + "/data"] + arguments).map { "'" + $0 + "'" }.joined(separator: " ")
        let run = getuid() == 0 ? "runuser -u postgres -- \(command)" : command
        let result = try runChild("/bin/sh", ["-c", run + " > '\(directory)/pg_ctl.out' 2>&1"], seconds: 90)
        guard result.status == 0 else {
            throw Failure("pg_ctl \(arguments.joined(separator: " ")): \((try? String(contentsOfFile: directory + "/pg_ctl.out", encoding: .utf8)) ?? "")")
        }
    }

    /// The database restored from a copy taken before the log's last records (a backup
    /// restored, a standby promoted): the log holds records of another history. It is
    /// discarded (it reaches past the server's WAL end), and rows written after the
    /// restore reach a live client; before, every one of them was skipped as already
    /// kept, and the slot confirmed past them.
    @Test func aLogOfAHistoryTheDatabaseNoLongerHasIsDiscarded() async throws {
        let own = try await Self.ownCluster()
        defer { own.stop() }
        let (cluster, url) = (own.directory, own.url)
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY, v text)")
        let windowDir = cluster + "/window"
        let serve = { () throws -> RunningProcess in
            try Self.serve(slot: "restored", url: url, ["--window-dir", windowDir])
        }
        var server = try serve()
        var port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g, 'first' FROM generate_series(1, 100) g")
        try await eventually("100 records kept", within: 60) { (try await Self.status(port)["window_records"] as? Int) == 100 }
        #expect(try await server.stop(SIGTERM) == 0)
        // The copy: taken now, with the slot where serve left it.
        try await onThread("a copy of the cluster") {
            try Self.pgCtl(cluster, ["-m", "fast", "-w", "stop"])
            let copied = try runChild("cp", ["-a", cluster + "/data", cluster + "/copy"], seconds: 120)
            guard copied.status == 0 else { throw Failure("cp: \(copied.stderr)") }
            try Self.pgCtl(cluster, ["-l", cluster + "/server.log", "-w", "start"])
        }
        // The history the copy will not have: 300 more rows, kept by the log.
        server = try serve()
        port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g, 'lost' FROM generate_series(101, 400) g")
        try await eventually("400 records kept", within: 60) { (try await Self.status(port)["window_records"] as? Int) == 400 }
        #expect(try await server.stop(SIGTERM) == 0)
        try await onThread("the copy restored") {
            try Self.pgCtl(cluster, ["-m", "fast", "-w", "stop"])
            try FileManager.default.removeItem(atPath: cluster + "/data")
            try FileManager.default.moveItem(atPath: cluster + "/copy", toPath: cluster + "/data")
            try Self.pgCtl(cluster, ["-l", cluster + "/server.log", "-w", "start"])
        }
        let restoredServer = try serve()
        port = try await restoredServer.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        #expect(restoredServer.output.contains("discarded the window log"), "\(restoredServer.output.suffix(1500))")
        let client = ResumingClient()
        client.move(to: port)
        client.run()
        try await client.waitUntilSubscribed()
        try await LiveDatabase.psql(url, (101...120).map { "INSERT INTO orders VALUES (\($0), 'after the restore');" }.joined(separator: "\n"))
        try await client.received.wait(for: 20) { restoredServer.output.suffix(1000).description }
        try await client.finish()
        // What the copy's slot resent of its own history (rows 1 to 100) reaches the client
        // too when it comes after the client subscribed (a loaded machine); never the 300
        // the copy does not have, and the 20 each once.
        let ids = client.received.ids
        #expect(ids.filter { $0 > 100 } == Array(101...120) && ids.allSatisfy { $0 <= 120 } && Set(ids).count == ids.count, "\(client.received.summary)")
        let status = try await Self.status(port)
        // The 20, and what the slot of the copy resent of its own history (the first
        // 100 rows at most); never the 300 the copy does not have.
        let held = status["window_records"] as? Int ?? -1
        #expect(held >= 20 && held <= 120, "the window holds the old history's rows: \(status)")
        #expect(try await restoredServer.stop(SIGTERM) == 0)
    }

    /// `kill -9` while a 30,000-row transaction is being kept (with the default
    /// `--window-fsync always`, which the suite otherwise turns off), and a torn entry at the
    /// log's end (what a write cut short leaves): the next `serve` cuts it, restores
    /// every whole record, and the slot (which confirmed nothing the log had not kept)
    /// resends the rest. A client that was live and one that resumes from before the
    /// transaction each get every row exactly once.
    @Test func aKillMidTransactionCutsTheTornTailAndLosesNothing() async throws {
        let (url, slot) = try await Self.prepare("torn", "CREATE TABLE orders (id int PRIMARY KEY, pad text)")
        defer { _ = try? LiveDatabase.psqlBlocking(url, "SELECT pg_drop_replication_slot('\(slot)')", seconds: 30) }
        let first = try Self.serve(slot: slot, url: url, ["--window-fsync", "always"])
        let port = try await first.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        let directory = try await first.waitFor(#"resume window kept in (\S+) "#)

        try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (0, 'before')")
        let start = Mutex<String?>(nil)
        try await eventually("the first record", within: 60, seen: { first.output.suffix(500).description }) {
            let status = try await Self.status(port)
            start.withLock { $0 = status["last_cursor"] as? String }
            return (status["window_records"] as? Int) == 1
        }
        let origin = try #require(start.withLock { $0 })
        let live = ResumingClient()
        live.received.add(cursor: origin, id: 0)
        live.move(to: port)
        live.run()
        try await live.waitUntilSubscribed()

        let total = 30_000
        let writer = Task { try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g, repeat('p', 400) FROM generate_series(1, \(total)) g", seconds: 180) }
        let capturedAtKill = Mutex(0)
        try await eventually("part of the transaction captured", within: 120, interval: .milliseconds(20), seen: { first.output.suffix(500).description }) {
            let captured = (try await Self.status(port)["records_captured"] as? Int) ?? 0
            capturedAtKill.withLock { $0 = captured }
            return captured > 1
        }
        _ = try await first.stop(SIGKILL)
        try await within(180, "the writer") { try await writer.value }

        // A write cut short: an entry's length and checksum, and a few bytes of it.
        let segments = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".seg") }.sorted()
        let newest = try #require(segments.last, "no segment in \(directory)")
        let handle = try #require(FileHandle(forWritingAtPath: directory + "/" + newest))
        handle.seekToEndOfFile()
        handle.write(Data([0xE8, 0x03, 0, 0, 0x12, 0x34, 0x56, 0x78, 2, 1, 2, 3]))
        try handle.close()

        let second = try Self.serve(slot: slot, url: url, ["--window-fsync", "always"])
        let secondPort = try await second.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        #expect(second.output.contains("cut a torn tail of 12 bytes"), "\(second.output.suffix(1500))")
        let restored = (try await Self.status(secondPort)["window_records"] as? Int) ?? -1
        live.move(to: secondPort)
        try await live.received.wait(for: total + 1, seconds: 120) { second.output.suffix(800).description }
        try await LiveDatabase.psql(url, (total + 1...total + 10).map { "INSERT INTO orders VALUES (\($0), 'after');" }.joined(separator: "\n"))
        try await live.received.wait(for: total + 11, seconds: 60) { second.output.suffix(800).description }

        let late = ResumingClient()
        late.received.add(cursor: origin, id: 0)
        late.move(to: secondPort)
        late.run()
        try await late.received.wait(for: total + 11, seconds: 120) { second.output.suffix(800).description }
        try await live.finish()
        try await late.finish()
        print("rowcast-test: killed with \(capturedAtKill.withLock { $0 }) records captured; \(restored) restored from the log")
        for (name, client) in [("live", live), ("late", late)] {
            let ids = client.received.ids
            #expect(client.received.errorFrames.isEmpty, "\(name): \(client.received.errorFrames)")
            #expect(ids == Array(0...total + 10), "\(name): \(ids.count) rows, \(ids.count - Set(ids).count) repeated, missing \(Set(0...total + 10).subtracting(ids).sorted().prefix(10))")
        }
        #expect(try await second.stop(SIGTERM) == 0)
    }
}
