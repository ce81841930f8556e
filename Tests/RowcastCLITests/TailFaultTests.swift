import Foundation
import RowcastTestSupport
import Testing

/// `tail` and replication set-up under faults: a full disk, a closed pipe, an
/// `--endpos` with WAL after it, and no table named (issue: keep every promise).
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct TailFaultTests {
    static func confirmed(_ url: String, slot: String) async throws -> UInt64 {
        ReplicationTailTests.lsnValue(try await LiveDatabase.psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")) ?? 0
    }

    /// A file on a nearly full file system: a 256 KB tmpfs when this runs as root,
    /// else /dev/full (every write fails). The closure gets its path.
    static func withFullDisk<T>(_ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-full-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        guard getuid() == 0, (try? runChild("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", directory.path], seconds: 30))?.status == 0 else {
            return try body("/dev/full")
        }
        defer { _ = try? runChild("umount", [directory.path], seconds: 30) }
        return try body(directory.appendingPathComponent("out.ndjson").path)
    }

    @Test func aFullDiskEndsTailWithOneLineAndConfirmsOnlyWhatWasWritten() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = OperationsTests.slotName()
        try await LiveDatabase.psql(url, "CREATE TABLE full_disk (id int PRIMARY KEY, pad text)")
        #expect(try await Rowcast.run(["setup", "--mode", "replication", "--table", "full_disk", "--slot", slot, "--db", url]).status == 0)
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--force", "--db", url]) }
        // ~1 MB of NDJSON in 40 transactions: more than the disk holds.
        for batch in 0..<40 {
            try await LiveDatabase.psql(url, "INSERT INTO full_disk SELECT g, repeat('p', 100) FROM generate_series(\(batch * 100 + 1), \(batch * 100 + 100)) g")
        }
        let end = try await LiveDatabase.psql(url, "SELECT pg_current_wal_lsn()")
        let arguments = ["tail", "--mode", "replication", "--slot", slot, "--endpos", end, "--db", url]

        let (status, stderr, written) = try await onThread("tail to fail on a full disk") {
            try Self.withFullDisk { path -> (Int32, String, String) in
                // Through the shell, so that its stdout is the file on the full disk.
                let result = try runChild("/bin/sh", ["-c", "exec \"$0\" \"$@\" > \"$OUT\"", Rowcast.binary.path] + arguments, environment: ["OUT": path, "PATH": "/usr/bin:/bin"], seconds: 90)
                let written = path == "/dev/full" ? "" : ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
                return (result.status, result.stderr, written)
            }
        }
        #expect(status == 1)
        let lines = stderr.split(separator: "\n").filter { !$0.isEmpty }
        #expect(lines == ["rowcast: cannot write to stdout: No space left on device"], "stderr: \(stderr.prefix(500))")

        // Only whole lines count as printed; the slot must resend everything else.
        let printed = Set(written.split(separator: "\n", omittingEmptySubsequences: true).compactMap { ReplicationTailTests.parse(String($0))?.id })
        #expect(printed.count < 4_000)
        let second = try await Rowcast.run(arguments)
        #expect(second.status == 0, "stderr: \(second.stderr.prefix(500))")
        let reprinted = Set(second.stdout.split(separator: "\n").compactMap { ReplicationTailTests.parse(String($0))?.id })
        let missing = Set(1...4_000).subtracting(printed).subtracting(reprinted)
        #expect(missing.isEmpty, "\(missing.count) rows neither printed by the first run nor by the second, e.g. \(missing.sorted().prefix(5))")
    }

    @Test func aClosedPipeEndsTailWithExit1AndNothingUnreadIsConfirmed() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = OperationsTests.slotName()
        try await LiveDatabase.psql(url, "CREATE TABLE closed_pipe (id int PRIMARY KEY)")
        #expect(try await Rowcast.run(["setup", "--mode", "replication", "--table", "closed_pipe", "--slot", slot, "--db", url]).status == 0)
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--force", "--db", url]) }
        try await LiveDatabase.psql(url, "INSERT INTO closed_pipe SELECT generate_series(1, 10)")
        let before = try await Self.confirmed(url, slot: slot)

        let process = Process()
        process.executableURL = Rowcast.binary
        process.arguments = ["tail", "--mode", "replication", "--slot", slot, "--db", url]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.runWithNoSignalBlocked()
        // The reader goes away before reading anything; the next rows cannot be written.
        try out.fileHandleForReading.close()
        try await LiveDatabase.psql(url, "INSERT INTO closed_pipe SELECT generate_series(11, 20)")
        let errors = err.fileHandleForReading
        let stderr = try await onThread("tail's stderr after its stdout closed", within: 60) { String(decoding: errors.readDataToEndOfFile(), as: UTF8.self) }
        #expect(try await process.exit(within: 60) == 1)
        #expect(stderr.split(separator: "\n") == ["rowcast: cannot write to stdout: Broken pipe"], "stderr: \(stderr.prefix(500))")
        #expect(try await Self.confirmed(url, slot: slot) <= before, "nothing that was not written is confirmed")
    }

    @Test func endposPrintsNothingCommittedAfterItEvenWithOtherWALBetween() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = OperationsTests.slotName()
        try await LiveDatabase.psql(url, "CREATE TABLE before_end (id int PRIMARY KEY)")
        #expect(try await Rowcast.run(["setup", "--mode", "replication", "--table", "before_end", "--slot", slot, "--db", url]).status == 0)
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--force", "--db", url]) }
        try await LiveDatabase.psql(url, "INSERT INTO before_end SELECT generate_series(1, 100)")
        // WAL that publishes nothing, so the last commit ends before the end position.
        try await LiveDatabase.psql(url, "CREATE TABLE unpublished (x int); INSERT INTO unpublished SELECT generate_series(1, 1000)")
        let end = try await LiveDatabase.psql(url, "SELECT pg_current_wal_lsn()")
        for id in 101...150 { try await LiveDatabase.psql(url, "INSERT INTO before_end VALUES (\(id))") }

        let tail = try await Rowcast.run(["tail", "--mode", "replication", "--slot", slot, "--endpos", end, "--db", url])
        #expect(tail.status == 0, "stderr: \(tail.stderr.prefix(500))")
        let ids = tail.stdout.split(separator: "\n").compactMap { ReplicationTailTests.parse(String($0))?.id }
        let exact = ids == Array(1...100)
        #expect(exact, "printed \(ids.count) rows (1...100 expected), the last \(ids.last ?? 0)")
        // The next run starts with what the first left out.
        let rest = try await Rowcast.run(["tail", "--mode", "replication", "--slot", slot, "--endpos", try await LiveDatabase.psql(url, "SELECT pg_current_wal_lsn()"), "--db", url])
        let restIDs = rest.stdout.split(separator: "\n").compactMap { ReplicationTailTests.parse(String($0))?.id }
        let restExact = restIDs == Array(101...150)
        #expect(restExact, "the next run printed \(restIDs.count) rows (101...150 expected), the first \(restIDs.first ?? 0)")
    }

    @Test func withNoTableAndNoPublicationNothingThatBreaksWritesIsCreated() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let slot = OperationsTests.slotName()
        try await LiveDatabase.psql(url, "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE keyless (v int); INSERT INTO keyless VALUES (1)")
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", slot, "--force", "--db", url]) }
        let publications = "SELECT count(*) FROM pg_publication"

        let plain = try await Rowcast.run(["tail", "--mode", "replication", "--slot", slot, "--endpos", "0/1", "--db", url])
        #expect(plain.status == 1)
        #expect(plain.stderr.contains("--table") && plain.stderr.contains("--all-tables"), "stderr: \(plain.stderr.prefix(500))")
        #expect(try await LiveDatabase.psql(url, publications) == "0")

        let all = try await Rowcast.run(["tail", "--mode", "replication", "--slot", slot, "--all-tables", "--endpos", "0/1", "--db", url])
        #expect(all.status == 1)
        #expect(all.stderr.contains("public.keyless") && !all.stderr.contains("public.keyed") && all.stderr.contains("--force-all-tables"), "stderr: \(all.stderr.prefix(500))")
        #expect(try await LiveDatabase.psql(url, publications) == "0")
        // The application's writes still work.
        try await LiveDatabase.psql(url, "UPDATE keyless SET v = 2")

        let forced = try await Rowcast.run(["tail", "--mode", "replication", "--slot", slot, "--force-all-tables", "--endpos", "0/1", "--db", url])
        #expect(forced.status == 0, "stderr: \(forced.stderr.prefix(500))")
        #expect(try await LiveDatabase.psql(url, "SELECT puballtables FROM pg_publication") == "t")
        let doctor = try await Rowcast.run(["doctor", "--mode", "replication", "--db", url])
        #expect(doctor.status == 1)
        #expect(doctor.stdout.contains("keyless") && doctor.stdout.contains("FOR ALL TABLES"), "doctor: \(doctor.stdout.prefix(800))")
    }
}
