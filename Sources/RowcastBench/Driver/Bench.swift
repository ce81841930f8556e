import Foundation

/// The knobs of a run (`make bench`'s BENCH_* variables).
struct Settings: Sendable {
    /// Rows of the drain backlog (other shapes and sections take fractions of it).
    var rows = 1_000_000
    /// Runs per drain and trigger figure; the median is reported.
    var runs = 3
    /// Seconds per fan-out and pgbench figure.
    var seconds = 10.0
    /// Idle clients for the connections section.
    var idleClients = 10_000
    /// The first of the six ports the bench's servers listen on.
    var basePort = 8090
}

/// A section of the benchmark: measures, and records what it measured.
protocol BenchSection {
    /// Its number in `BENCH_SECTIONS` and in Docs/benchmarks.md.
    static var number: Int { get }
    /// Its name in the results (`section`) and in the document's markers.
    static var key: String { get }
    /// The ports it listens on, as offsets from `--base-port`.
    static var ports: [Int] { get }
    static func run(_ bench: Bench) throws
}

/// Every section, in order.
var allSections: [any BenchSection.Type] { [Drain.self, FanOut.self, TriggerCost.self, BigRow.self, Nodes.self, Connections.self, Perimeter.self, Snapshot.self, RowRules.self] }

/// One run's shared state and the helpers every section uses to start what it
/// measures, each waiting until the thing is ready.
final class Bench {
    let settings: Settings
    let tools: Tools
    let work: WorkFolder
    let cluster: Cluster
    let database: Database
    private let log: ResultsLog

    init(settings: Settings, tools: Tools, work: WorkFolder, cluster: Cluster, log: ResultsLog) {
        self.settings = settings
        self.tools = tools
        self.work = work
        self.cluster = cluster
        self.log = log
        database = Database(url: cluster.url, tools: tools, work: work)
    }

    func port(_ offset: Int) -> Int { settings.basePort + offset }

    func record(_ section: String, _ name: String, _ labels: [String: String], unit: String, _ values: [Double]) {
        log.record(Measurement(section: section, name: name, labels: labels, unit: unit, values: values))
    }

    /// `rowcast ARGUMENTS --db URL`, started.
    func rowcast(_ name: String, _ arguments: [String], output: ChildOutput = .discard) throws -> Child {
        try Child.start(name, tools.rowcast, arguments + ["--db", cluster.url], output: output, in: work)
    }

    /// Runs a program to completion under GNU time and returns its exit, with the peak
    /// RSS that time reports. `wait4`'s own figure for a child of this process is at
    /// least this process's peak: exec inherits the high-water mark of the memory it
    /// replaces, and posix_spawn's child shares ours until then. time forks the program
    /// from its own small process, as the shell script's `time` did. Wall and
    /// CPU time are `wait4`'s (time's own part is a millisecond).
    func timed(_ name: String, _ program: String, _ arguments: [String], within seconds: Double) throws -> ChildExit {
        let report = work.path(work.nextTag("time") + ".txt")
        let child = try Child.start(name, tools.time, ["-f", "%M", "-o", report, program] + arguments, output: .discard, in: work)
        let exit = try child.succeed(within: seconds)
        let text = (try? String(contentsOfFile: report, encoding: .utf8)) ?? ""
        guard let kilobytes = text.split(whereSeparator: \.isNewline).last.flatMap({ Int($0) }) else {
            throw BenchFailure("time reported no peak RSS for \(name)\(quoted(text))")
        }
        return ChildExit(status: exit.status, seconds: exit.seconds, cpuSeconds: exit.cpuSeconds, peakRSSKilobytes: kilobytes)
    }

    /// `rowcast setup --mode replication` of one table: its slot and publication.
    func setUpReplication(table: String, slot: String, publication: String) throws {
        try rowcast("rowcast setup", ["setup", "--mode", "replication", "--table", table, "--slot", slot, "--publication", publication])
            .succeed(within: 120)
    }

    /// `rowcast serve --mode replication` on `port`, once /healthz answers 200 (the
    /// capture is connected).
    func serve(table: String, slot: String, publication: String, port: Int, extra: [String] = [], perAddressLimits: Bool = false) throws -> Child {
        try Probe.requireFree(port)
        // Every load client connects from loopback: one address, past the defaults' 1,000
        // connections and 100 requests a second (the perimeter section keeps them).
        let unlimited = perAddressLimits ? [] : ["--max-connections-per-address", "0", "--requests-per-second-per-address", "0"]
        let serve = try rowcast(
            "rowcast serve",
            ["serve", "--mode", "replication", "--table", table, "--slot", slot, "--publication", publication, "--port", String(port), "--log-level", "warning"]
                + ["--window-dir", work.path("window")] + unlimited + extra
        )
        try waitUntil("rowcast serve to answer GET /healthz on port \(port) with 200", watching: [serve]) {
            Probe.get("/healthz", port: port)?.status == 200
        }
        return serve
    }

    /// serve's `GET /status`, as JSON text.
    func status(port: Int, token: String? = nil) throws -> String {
        guard let (code, body) = Probe.get("/status" + (token.map { "?token=" + $0 } ?? ""), port: port), code == 200 else { throw BenchFailure("GET /status on port \(port) did not answer 200") }
        return body
    }

    /// `rowcast-bench baseline` on `port`, once the port answers.
    func baseline(port: Int, rate: Double) throws -> Child {
        try Probe.requireFree(port)
        let baseline = try Child.start("rowcast-bench baseline", tools.bench, ["baseline", "--port", String(port), "--rate", String(rate)], output: .discard, in: work)
        try waitUntil("rowcast-bench baseline to accept connections on port \(port)", watching: [baseline]) { Probe.portAnswers(port) }
        return baseline
    }

    /// `rowcast-bench load`, started; its result comes with `result(of:)`.
    func load(
        clients: Int, seconds: Double, url: String, subscribe: Bool = false, socketIO: Bool = false, untilFrames: Int? = nil, from: String? = nil,
        tokens: String? = nil
    ) throws -> Child {
        var arguments = ["load", "--clients", String(clients), "--seconds", String(seconds), "--url", url]
        if let tokens { arguments += ["--tokens", tokens] }
        if let from { arguments += ["--from", from] }
        if subscribe { arguments.append("--subscribe") }
        if socketIO { arguments.append("--socketio") }
        if let untilFrames { arguments += ["--until-frames", String(untilFrames)] }
        return try Child.start("rowcast-bench load", tools.bench, arguments, in: work)
    }

    /// Waits for a load's measurement to begin (every client connected, and subscribed
    /// when asked), and returns what it reported then.
    func measuring(_ load: Child, clients: Int) throws -> LoadReport {
        var report: LoadReport?
        try waitUntil("rowcast-bench load to connect \(clients) clients and start measuring", within: 180, every: 0.1, watching: [load]) {
            report = LoadReport.measuring(in: (try? String(contentsOfFile: load.stderrPath, encoding: .utf8)) ?? "")
            return report != nil
        }
        guard let report, report.clients > 0 else { throw BenchFailure("rowcast-bench load connected none of its \(clients) clients") }
        return report
    }

    /// A load's final report (its one line of JSON), once it has exited.
    func result(of load: Child, within seconds: Double) throws -> LoadReport {
        try load.succeed(within: seconds)
        guard let line = load.output.split(whereSeparator: \.isNewline).last,
            let report = try? LoadReport.decoder.decode(LoadReport.self, from: Data(line.utf8))
        else { throw BenchFailure("rowcast-bench load printed no result\(quoted(load.lastWords))") }
        guard report.clients > 0 else { throw BenchFailure("rowcast-bench load connected none of its clients") }
        return report
    }
}
