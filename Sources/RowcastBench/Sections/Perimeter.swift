import Foundation

/// 7. Perimeter: what a hostile client costs a steady one. One `serve` fed by pgbench;
/// ten steady clients measure commit-to-client latency alone, then beside each attack
/// of Docs/threat-model.md (`rowcast-bench attack`): subscribers that stop reading
/// (beside as many that read, what ordinary clients cost),
/// Engine.IO handshakes that never join, `subscribe` with `last` and a wide `in` list in
/// a loop, slowloris heads, ping floods. Per figure: the steady clients' frames/s and
/// latency, serve's CPU, and serve's RSS before and during the attack.
enum Perimeter: BenchSection {
    static let number = 7
    static let key = "perimeter"
    static let ports = [4]

    /// Rows per second from pgbench, and steady clients.
    static let rate = 200
    static let steady = 10

    /// (kind, hostile connections); nil is the steady clients alone.
    static let attacks: [(kind: String?, clients: Int)] = [
        (nil, 0), ("readers", 20), ("stall", 20), ("readers", 200), ("stall", 200), ("handshakes", 20), ("last", 20), ("last", 200),
        ("slowloris", 1000), ("pings", 20),
    ]

    static func run(_ bench: Bench) throws {
        let db = bench.database
        try db.query("CREATE TABLE perimeter (id bigserial PRIMARY KEY, title text)")
        try bench.setUpReplication(table: "perimeter", slot: "perimeter", publication: "perimeter")
        let writes = try bench.work.write("perimeter.sql", "INSERT INTO perimeter (title) VALUES ('row from pgbench, about as long as a title');\n")
        let port = bench.port(ports[0])
        // The defaults' limits, but the connections from one address: 1,000 slowloris
        // heads, the steady clients and the attackers all come from loopback.
        let serve = try bench.serve(
            table: "perimeter", slot: "perimeter", publication: "perimeter", port: port, extra: ["--max-connections-per-address", "0"], perAddressLimits: true
        )
        let writer = try Child.start(
            "pgbench writer", bench.tools.pgbench, ["-n", "-R", String(rate), "-T", "3600", "-c", "2", "-j", "1", "-f", writes, db.url],
            output: .discard, in: bench.work
        )
        defer {
            writer.stop()
            serve.stop()
        }
        try waitUntil("rowcast serve to capture pgbench's first rows", watching: [serve, writer]) {
            (try jsonNumber("records_captured", in: bench.status(port: port)) ?? 0) > 0
        }
        for (kind, clients) in attacks {
            try measure(kind: kind, clients: clients, serve: serve, writer: writer, port: port, bench)
        }
    }

    private static func measure(kind: String?, clients: Int, serve: Child, writer: Child, port: Int, _ bench: Bench) throws {
        // The last attack's connections gone (but the one asking): serve back to the steady state.
        try waitUntil("serve to have no client left from the last attack", within: 120, watching: [serve, writer]) {
            (try jsonNumber("connections", in: bench.status(port: port)) ?? 2) <= 1
        }
        let rssBefore = try ProcessStats.kilobytes("VmRSS", of: serve.pid)
        var attack: Child?
        if let kind {
            let started = try Child.start(
                "rowcast-bench attack", bench.tools.bench, ["attack", "--kind", kind, "--clients", String(clients), "--server", "127.0.0.1:\(port)"],
                in: bench.work
            )
            attack = started
            try waitUntil("rowcast-bench attack --kind \(kind) to be in place", within: 120, every: 0.1, watching: [started, serve]) {
                ((try? String(contentsOfFile: started.stderrPath, encoding: .utf8)) ?? "").contains(#""event":"attacking""#)
            }
            // Under way for a few seconds first: stalled readers' buffers full, floods at their pace.
            Thread.sleep(forTimeInterval: 5)
        }
        defer { _ = attack?.stop() }
        let seconds = bench.settings.seconds
        let cpuBefore = try ProcessStats.cpuSeconds(serve.pid)
        let started = ContinuousClock.now
        // From an address of their own: an attack's address pays for what it does.
        let load = try bench.load(clients: steady, seconds: seconds, url: "ws://127.0.0.1:\(port)/ws", subscribe: true, from: "127.0.0.3")
        let report = try bench.result(of: load, within: seconds + 300)
        try serve.requireRunning(while: "the steady clients beside \(kind ?? "nothing")")
        let cpu = try ProcessStats.cpuSeconds(serve.pid) - cpuBefore
        let rssDuring = try ProcessStats.kilobytes("VmRSS", of: serve.pid)
        let elapsed = ContinuousClock.now - started
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let labels = ["attack": kind ?? "none", "clients": String(clients)]
        bench.record(key, "frames_per_s", labels, unit: "frames/s", [report.framesPerS])
        bench.record(key, "p50", labels, unit: "ms", [report.p50Ms])
        bench.record(key, "p99", labels, unit: "ms", [report.p99Ms])
        bench.record(key, "max", labels, unit: "ms", [report.maxMs])
        bench.record(key, "server_cpu", labels, unit: "%", [cpu / wall * 100])
        bench.record(key, "rss_before", labels, unit: "KB", [Double(rssBefore)])
        bench.record(key, "rss_during", labels, unit: "KB", [Double(rssDuring)])
    }
}
