import Foundation

/// 6. Connections: the resident memory of `rowcast serve` and of the bare baseline
/// server before and with many idle clients, and a burst of 1,000 arrivals at serve.
enum Connections: BenchSection {
    static let number = 6
    static let key = "connections"
    /// serve, then the baseline.
    static let ports = [4, 5]

    static let burst = 1000

    static func run(_ bench: Bench) throws {
        let db = bench.database
        try db.query("CREATE TABLE idle (id int PRIMARY KEY)")
        try bench.setUpReplication(table: "idle", slot: "idle", publication: "idle")
        let port = bench.port(4)
        let serve = try bench.serve(table: "idle", slot: "idle", publication: "idle", port: port)
        _ = try bench.status(port: port)
        try idleMemory(server: "rowcast", serve, port: port, subscribe: true, bench)
        serve.stop()

        // The same idle clients on the bare Hummingbird WebSocket server: the stack's own cost.
        let basePort = bench.port(5)
        let baseline = try bench.baseline(port: basePort, rate: 0.1)
        try idleMemory(server: "baseline", baseline, port: basePort, subscribe: false, bench)
        baseline.stop()

        let again = try bench.serve(table: "idle", slot: "idle", publication: "idle", port: port)
        defer { again.stop() }
        _ = try bench.status(port: port)
        let load = try bench.load(clients: burst, seconds: 1, url: "ws://127.0.0.1:\(port)/ws", subscribe: true)
        let report = try bench.result(of: load, within: 300)
        let labels = ["clients": String(burst)]
        bench.record(key, "burst_connected", labels, unit: "clients", [Double(report.clients)])
        bench.record(key, "burst_subscribed", labels, unit: "clients", [Double(report.subscribed)])
        bench.record(key, "burst_all_connected", labels, unit: "s", [report.allConnectedS])
        bench.record(key, "burst_all_subscribed", labels, unit: "s", [report.allSubscribedS])
    }

    /// The server's RSS before the idle clients connect, and once they all have (and,
    /// subscribing, have their `subscribed`) and its RSS has settled.
    private static func idleMemory(server: String, _ child: Child, port: Int, subscribe: Bool, _ bench: Bench) throws {
        let clients = bench.settings.idleClients
        let before = try ProcessStats.kilobytes("VmRSS", of: child.pid)
        // Long enough to read the memory; stopped as soon as it has been.
        let load = try bench.load(clients: clients, seconds: 600, url: "ws://127.0.0.1:\(port)/ws", subscribe: subscribe)
        defer { load.stop() }
        let ready = try bench.measuring(load, clients: clients)
        // Settled: the same RSS (within 0.5 %) three samples running, a quarter second apart.
        var samples: [Int] = []
        try waitUntil("the RSS of \(child.name) to settle with \(clients) idle clients", every: 0.25, watching: [child, load], seen: {
            "RSS samples \(samples.suffix(5)) KB"
        }) {
            samples.append(try ProcessStats.kilobytes("VmRSS", of: child.pid))
            let last = samples.suffix(3)
            guard last.count == 3, let low = last.min(), let high = last.max() else { return false }
            return Double(high - low) <= Double(high) * 0.005
        }
        let with = samples.last ?? 0
        let labels = ["server": server, "clients": String(clients)]
        bench.record(key, "idle_connected", labels, unit: "clients", [Double(ready.clients)])
        if subscribe {
            bench.record(key, "idle_subscribed", labels, unit: "clients", [Double(ready.subscribed)])
            bench.record(key, "idle_all_subscribed", labels, unit: "s", [ready.allSubscribedS])
        }
        bench.record(key, "rss_before", labels, unit: "KB", [Double(before)])
        bench.record(key, "rss_with", labels, unit: "KB", [Double(with)])
    }
}
