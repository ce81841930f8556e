import Foundation

/// A PostgreSQL cluster in a temporary folder, for the demo and the test suite.
///
/// Started with trust authentication on loopback and a free port, with
/// `wal_level=logical` unless asked otherwise. As root it runs the server as the
/// `postgres` user, since `initdb` refuses to run as root.
package struct ThrowawayCluster: Sendable {
    /// The folder holding the data directory, the socket and the server log.
    package let directory: URL
    /// The TCP port on 127.0.0.1.
    package let port: Int
    /// The folder with `initdb`, `pg_ctl` and friends.
    package let binaries: URL

    /// A libpq URI for the cluster's `postgres` database as superuser `postgres`.
    package var url: String { "postgresql://postgres@127.0.0.1:\(port)/postgres" }

    private var dataDirectory: URL { directory.appendingPathComponent("data") }
    private var logFile: URL { directory.appendingPathComponent("server.log") }

    /// Creates and starts a cluster in a new temporary folder.
    /// - Parameter walLevel: `logical` for both capture modes; `replica` to test what fails without it.
    /// - Parameter settings: more `name = value` lines for its configuration.
    package static func start(walLevel: String = "logical", settings: [String] = []) throws -> ThrowawayCluster {
        let binaries = try findBinaries()
        let folder = try makeTemporaryFolder()
        let cluster = ThrowawayCluster(directory: folder, port: try freePort(), binaries: binaries)
        do {
            try cluster.initialise(walLevel: walLevel, extra: settings)
            try cluster.runTool("pg_ctl", ["-D", cluster.dataDirectory.path, "-l", cluster.logFile.path, "-w", "-t", "60", "start"])
        } catch {
            cluster.destroy()
            throw error
        }
        return cluster
    }

    /// Reattaches to a cluster started earlier in `directory` (for `stop` from another process).
    package static func existing(at directory: URL) throws -> ThrowawayCluster {
        let options = try String(contentsOf: directory.appendingPathComponent("data/postgresql.auto.conf"), encoding: .utf8)
        let port = options.split(separator: "\n").compactMap { line -> Int? in
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, parts[0] == "port" else { return nil }
            return Int(parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "'")))
        }.last
        guard let port else { throw ClusterError.failed("no port in \(directory.path)") }
        return ThrowawayCluster(directory: directory, port: port, binaries: try findBinaries())
    }

    /// Stops the server (fast shutdown) and deletes the folder.
    package func destroy() {
        try? runTool("pg_ctl", ["-D", dataDirectory.path, "-m", "immediate", "-w", "-t", "30", "stop"])
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: - Internals

    private func initialise(walLevel: String, extra: [String]) throws {
        try runTool("initdb", ["-D", dataDirectory.path, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        let settings = """
            listen_addresses = '127.0.0.1'
            port = \(port)
            unix_socket_directories = '\(directory.path)'
            wal_level = \(walLevel)
            max_replication_slots = 64
            max_wal_senders = 64
            max_connections = 200
            fsync = off
            full_page_writes = off
            """ + extra.map { "\n" + $0 }.joined()
        // postgresql.auto.conf is read last, and `existing(at:)` reads the port back from it.
        let autoConf = dataDirectory.appendingPathComponent("postgresql.auto.conf")
        let handle = try FileHandle(forWritingTo: autoConf)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(("\n" + settings + "\n").utf8))
        try handle.close()
    }

    /// Runs a PostgreSQL tool, as `postgres` when we are root. Output goes to a file,
    /// not a pipe: the server that `pg_ctl start` leaves behind would hold a pipe open.
    private func runTool(_ name: String, _ arguments: [String]) throws {
        let tool = binaries.appendingPathComponent(name).path
        let command = geteuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", tool] + arguments : [tool] + arguments
        let outputFile = directory.appendingPathComponent("\(name).out")
        let status = try Self.spawnAndWait(command, outputPath: outputFile.path)
        guard status == 0 else {
            let text = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
            let tail = text.split(separator: "\n").suffix(3).joined(separator: "; ")
            throw ClusterError.failed("\(name) exited \(status): \(tail)")
        }
    }

    /// posix_spawn and waitpid: Foundation's Process waits for every holder of the
    /// child's output to close, and the server that `pg_ctl start` leaves never does.
    private static func spawnAndWait(_ command: [String], outputPath: String) throws -> Int32 {
        // The server outlives this call: it must not inherit any descriptor of ours
        // (a pipe to whoever runs rowcast would then never see end-of-file).
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let descriptor = Int32(entry), descriptor > 2 {
                _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
            }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let arguments = command.map { strdup($0) } + [nil]
        defer { arguments.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, nil, arguments, environ)
        guard spawned == 0 else {
            throw ClusterError.failed("cannot run \(command[0]): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS, which Swift does not import.
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    private static func makeTemporaryFolder() throws -> URL {
        let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array((base + "/rowcast-pg-XXXXXX").utf8CString)
        let path: String? = template.withUnsafeMutableBufferPointer { buffer in
            guard let start = buffer.baseAddress, let made = mkdtemp(start) else { return nil }
            return String(cString: made)
        }
        guard let path else {
            throw ClusterError.failed("cannot create a temporary folder in \(base)")
        }
        let folder = URL(fileURLWithPath: path)
        // mkdtemp makes it 0700; the server runs as `postgres` when we are root.
        chmod(folder.path, 0o755)
        if geteuid() == 0, let postgres = getpwnam("postgres") {
            chown(folder.path, postgres.pointee.pw_uid, postgres.pointee.pw_gid)
        }
        return folder
    }

    /// Finds PostgreSQL's server binaries: `ROWCAST_PG_BINDIR`, the newest
    /// `/usr/lib/postgresql/*/bin`, `initdb` on PATH, or `pg_config --bindir`.
    static func findBinaries() throws -> URL {
        let environment = ProcessInfo.processInfo.environment
        let fileManager = FileManager.default
        var candidates: [String] = []
        if let explicit = environment["ROWCAST_PG_BINDIR"] { candidates.append(explicit) }
        let versions = (try? fileManager.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        candidates += versions.compactMap(Int.init).sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
        candidates += (environment["PATH"] ?? "").split(separator: ":").map(String.init)
        if let bindir = try? runCapturing("/bin/sh", ["-c", "pg_config --bindir 2>/dev/null"]) {
            candidates.append(bindir.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        for candidate in candidates where fileManager.isExecutableFile(atPath: candidate + "/initdb") {
            return URL(fileURLWithPath: candidate)
        }
        throw ClusterError.failed("PostgreSQL server binaries (initdb, pg_ctl) not found (fix: apt-get install postgresql, or set ROWCAST_PG_BINDIR)")
    }

    private static func runCapturing(_ tool: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Asks the kernel for a free port on loopback.
    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClusterError.failed("cannot open a socket to find a free port") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(fd, socketAddress, length) == 0 && getsockname(fd, socketAddress, &length) == 0
            }
        }
        guard bound else { throw ClusterError.failed("cannot bind a socket to find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Why a throwaway cluster could not be made.
package enum ClusterError: Error, CustomStringConvertible {
    case failed(String)

    package var description: String {
        switch self {
        case .failed(let why): "throwaway PostgreSQL: \(why)"
        }
    }
}
