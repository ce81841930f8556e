import Foundation

/// 8. A snapshot of a million rows to one client: time to its first row and rows/s
/// through `rowcast serve` (`subscribe` with `"snapshot": true`, in each mode), beside
/// `psql -c "copy (select to_jsonb(t) from t) to stdout"` on the same table.
enum Snapshot: BenchSection {
    static let number = 8
    static let key = "snapshot"
    static let ports = [8]

    static func run(_ bench: Bench) throws {
        let db = bench.database
        let rows = 1_000_000
        try db.query("CREATE TABLE snap (id int PRIMARY KEY, note text, at timestamptz, qty numeric)")
        try db.query("INSERT INTO snap SELECT g, 'row ' || g, '2026-01-01'::timestamptz + g * interval '1 s', g / 7.0 FROM generate_series(1, \(rows)) g")
        try db.query("VACUUM ANALYZE snap")
        // Warm: the table read once, as a long-running database would have it cached.
        _ = try read(bench, name: "psql (warm-up)", ["--psql", bench.tools.psql, "--db", db.url])
        record(bench, "psql copy to_jsonb", try (0..<3).map { _ in try read(bench, name: "psql copy", ["--psql", bench.tools.psql, "--db", db.url]) })
        try bench.setUpReplication(table: "snap", slot: "snap", publication: "snap")
        let port = bench.port(8)
        let serve = try bench.serve(table: "snap", slot: "snap", publication: "snap", port: port)
        defer { serve.stop() }
        let reads = try (0..<3).map { _ in
            let read = try read(bench, name: "rowcast snapshot", ["--url", "ws://127.0.0.1:\(port)/ws"])
            try serve.requireRunning(while: "a snapshot")
            return read
        }
        record(bench, "rowcast serve (WebSocket)", reads)
        bench.record(key, "serve_peak_rss", [:], unit: "KB", [Double(try ProcessStats.kilobytes("VmHWM", of: serve.pid))])
    }

    private static func read(_ bench: Bench, name: String, _ arguments: [String]) throws -> (first: Double, seconds: Double, rows: Int) {
        let child = try Child.start(name, bench.tools.bench, ["snapshot-read", "--table", "public.snap"] + arguments, output: .file, in: bench.work)
        _ = try child.succeed(within: 900)
        let line = child.output.split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            let first = (object["first_row_seconds"] as? NSNumber)?.doubleValue,
            let seconds = (object["seconds"] as? NSNumber)?.doubleValue,
            let rows = (object["rows"] as? NSNumber)?.intValue
        else { throw BenchFailure("\(name) reported no result\(quoted(line))") }
        return (first, seconds, rows)
    }

    private static func record(_ bench: Bench, _ reader: String, _ results: [(first: Double, seconds: Double, rows: Int)]) {
        let labels = ["reader": reader]
        bench.record(key, "first_row_ms", labels, unit: "ms", results.map { $0.first * 1000 })
        bench.record(key, "rows_per_second", labels, unit: "rows/s", results.map { Double($0.rows) / $0.seconds })
        bench.record(key, "rows", labels, unit: "rows", results.map { Double($0.rows) })
    }
}
