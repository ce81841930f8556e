import ArgumentParser
import Foundation

/// `rowcast-bench run`: what `make bench` runs. Starts a throwaway cluster, runs the
/// chosen sections against it, and writes every measurement as a JSON line; stops
/// every process it started and the cluster however it ends (a failure is one line on
/// stderr and exit status 1; SIGINT or SIGTERM, 128 + the signal).
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run benchmark sections against a throwaway cluster; write their measurements as JSON lines.",
        discussion: """
            Sections: 1 drain, 2 fanout, 3 trigger, 4 bigrow, 5 nodes, 6 connections, 7 perimeter, 8 snapshot. \
            Servers listen on 127.0.0.1, from --base-port to --base-port + 5.
            """
    )

    @Option(help: "Sections to run, by number or name, separated by spaces or commas.")
    var sections = "1 2 3 4 5 6 7 8"

    @Option(help: "Rows of the drain backlog (other shapes and sections take fractions of it).")
    var rows = 1_000_000

    @Option(help: "Runs per drain and trigger figure (their median is reported).")
    var runs = 3

    @Option(help: "Seconds per fan-out and pgbench figure.")
    var seconds = 10.0

    @Option(help: "Idle clients in the connections section.")
    var idleClients = 10_000

    @Option(help: "The first of the six ports the bench listens on.")
    var basePort = 8090

    @Option(help: "The results file (JSON lines); standard output when not given.")
    var output: String?

    @Option(help: "The rowcast binary (default: the one beside rowcast-bench).")
    var rowcast: String?

    func validate() throws {
        _ = try chosen()
        guard rows > 0, runs > 0, seconds > 0, idleClients > 0 else { throw ValidationError("--rows, --runs, --seconds and --idle-clients must be positive") }
        guard (1...65_530).contains(basePort) else { throw ValidationError("--base-port must leave room for six ports") }
    }

    /// The sections asked for, in the benchmark's order.
    func chosen() throws -> [any BenchSection.Type] {
        let words = sections.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        for word in words where !allSections.contains(where: { String($0.number) == word || $0.key == word }) {
            throw ValidationError("no section \(word) (sections: \(allSections.map { "\($0.number) \($0.key)" }.joined(separator: ", ")))")
        }
        let picked = allSections.filter { section in words.contains(String(section.number)) || words.contains(section.key) }
        guard !picked.isEmpty else { throw ValidationError("--sections names no section") }
        return picked
    }

    func run() throws {
        Cleanup.shared.catchSignals()
        raiseOpenFileLimit()
        do {
            try measure()
            Cleanup.shared.stopAll()
        } catch {
            if Cleanup.shared.signal != nil {
                // The signal's thread is cleaning up and will exit with its status.
                while true { nap(1) }
            }
            Cleanup.shared.stopAll()
            FileHandle.standardError.write(Data("rowcast-bench: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }

    private func measure() throws {
        let picked = try chosen()
        let settings = Settings(rows: rows, runs: runs, seconds: seconds, idleClients: idleClients, basePort: basePort)
        let work = try WorkFolder()
        Cleanup.shared.own(work, rowcast: rowcast ?? "")
        let tools = try Tools.find(rowcast: rowcast, in: work)
        Cleanup.shared.own(work, rowcast: tools.rowcast)
        // Every port first: better now than twenty minutes in.
        for port in picked.flatMap({ $0.ports }).map({ basePort + $0 }) { try Probe.requireFree(port) }
        progress("starting a throwaway cluster")
        let cluster = try Cluster.start(tools: tools, in: work)
        let database = Database(url: cluster.url, tools: tools, work: work)
        let version = try database.number("SHOW server_version_num")
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd"
        formatter.timeZone = TimeZone(identifier: "UTC")
        let info = RunInfo(
            date: formatter.string(from: Date()), postgres: String(Int(version) / 10_000), cores: Machine.cores, processor: Machine.processor,
            memoryGiB: Machine.memoryGiB, kernel: Machine.kernel, rows: rows, runs: runs, seconds: seconds, idleClients: idleClients,
            sections: picked.map { $0.number }
        )
        let log = try ResultsLog(path: output, info: info)
        let bench = Bench(settings: settings, tools: tools, work: work, cluster: cluster, log: log)
        for section in picked {
            progress("\(section.number). \(section.key)")
            try section.run(bench)
        }
    }

    /// Ten thousand idle clients need as many descriptors in the load client and the
    /// server: the soft limit up to the hard one, which children inherit.
    private func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}
