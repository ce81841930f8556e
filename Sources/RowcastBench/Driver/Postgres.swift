import Foundation

/// The programs a run needs, found before anything starts so that a missing one is a
/// one-line error up front.
struct Tools: Sendable {
    let rowcast: String
    /// This executable, for `baseline` and `load`.
    let bench: String
    let psql: String
    let pgRecvlogical: String
    let pgbench: String
    /// GNU time, for children's peak RSS (see `Bench.timed`).
    let time: String

    /// `rowcast` defaults to the binary beside this one (the same build); PostgreSQL's
    /// client programs come from `ROWCAST_PG_BINDIR`, else `pg_config --bindir` (the
    /// real binaries, not Debian's wrapper scripts, which would add their start-up to
    /// every timing), else PATH.
    static func find(rowcast: String?, in work: WorkFolder) throws -> Tools {
        guard let me = Bundle.main.executableURL?.resolvingSymlinksInPath() else { throw BenchFailure("cannot tell where rowcast-bench is") }
        let rowcast = rowcast ?? me.deletingLastPathComponent().appendingPathComponent("rowcast").path
        guard FileManager.default.isExecutableFile(atPath: rowcast) else {
            throw BenchFailure("no rowcast binary at \(rowcast) (fix: swift build -c release, or pass --rowcast)")
        }
        var folder = ProcessInfo.processInfo.environment["ROWCAST_PG_BINDIR"]
        if folder == nil, let config = try? Child.start("pg_config", "pg_config", ["--bindir"], in: work), (try? config.wait(within: 30))?.status == 0 {
            folder = config.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func tool(_ name: String, fix: String = "scripts/install-deps.sh, or set ROWCAST_PG_BINDIR") throws -> String {
            if let folder, FileManager.default.isExecutableFile(atPath: folder + "/" + name) { return folder + "/" + name }
            let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { $0 + "/" + name }
            guard let found = path.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                throw BenchFailure("\(name) not found (fix: \(fix))")
            }
            return found
        }
        return Tools(
            rowcast: rowcast, bench: me.path, psql: try tool("psql"), pgRecvlogical: try tool("pg_recvlogical"), pgbench: try tool("pgbench"),
            time: try tool("time", fix: "apt-get install time")
        )
    }
}

/// A throwaway PostgreSQL cluster, started by `rowcast dev-cluster start` in a folder
/// under the run's work folder, and stopped by `rowcast dev-cluster stop`.
struct Cluster: Sendable {
    /// The cluster's folder (its data directory is `data` inside).
    let folder: String
    let url: String

    /// Starts one with `wal_level=logical` and room for the bench's WAL: no checkpoint
    /// in the middle of a measurement.
    static func start(tools: Tools, in work: WorkFolder) throws -> Cluster {
        let parent = work.path("clusters")
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let start = try Child.start(
            "rowcast dev-cluster start", tools.rowcast,
            ["dev-cluster", "start", "--wal-level", "logical", "--setting", "max_wal_size=8GB", "--setting", "checkpoint_timeout=30min"],
            environment: ["TMPDIR": parent], in: work
        )
        try start.succeed(within: 120)
        let words = start.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 1).map(String.init)
        guard words.count == 2 else { throw BenchFailure("rowcast dev-cluster start printed no folder and URL\(quoted(start.lastWords))") }
        return Cluster(folder: words[0], url: words[1])
    }

    /// The postmaster's pid (the first line of `postmaster.pid`).
    func postmaster() throws -> pid_t {
        let text = (try? String(contentsOfFile: folder + "/data/postmaster.pid", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first, let pid = pid_t(line) else { throw BenchFailure("cannot read the postmaster's pid in \(folder)") }
        return pid
    }

    /// Stops every cluster under `work` (cleanup: a start that was interrupted included).
    static func stopEvery(in work: WorkFolder, rowcast: String) {
        let parent = work.path("clusters")
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] {
            var status: Int32 = 0
            var pid: pid_t = 0
            let words: [String] = [rowcast, "dev-cluster", "stop", parent + "/" + entry]
            let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            for descriptor: Int32 in [0, 1, 2] {
                posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", descriptor == 0 ? O_RDONLY : O_WRONLY, 0)
            }
            guard posix_spawn(&pid, rowcast, &actions, nil, argv, environ) == 0 else { continue }
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        }
    }
}

/// The cluster's `postgres` database through psql: one psql per query, as a user would
/// type it, every one with a deadline.
struct Database: Sendable {
    let url: String
    let tools: Tools
    let work: WorkFolder

    /// Runs `sql` (one statement, or several in one transaction) and returns what it
    /// printed, unaligned and without headers, trimmed.
    @discardableResult
    func query(_ sql: String, within seconds: Double = 600) throws -> String {
        try psql(["-c", sql], what: sql, within: seconds)
    }

    /// Runs a file of statements, each in a transaction of its own.
    func script(_ sql: String, within seconds: Double = 1800) throws {
        let path = try work.write("script.sql", sql)
        try psql(["-f", path], what: sql, within: seconds)
    }

    /// A value the first column of the first row holds.
    func number(_ sql: String) throws -> Double {
        let text = try query(sql)
        guard let value = Double(text) else { throw BenchFailure("expected a number from `\(sql.prefix(80))`, got \(text.prefix(80))") }
        return value
    }

    @discardableResult
    private func psql(_ arguments: [String], what sql: String, within seconds: Double) throws -> String {
        let child = try Child.start("psql", tools.psql, ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url] + arguments, in: work)
        let exit = try child.wait(within: seconds)
        guard exit.status == 0 else {
            let statement = sql.split(whereSeparator: \.isNewline).first.map { String($0.prefix(80)) } ?? ""
            throw BenchFailure("psql failed on `\(statement)`\(quoted(child.lastWords))")
        }
        return child.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
