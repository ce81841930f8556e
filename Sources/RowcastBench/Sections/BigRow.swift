import Foundation

/// 4. Peak RSS with one 64 MB row: `rowcast tail` draining it, and `rowcast serve`
/// sending the next one to one subscribed client (then its RSS afterwards, with the
/// frame still in the resume window).
enum BigRow: BenchSection {
    static let number = 4
    static let key = "bigrow"
    static let ports = [2]

    static func run(_ bench: Bench) throws {
        let db = bench.database
        try db.query("CREATE TABLE huge (id int PRIMARY KEY, body text)")
        try bench.setUpReplication(table: "huge", slot: "huge", publication: "huge")
        try db.query("INSERT INTO huge VALUES (1, repeat('x', 64 * 1024 * 1024))")
        let endpos = try db.query("SELECT pg_current_wal_lsn()")
        let drained = try bench.timed(
            "rowcast tail", bench.tools.rowcast,
            ["tail", "--mode", "replication", "--slot", "huge", "--publication", "huge", "--endpos", endpos, "--db", db.url, "--log-level", "warning"],
            within: 600
        )
        bench.record(key, "tail_peak_rss", [:], unit: "KB", [Double(drained.peakRSSKilobytes)])
        bench.record(key, "tail_seconds", [:], unit: "s", [drained.seconds])

        // serve, with one subscribed client receiving the second row.
        let port = bench.port(2)
        let serve = try bench.serve(table: "huge", slot: "huge", publication: "huge", port: port)
        defer { serve.stop() }
        let load = try bench.load(clients: 1, seconds: 300, url: "ws://127.0.0.1:\(port)/ws", subscribe: true, untilFrames: 1)
        defer { load.stop() }
        _ = try bench.measuring(load, clients: 1)
        try db.query("INSERT INTO huge VALUES (2, repeat('y', 64 * 1024 * 1024))")
        let report = try bench.result(of: load, within: 400)
        guard report.frames >= 1 else { throw BenchFailure("the client of rowcast serve received no frame of the 64 MB row") }
        try serve.requireRunning(while: "the 64 MB row")
        bench.record(key, "serve_peak_rss", [:], unit: "KB", [Double(try ProcessStats.kilobytes("VmHWM", of: serve.pid))])
        bench.record(key, "serve_rss_after", [:], unit: "KB", [Double(try ProcessStats.kilobytes("VmRSS", of: serve.pid))])
    }
}
