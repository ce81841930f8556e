import Foundation

/// 2. Fan-out: frames delivered per second and commit-to-client latency, for
/// `rowcast serve` fed by `pgbench -R RATE` and for the bare Hummingbird broadcaster
/// (`rowcast-bench baseline --rate RATE`), both measured by one load-client process
/// (`rowcast-bench load`); from 100 clients on, the same serve also to Socket.IO
/// clients. Per figure: the load's frames/s and latency percentiles, the server's CPU
/// over the load's lifetime, the load's own CPU, and the server's peak RSS so far.
enum FanOut: BenchSection {
    static let number = 2
    static let key = "fanout"
    /// The baseline, then serve.
    static let ports = [0, 1]

    /// (clients, rows per second).
    static let loads: [(clients: Int, rate: Int)] = [(1, 100), (100, 100), (1000, 100), (100, 2000)]

    static func run(_ bench: Bench) throws {
        let db = bench.database
        try db.query("CHECKPOINT")  // not in the middle of a fan-out run
        try db.query("CREATE TABLE fanout (id bigserial PRIMARY KEY, title text)")
        try bench.setUpReplication(table: "fanout", slot: "fanout", publication: "fanout")
        let writes = try bench.work.write("fanout.sql", "INSERT INTO fanout (title) VALUES ('row from pgbench, about as long as a title');\n")
        for (clients, rate) in loads {
            let basePort = bench.port(0)
            let baseline = try bench.baseline(port: basePort, rate: Double(rate))
            try measure("baseline", baseline, clients: clients, rate: rate, url: "ws://127.0.0.1:\(basePort)/ws", bench)
            baseline.stop()

            let port = bench.port(1)
            let serve = try bench.serve(table: "fanout", slot: "fanout", publication: "fanout", port: port)
            let writer = try Child.start(
                "pgbench writer", bench.tools.pgbench,
                ["-n", "-R", String(rate), "-T", "600", "-c", "2", "-j", "1", "-f", writes, db.url], output: .discard, in: bench.work
            )
            defer {
                writer.stop()
                serve.stop()
            }
            try waitUntil("rowcast serve to capture pgbench's first rows", watching: [serve, writer]) {
                (try jsonNumber("records_captured", in: bench.status(port: port)) ?? 0) > 0
            }
            try measure("rowcast", serve, clients: clients, rate: rate, url: "ws://127.0.0.1:\(port)/ws", subscribe: true, bench)
            if clients >= 100 {
                // The same server and writer, Socket.IO clients over WebSocket.
                try measure(
                    "rowcast, Socket.IO", serve, clients: clients, rate: rate, url: "ws://127.0.0.1:\(port)/socket.io/?EIO=4&transport=websocket",
                    subscribe: true, socketIO: true, bench
                )
            }
        }
    }

    /// One load run against `server`; records its figures.
    private static func measure(
        _ label: String, _ server: Child, clients: Int, rate: Int, url: String, subscribe: Bool = false, socketIO: Bool = false, _ bench: Bench
    ) throws {
        let seconds = bench.settings.seconds
        let cpuBefore = try ProcessStats.cpuSeconds(server.pid)
        let started = ContinuousClock.now
        let load = try bench.load(clients: clients, seconds: seconds, url: url, subscribe: subscribe, socketIO: socketIO)
        let report = try bench.result(of: load, within: seconds + 300)
        try server.requireRunning(while: "the load on \(label)")
        let cpu = try ProcessStats.cpuSeconds(server.pid) - cpuBefore
        let elapsed = ContinuousClock.now - started
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let labels = ["server": label, "clients": String(clients), "rate": String(rate)]
        bench.record(key, "connected", labels, unit: "clients", [Double(report.clients)])
        bench.record(key, "frames_per_s", labels, unit: "frames/s", [report.framesPerS])
        bench.record(key, "p50", labels, unit: "ms", [report.p50Ms])
        bench.record(key, "p99", labels, unit: "ms", [report.p99Ms])
        bench.record(key, "max", labels, unit: "ms", [report.maxMs])
        bench.record(key, "server_cpu", labels, unit: "%", [cpu / wall * 100])
        bench.record(key, "load_cpu", labels, unit: "%", [report.cpuPercent])
        bench.record(key, "server_peak_rss", labels, unit: "KB", [Double(try ProcessStats.kilobytes("VmHWM", of: server.pid))])
    }
}
