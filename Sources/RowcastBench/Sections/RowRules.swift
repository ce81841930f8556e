import Foundation
import JWTKit
import Synchronization

/// 9. Row rules: 10,000 WebSocket clients, each with a JWT whose `rows` claim gives it
/// one tenant of its own, while pgbench inserts 1,000 rows a second spread over the
/// 10,000 tenants; beside the same writer with one client that receives every row (the
/// same frames delivered, by one client), and with 10,000 clients that all receive
/// everything (ten thousand times the frames). What serve's CPU per change follows:
/// the frames it delivers, or the clients connected. The writer starts once the
/// clients are connected; CPU is read over the load's measurement only.
enum RowRules: BenchSection {
    static let number = 9
    static let key = "rowrules"
    static let ports = [0]
    static let tenants = 10_000
    static let rate = 1_000
    static let secret = "rowcast-bench-row-rules-secret-of-32-bytes"

    /// (label, clients, whether each has its own tenant).
    static let loads: [(label: String, clients: Int, ownTenant: Bool)] = [
        ("1 client, every row", 1, false),
        ("10,000 clients, a tenant each", tenants, true),
        ("10,000 clients, every row", tenants, false),
    ]

    static func run(_ bench: Bench) throws {
        let db = bench.database
        try db.query("CHECKPOINT")
        try db.query("CREATE TABLE tenant_orders (id bigserial PRIMARY KEY, tenant_id int NOT NULL, title text); ALTER TABLE tenant_orders REPLICA IDENTITY FULL")
        try bench.setUpReplication(table: "tenant_orders", slot: "rowrules", publication: "rowrules")
        let writes = try bench.work.write(
            "rowrules.sql", "\\set t random(0, \(tenants - 1))\nINSERT INTO tenant_orders (tenant_id, title) VALUES (:t, 'row from pgbench, about as long as a title');\n"
        )
        let own = try bench.work.write("rowrules-tenants.txt", try tokens(tenants: tenants).joined(separator: "\n") + "\n")
        let all = try bench.work.write("rowrules-all.txt", try tokens(tenants: nil).joined(separator: "\n") + "\n")
        let statusToken = try runAsync {
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            return try await keys.sign(Claims(tables: nil, rows: nil))
        }
        let port = bench.port(0)
        let serve = try bench.serve(table: "tenant_orders", slot: "rowrules", publication: "rowrules", port: port, extra: ["--jwt-secret", secret])
        // Until the first rows are captured; each load then gets a writer of its own,
        // started once its clients are connected (10,000 clients connecting while each
        // receives every row would never finish connecting).
        let first = try Child.start(
            "pgbench writer", bench.tools.pgbench, ["-n", "-t", "10", "-c", "1", "-f", writes, db.url], output: .discard, in: bench.work
        )
        defer { serve.stop() }
        try waitUntil("rowcast serve to capture pgbench's first rows", watching: [serve]) {
            (try jsonNumber("records_captured", in: bench.status(port: port, token: statusToken)) ?? 0) > 0
        }
        first.stop()
        for (label, clients, ownTenant) in loads {
            let seconds = bench.settings.seconds
            let load = try bench.load(clients: clients, seconds: seconds, url: "ws://127.0.0.1:\(port)/ws", subscribe: true, tokens: ownTenant ? own : all)
            // Over the load's measurement only: connecting 10,000 clients costs what section 6 shows.
            _ = try bench.measuring(load, clients: clients)
            let writer = try Child.start(
                "pgbench writer", bench.tools.pgbench,
                ["-n", "-R", String(rate), "-T", "3600", "-c", "2", "-j", "1", "-f", writes, db.url], output: .discard, in: bench.work
            )
            defer { writer.stop() }
            let cpuBefore = try ProcessStats.cpuSeconds(serve.pid)
            let rowsBefore = try db.number("SELECT count(*) FROM tenant_orders")
            let started = ContinuousClock.now
            nap(seconds)
            let cpu = try ProcessStats.cpuSeconds(serve.pid) - cpuBefore
            let captured = try db.number("SELECT count(*) FROM tenant_orders") - rowsBefore
            let elapsed = ContinuousClock.now - started
            writer.stop()
            let report = try bench.result(of: load, within: seconds + 300)
            try serve.requireRunning(while: "the load \(label)")
            let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let labels = ["load": label]
            bench.record(key, "connected", labels, unit: "clients", [Double(report.clients)])
            bench.record(key, "frames_per_s", labels, unit: "frames/s", [report.framesPerS])
            bench.record(key, "p50", labels, unit: "ms", [report.p50Ms])
            bench.record(key, "p99", labels, unit: "ms", [report.p99Ms])
            bench.record(key, "server_cpu", labels, unit: "%", [cpu / wall * 100])
            bench.record(key, "cpu_per_change", labels, unit: "µs", [captured > 0 ? cpu / captured * 1e6 : 0])
            bench.record(key, "server_peak_rss", labels, unit: "KB", [Double(try ProcessStats.kilobytes("VmHWM", of: serve.pid))])
        }
    }

    /// One JWT per tenant (`rows`: that tenant's `tenant_id`), or one for every row.
    static func tokens(tenants: Int?) throws -> [String] {
        try runAsync {
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            guard let tenants else { return [try await keys.sign(Claims(tables: ["public.tenant_orders"], rows: nil))] }
            var tokens: [String] = []
            for tenant in 0..<tenants {
                tokens.append(try await keys.sign(Claims(tables: ["public.tenant_orders"], rows: ["public.tenant_orders": "tenant_id=eq.\(tenant)"])))
            }
            return tokens
        }
    }

    struct Claims: JWTPayload {
        var tables: [String]?
        var rows: [String: String]?
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }
}

/// Runs `body` to completion from synchronous code: the bench's driver runs on the main
/// thread, outside the cooperative pool that runs `body`.
func runAsync<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    guard let outcome = result.withLock({ $0 }) else { throw BenchFailure("an asynchronous step ended without a result") }
    return try outcome.get()
}
