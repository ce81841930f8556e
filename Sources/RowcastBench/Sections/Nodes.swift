import Foundation
import RowcastCore
import RowcastServer

/// 5. Several nodes: k `rowcast tail` processes drain the same backlog at once, each
/// from its own slot, as k `serve` nodes would (wall time until all are done, and the
/// CPU the walsenders used); then the WAL that `serve`'s slot keeps for its resume
/// window at a steady write rate, and what its window log costs per record.
enum Nodes: BenchSection {
    static let number = 5
    static let key = "nodes"
    static let ports = [3]

    /// The WAL figure's workload: single-row transactions per second, for how long, and
    /// the window's age (the bound, since the window's record budget is far larger).
    static let walRate = 200
    static let walSeconds = 70
    static let windowAge = 60

    static func run(_ bench: Bench) throws {
        try drainTogether(bench)
        try walKept(bench)
        try windowLogCost(bench)
    }

    /// What `serve`'s window log costs per record: 200,000 records of the drain's
    /// one-row shape and of a 1 kB row appended in batches of 500 (a flush each, as
    /// the capture flushes when it catches up), with each `--window-fsync` policy:
    /// wall and CPU time per record, and bytes on disk per record.
    private static func windowLogCost(_ bench: Bench) throws {
        let count = 200_000
        for (shape, pad) in [("seed", 8), ("1kB", 1_000)] {
            for policy in WindowLog.SyncPolicy.allCases {
                let directory = bench.work.path("log-cost-\(shape)-\(policy.rawValue)")
                let (log, _) = try WindowLog.open(directory: directory, identity: "bench", policy: policy, segmentBytes: 1 << 30)
                log.reset(origin: nil)
                // One record, its cursor moved on each time: what is timed is the log's
                // work (encoding, checksum, writes, flushes), not building records.
                var record = ChangeRecord(cursor: .replication(commitLSN: 1 << 8, index: 0), source: .replication, op: .insert)
                record.schema = "public"
                record.table = "seed"
                record.xid = 1234
                record.commitTime = "2026-12-07T12:00:00.000000Z"
                record.row = RawJSON(trusted: Array(#"{"id":123456,"title":"\#(String(repeating: "x", count: pad))"}"#.utf8))
                let cpu = try ProcessStats.cpuSeconds(getpid())
                let start = ContinuousClock.now
                for n in 0..<count {
                    let commit = UInt64(n / 500 + 1) << 8
                    record.cursor = .replication(commitLSN: commit, index: UInt32(n % 500))
                    record.lsn = commit
                    log.append(record, at: 0)
                    if n % 500 == 499 {
                        log.mark(commit + 1)
                        guard log.sync() != nil else { throw BenchFailure(log.failure ?? "the window log failed") }
                    }
                }
                let seconds = (ContinuousClock.now - start).seconds
                let cpuSeconds = try ProcessStats.cpuSeconds(getpid()) - cpu
                let labels = ["shape": shape, "fsync": policy.rawValue, "records": String(count)]
                bench.record(key, "log_ns_per_record", labels, unit: "ns", [seconds * 1e9 / Double(count)])
                bench.record(key, "log_cpu_ns_per_record", labels, unit: "ns", [cpuSeconds * 1e9 / Double(count)])
                bench.record(key, "log_bytes_per_record", labels, unit: "bytes", [Double(log.diskUsage.bytes) / Double(count)])
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
    }

    private static func drainTogether(_ bench: Bench) throws {
        let db = bench.database
        let rows = max(1, bench.settings.rows / 5)
        try db.query("CREATE TABLE nodes_t (id bigint PRIMARY KEY, title text)")
        try db.query("CREATE PUBLICATION pub_nodes FOR TABLE nodes_t")
        for k in 1...3 {
            for i in 1...k { try db.query("SELECT pg_create_logical_replication_slot('nodes_\(k)_\(i)', 'pgoutput')") }
        }
        try db.query("INSERT INTO nodes_t SELECT g, 'row number ' || g FROM generate_series(1, \(rows)) g")
        let endpos = try db.query("SELECT pg_current_wal_lsn()")
        let postmaster = try bench.cluster.postmaster()
        for k in 1...3 {
            // A walsender's CPU reaches the postmaster's children total when it is reaped.
            let before = try ProcessStats.childrenCPUSeconds(postmaster)
            let started = ContinuousClock.now
            let tails = try (1...k).map { i in
                try bench.rowcast(
                    "rowcast tail \(i) of \(k)",
                    ["tail", "--mode", "replication", "--slot", "nodes_\(k)_\(i)", "--publication", "pub_nodes", "--endpos", endpos, "--log-level", "warning"]
                )
            }
            for tail in tails { try tail.succeed(within: 1800) }
            let elapsed = ContinuousClock.now - started
            try waitUntil("the walsenders of \(k) slot(s) to exit and be reaped", seen: {
                "walsenders still there: \(ProcessStats.unfinishedWalsenders(of: postmaster))"
            }) {
                ProcessStats.unfinishedWalsenders(of: postmaster).isEmpty
            }
            let cpu = try ProcessStats.childrenCPUSeconds(postmaster) - before
            let labels = ["slots": String(k), "rows": String(rows)]
            bench.record(key, "seconds", labels, unit: "s", [Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18])
            bench.record(key, "walsender_cpu", labels, unit: "s", [cpu])
        }
        for k in 1...3 {
            for i in 1...k { try db.query("SELECT pg_drop_replication_slot('nodes_\(k)_\(i)')") }
        }
    }

    private static func walKept(_ bench: Bench) throws {
        let db = bench.database
        try bench.setUpReplication(table: "nodes_t", slot: "nodes_wal", publication: "pub_nodes")
        let port = bench.port(3)
        let serve = try bench.serve(
            table: "nodes_t", slot: "nodes_wal", publication: "pub_nodes", port: port,
            extra: ["--resume-window", "100000", "--resume-window-age", String(windowAge), "--status-interval", "1"]
        )
        defer { serve.stop() }
        let writes = try bench.work.write(
            "nodes.sql", "INSERT INTO nodes_t VALUES (1000000000 + (random() * 1000000000)::bigint, 'steady') ON CONFLICT DO NOTHING;\n"
        )
        progress("nodes: \(walRate) transactions/s for \(walSeconds) s into serve's slot")
        try Child.start(
            "pgbench", bench.tools.pgbench, ["-n", "-R", String(walRate), "-T", String(walSeconds), "-c", "1", "-f", writes, db.url], output: .discard,
            in: bench.work
        ).succeed(within: Double(walSeconds) + 300)
        // Every row written has been captured, and serve knows its slot's lag. Once the
        // writes stop, the window evicts nothing (it drops old records at the next one),
        // so the confirmed position, and the lag, stay where the steady rate left them.
        let written = try db.number("SELECT count(*) FROM nodes_t WHERE id >= 1000000000")
        var status = ""
        try waitUntil("rowcast serve to capture all \(Int(written)) rows and report its slot's lag", every: 0.1, watching: [serve], seen: { status }) {
            status = try bench.status(port: port)
            return (jsonNumber("records_captured", in: status) ?? 0) >= written && jsonNumber("lag_bytes", in: status) != nil
        }
        let labels = ["rate": String(walRate), "seconds": String(walSeconds), "window_age": String(windowAge)]
        bench.record(key, "window_records", labels, unit: "records", [jsonNumber("window_records", in: status) ?? 0])
        bench.record(key, "lag", labels, unit: "bytes", [jsonNumber("lag_bytes", in: status) ?? 0])
        serve.stop()
        try bench.rowcast("rowcast slot drop", ["slot", "drop", "nodes_wal", "--force"]).succeed(within: 120)
    }
}
