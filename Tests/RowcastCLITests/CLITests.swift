import Foundation
import RowcastTestSupport
import Synchronization
import Testing

/// The `rowcast` binary as users run it: exit codes, one-line errors, NDJSON on stdout.
@Suite struct CLITests {
    @Test(arguments: [
        ["--db", "postgresql://postgres@127.0.0.1:1/nothing"],
        ["--db", "this is not a conninfo"],
        ["--db", "host=/nonexistent/socket/dir"],
    ])
    func aBadConnectionStringExits3WithOneLine(_ arguments: [String]) async throws {
        let result = try await Rowcast.run(["tail", "--mode", "trigger"] + arguments)
        #expect(result.status == 3)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(result.stderr)")
        #expect(result.stderr.hasPrefix("rowcast: cannot connect to PostgreSQL: "))
        #expect(result.stderr.contains("fix: check --db, DATABASE_URL or the PG* variables"))
    }

    @Test func databaseURLIsUsedWhenThereIsNoFlag() async throws {
        let result = try await Rowcast.run(["setup", "--mode", "trigger", "--table", "t"], environment: ["DATABASE_URL": "postgresql://postgres@127.0.0.1:1/viaenv"])
        #expect(result.status == 3)
        #expect(result.stderr.contains("127.0.0.1"))
    }

    @Test(arguments: [
        ["tail", "--mode", "sideways"],
        ["tail", "--no-such-flag"],
        ["setup", "--mode", "trigger"],
        ["setup", "--mode", "trigger", "--table", "a.b.c"],
        ["frobnicate"],
    ])
    func badUsageExits2(_ arguments: [String]) async throws {
        let result = try await Rowcast.run(arguments)
        #expect(result.status == 2, "stderr: \(result.stderr)")
        #expect(!result.stderr.isEmpty)
    }

    @Test(arguments: [
        (["status"], "rowcast: unknown command \"status\" (fix: did you mean rowcast slot status? commands are serve, tail, setup, teardown, slot, doctor, demo; rowcast --help)"),
        (["frobnicate"], "rowcast: unknown command \"frobnicate\" (fix: commands are serve, tail, setup, teardown, slot, doctor, demo; rowcast --help)"),
        (["tail", "--no-such-flag"], "rowcast: unknown option '--no-such-flag' (fix: rowcast tail --help)"),
        (["slot", "status", "--watch"], "rowcast: missing value for '--watch <seconds>' (fix: rowcast slot status --help)"),
    ])
    func badUsageIsOneLineWithTheFix(_ arguments: [String], _ expected: String) async throws {
        let result = try await Rowcast.run(arguments)
        #expect(result.status == 2)
        #expect(result.stderr == expected + "\n")
    }

    @Test(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"))
    func aPortInUseIsOneLineWithTheFix() async throws {
        // Hold a port, then ask serve for it.
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, length) == 0 && listen(holder, 1) == 0 && getsockname(holder, $0, &length) == 0 }
        }
        #expect(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let result = try await Rowcast.run(["serve", "--mode", "trigger", "--channel", "nothing", "--port", String(port), "--db", LiveDatabase.url ?? ""])
        #expect(result.status == 1)
        #expect(result.stderr == "rowcast: port \(port) on 127.0.0.1 is already in use (fix: choose another --port, or stop what is using it)\n", "stderr: \(result.stderr.suffix(300))")
    }

    @Test func servingBeyondLoopbackWithoutAuthIsRefused() async throws {
        let result = try await Rowcast.run(["serve", "--mode", "trigger", "--host", "0.0.0.0", "--db", "postgresql://127.0.0.1:1/x"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("refusing to serve unauthenticated clients on 0.0.0.0"))
        #expect(result.stderr.contains("--insecure-no-auth"))
        // With the explicit flag it goes on (and here fails to connect: exit 3).
        let allowed = try await Rowcast.run(["serve", "--mode", "trigger", "--host", "0.0.0.0", "--insecure-no-auth", "--db", "postgresql://127.0.0.1:1/x"])
        #expect(allowed.status == 3)
        // So it does with authentication, from the environment as from the flags.
        let withToken = try await Rowcast.run(
            ["serve", "--mode", "trigger", "--host", "0.0.0.0", "--db", "postgresql://127.0.0.1:1/x"], environment: ["ROWCAST_TOKEN": "s3cret"]
        )
        #expect(withToken.status == 3, "stderr: \(withToken.stderr)")
        let shortSecret = try await Rowcast.run(["serve", "--mode", "trigger", "--jwt-secret", "short", "--db", "postgresql://127.0.0.1:1/x"])
        #expect(shortSecret.status == 2)
        #expect(shortSecret.stderr.contains("--jwt-secret needs at least 32 bytes"))
    }

    /// `--host` is loopback only when it is one (parsed, not by prefix), and an
    /// `--allow-host` that is no host is refused with the fix, not silently unmatched.
    @Test func hostsOnTheCommandLineAreParsed() async throws {
        let named = try await Rowcast.run(["serve", "--mode", "trigger", "--host", "127.rebind.example", "--db", "postgresql://127.0.0.1:1/x"])
        #expect(named.status == 2)
        #expect(named.stderr.contains("refusing to serve unauthenticated clients on 127.rebind.example"), "\(named.stderr)")
        for bad in ["*", "http://proxy.example", "proxy example"] {
            let refused = try await Rowcast.run(["serve", "--mode", "trigger", "--allow-host", bad, "--db", "postgresql://127.0.0.1:1/x"])
            #expect(refused.status == 2)
            #expect(refused.stderr == "rowcast: --allow-host \(bad) is not a host name or address (fix: a name such as rowcast.example.com, or an address; no scheme, path or wildcard)\n", "\(refused.stderr)")
        }
        // A loopback address, a bare IPv6 one, and a name with a port go on (to fail connecting: exit 3).
        for (flag, value) in [("--host", "127.0.0.2"), ("--host", "::1"), ("--allow-host", "proxy.example:8443")] {
            #expect(try await Rowcast.run(["serve", "--mode", "trigger", flag, value, "--db", "postgresql://127.0.0.1:1/x"]).status == 3, "\(flag) \(value)")
        }
    }

    @Test func helpAndVersionExit0() async throws {
        let help = try await Rowcast.run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("tail"))
        let version = try await Rowcast.run(["--version"])
        #expect(version.status == 0)
        #expect(!version.stdout.isEmpty)
    }
}

@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct CLIDatabaseTests {
    @Test func setupAndTeardownAreIdempotentAndUnknownTablesFailClearly() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY, note text); CREATE SCHEMA audit; CREATE TABLE audit.events (id int)")

        let unknown = try await Rowcast.run(["setup", "--mode", "trigger", "--db", url, "--table", "orders", "--table", "nope"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr == "rowcast: table public.nope does not exist (fix: create it first, or name it as schema.table)\n")
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'rowcast'") == "0")

        for _ in 0..<2 {
            let setup = try await Rowcast.run(["setup", "--mode", "trigger", "--db", url, "--table", "orders", "--table", "audit.events"])
            #expect(setup.status == 0, "stderr: \(setup.stderr)")
        }
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rowcast_capture%'") == "8")
        for _ in 0..<2 {
            let teardown = try await Rowcast.run(["teardown", "--mode", "trigger", "--db", url])
            #expect(teardown.status == 0, "stderr: \(teardown.stderr)")
        }
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rowcast_capture%'") == "0")
        #expect(try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'rowcast'") == "0")
    }

    @Test func tailPrintsNDJSONAndEndsCleanlyOnSIGINT() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE realtime (title varchar(128))")
        #expect(try await Rowcast.run(["setup", "--mode", "trigger", "--db", url, "--table", "realtime"]).status == 0)

        let tail = Process()
        tail.executableURL = Rowcast.binary
        tail.arguments = ["tail", "--mode", "trigger", "--db", url, "--table", "realtime", "--channel", "addedrecord"]
        let output = Pipe()
        tail.standardOutput = output
        tail.standardError = FileHandle.nullDevice
        try tail.runWithNoSignalBlocked()
        // Changes made before the LISTEN are not rowcast's to see; wait until it listens.
        for _ in 0..<100 where try await LiveDatabase.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN \"addedrecord\"'") == "0" {
            try await pause(for: .milliseconds(100))
        }
        try await LiveDatabase.psql(url, "INSERT INTO realtime VALUES ('hello'); NOTIFY addedrecord, 'plain'")
        // Read on a thread; past the deadline tail is killed, so the read ends too.
        let pid = tail.processIdentifier
        let reader = output.fileHandleForReading
        let read = Mutex("")
        let lines: [String]
        do {
            lines = try await onThread("two NDJSON lines from tail", within: 60, seen: { read.withLock { $0 } }) {
                var lines: [String] = []
                while lines.count < 2 {
                    let chunk = reader.availableData
                    if chunk.isEmpty { break }
                    let text = read.withLock { $0 += String(decoding: chunk, as: UTF8.self); return $0 }
                    lines = text.split(separator: "\n").map(String.init)
                }
                return lines
            }
        } catch {
            kill(pid, SIGKILL)
            throw error
        }
        kill(tail.processIdentifier, SIGINT)
        #expect(try await tail.exit(within: 60) == 0)
        #expect(lines.count == 2)
        let insert = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        #expect(insert?["op"] as? String == "insert")
        #expect(insert?["table"] as? String == "realtime")
        #expect((insert?["row"] as? [String: Any])?["title"] as? String == "hello")
        let notify = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any]
        #expect(notify?["op"] as? String == "notify")
        #expect(notify?["payload"] as? String == "plain")
    }
}

/// Every flag also reads `ROWCAST_<FLAG>` (SPEC section 3): the list of flags that do
/// is held to each command's own options, as the argument parser describes them.
@Suite struct EnvironmentFlagTests {
    static let commands = ["serve", "tail", "setup", "teardown", "slot status", "slot create", "slot drop", "doctor", "demo"]

    @Test func everyFlagOfEveryCommandReadsTheEnvironment() async throws {
        let listed = Set(try await Rowcast.run(["dev-env"]).stdout.split(separator: "\n").map(String.init))
        var options: Set<String> = []
        for command in Self.commands {
            let dump = try await Rowcast.run(command.split(separator: " ").map(String.init) + ["--experimental-dump-help"])
            let tool = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any], "\(command): \(dump.stderr)")
            let arguments = (tool["command"] as? [String: Any])?["arguments"] as? [[String: Any]] ?? []
            for argument in arguments where ["option", "flag"].contains(argument["kind"] as? String) {
                let long = (argument["names"] as? [[String: Any]] ?? []).first { $0["kind"] as? String == "long" }?["name"] as? String
                if let long, !["help", "version"].contains(long) { options.insert("\(command) --\(long)") }
            }
        }
        #expect(options.count > 40, "the parser described \(options.count) options")
        #expect(options.subtracting(listed).sorted() == [], "flags that ignore ROWCAST_<FLAG> (add them to EnvironmentArguments.flags)")
        #expect(listed.subtracting(options).sorted() == [], "EnvironmentArguments.flags names flags no command has")
    }

    /// The flags found ignoring their variable, end to end: `ROWCAST_ALLOW_HOST` turns
    /// the Host check on for every interface, `ROWCAST_SOCKETIO_PING_INTERVAL` sets
    /// the heartbeat.
    @Test(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"))
    func allowHostAndSocketIOSettingsComeFromTheEnvironment() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE envflags (id int PRIMARY KEY)")
        #expect(try await Rowcast.run(["setup", "--mode", "trigger", "--table", "envflags", "--db", url]).status == 0)
        let server = try RunningProcess(
            Rowcast.binary.path, ["serve", "--mode", "trigger", "--table", "envflags", "--host", "0.0.0.0", "--port", "0", "--db", url],
            environment: ["ROWCAST_ALLOW_HOST": "proxy.example", "ROWCAST_SOCKETIO_PING_INTERVAL": "3", "ROWCAST_TOKEN": "env-token"]
        )
        let port = try #require(Int(try await server.waitFor(#"serving trigger mode on http://[^:]+:(\d+)/"#)))
        let statuses = try await onThread("GET /healthz with three hosts", within: 60) {
            try ["proxy.example", "evil.example", "127.0.0.1", "192.0.2.7"].map { try RawClient.status(port: port, path: "/healthz", host: $0) }
        }
        // On every interface: the names given, and any address (a rebinding site needs a name).
        #expect(statuses == ["200", "421", "200", "200"])
        let open = try await onThread("an Engine.IO open packet", within: 60) { try RawClient.body(port: port, path: "/socket.io/?EIO=4&transport=polling") }
        #expect(String(decoding: open, as: UTF8.self).contains(#""pingInterval":3000"#), "\(String(decoding: open, as: UTF8.self))")
        #expect(try await server.stop() == 0, "serve output:\n\(server.output.suffix(2000))")
    }
}

/// Runs the built binary (psql is `LiveDatabase.psql`).
enum Rowcast {
    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["ROWCAST_BIN"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../.build/debug/rowcast").standardized
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs the binary to completion on a thread of its own (never blocking the
    /// cooperative pool, which in-process servers of other tests need), killed and
    /// reported with its output when it has not exited within `seconds`.
    static func run(_ arguments: [String], environment: [String: String] = [:], seconds: Double = 120) async throws -> Result {
        try await onThread("rowcast \(arguments.first ?? "") to exit", within: seconds + 30) {
            try runBlocking(arguments, environment: environment, seconds: seconds)
        }
    }

    /// `run`, for code already on a thread of its own.
    static func runBlocking(_ arguments: [String], environment: [String: String] = [:], seconds: Double = 120) throws -> Result {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") && $0.key != "DATABASE_URL" && !$0.key.hasPrefix("ROWCAST_") }
        env.merge(environment) { $1 }
        let result = try runChild(binary.path, arguments, environment: env, seconds: seconds)
        return Result(status: result.status, stdout: result.stdout, stderr: result.stderr)
    }

    /// A PostgreSQL program such as pg_recvlogical, from the newest server install.
    static func postgresBinary(_ name: String) throws -> URL {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.compactMap(Int.init).sorted(by: >) {
            let path = "/usr/lib/postgresql/\(version)/bin/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return URL(fileURLWithPath: path) }
        }
        throw Failure("no \(name) in any /usr/lib/postgresql/*/bin")
    }
}

/// Docs/cli.md carries every command's `--help` verbatim; this keeps them in step.
@Suite struct CLIReferenceTests {
    static let commands = ["", "serve", "tail", "setup", "teardown", "slot status", "slot create", "slot drop", "doctor", "demo"]

    static func help(_ command: String) async throws -> String {
        let arguments = command.split(separator: " ").map(String.init) + ["--help"]
        return try await Rowcast.run(arguments, environment: ["COLUMNS": "100"]).stdout
    }

    @Test func theReferenceShowsEachCommandsHelpVerbatim() async throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Docs/cli.md").standardized
        let reference = try String(contentsOf: file, encoding: .utf8)
        for command in Self.commands {
            let marker = "<!-- help: " + (["rowcast"] + [command].filter { !$0.isEmpty }).joined(separator: " ") + " -->"
            let block = marker + "\n```text\n" + (try await Self.help(command)) + "```\n"
            let inStep = reference.contains(block)
            #expect(inStep, "Docs/cli.md is out of step with `rowcast \(command) --help`; run scripts/cli-reference.py")
        }
    }

    @Test(arguments: commands.filter { !$0.isEmpty })
    func everyCommandsHelpHasAnExample(_ command: String) async throws {
        let help = try await Self.help(command)
        #expect(help.contains("Example:\n  rowcast \(command)"), "`rowcast \(command) --help` lacks an example")
    }
}
