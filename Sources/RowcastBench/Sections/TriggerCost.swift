import Foundation

/// 3. Trigger mode's cost on the writer: pgbench's transactions/s with 4 clients on
/// three statement shapes, on the same table with no trigger, with the classic
/// `pg_notify(NEW.title)` trigger, and with rowcast's trigger with and without a
/// listener (no rowcast process registered at all while trig_quiet is measured).
enum TriggerCost: BenchSection {
    static let number = 3
    static let key = "trigger"
    static let ports: [Int] = []

    static let variants: [(name: String, label: String)] = [
        ("none", "none"),
        ("classic", "classic `pg_notify(NEW.title)`, per row"),
        ("rowcast", "rowcast, listening"),
        ("quiet", "rowcast, nobody listening"),
    ]

    static let shapes: [(name: String, label: String, sql: String)] = [
        ("one", "single-row INSERT", "INSERT INTO trig_VARIANT (title) VALUES ('a title of some forty characters or so');\n"),
        ("many", "INSERT … SELECT of 1,000 rows",
            "INSERT INTO trig_VARIANT (title) SELECT 'a title of some forty characters or so' FROM generate_series(1, 1000);\n"),
        // Each client updates its own quarter of the table: no lock waits between clients.
        ("update", "UPDATE of 1,000 rows",
            "\\set first :client_id * 25000 + random(1, 24000)\nUPDATE trig_VARIANT SET title = title WHERE id BETWEEN :first AND :first + 999;\n"),
    ]

    static func run(_ bench: Bench) throws {
        let db = bench.database
        // Each table its own sequence: ids 1..100,000 in every one of them, loaded
        // before any trigger exists.
        for (variant, _) in variants {
            try db.query("CREATE TABLE trig_\(variant) (id bigserial PRIMARY KEY, title text)")
            try db.query("INSERT INTO trig_\(variant) (title) SELECT 'a title of some forty characters or so' FROM generate_series(1, 100000)")
        }
        try db.query(
            "CREATE FUNCTION classic_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('bench_classic', NEW.title); RETURN NEW; END $$"
        )
        try db.query("CREATE TRIGGER classic AFTER INSERT OR UPDATE ON trig_classic FOR EACH ROW EXECUTE FUNCTION classic_notify()")
        try bench.rowcast("rowcast setup", ["setup", "--mode", "trigger", "--table", "trig_rowcast", "--table", "trig_quiet"]).succeed(within: 120)
        // The listeners. Each is ready once it prints a notification on a channel of its
        // own (the rowcast one LISTENs on `rowcast` first, then on bench_probe).
        let classic = try bench.rowcast(
            "rowcast tail (classic channel)", ["tail", "--mode", "trigger", "--channel", "bench_classic", "--log-level", "warning"], output: .counted
        )
        func startListening() throws -> Child {
            let listening = try bench.rowcast(
                "rowcast tail (trig_rowcast)",
                ["tail", "--mode", "trigger", "--table", "trig_rowcast", "--channel", "bench_probe", "--log-level", "warning"], output: .counted
            )
            try waitUntil("both trigger-mode listeners to print a probe notification", every: 0.2, watching: [classic, listening]) {
                try db.query("NOTIFY bench_classic, 'probe'; NOTIFY bench_probe, 'probe'")
                return classic.linesWritten > 0 && listening.linesWritten > 0
            }
            return listening
        }
        var listening: Child? = try startListening()
        defer {
            classic.stop()
            listening?.stop()
        }
        var tps: [String: [Double]] = [:]
        for _ in 1...bench.settings.runs {
            for (variant, _) in variants {
                // Nobody listening: the trigger writes while any listener is registered,
                // whatever its tables, so the tail stops and its registration goes.
                if variant == "quiet" {
                    listening?.stop()
                    listening = nil
                    try db.query("DELETE FROM rowcast.listeners")
                }
                defer { if listening == nil { listening = try? startListening() } }
                for shape in shapes {
                    let script = try bench.work.write("trig.sql", shape.sql.replacingOccurrences(of: "VARIANT", with: variant))
                    let pgbench = try Child.start(
                        "pgbench", bench.tools.pgbench, ["-n", "-c", "4", "-j", "2", "-T", String(max(1, Int(bench.settings.seconds.rounded()))), "-f", script, db.url],
                        in: bench.work
                    )
                    try pgbench.succeed(within: bench.settings.seconds + 300)
                    guard let line = pgbench.output.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
                        let value = Double(line.dropFirst(6).prefix { $0 != " " })
                    else { throw BenchFailure("pgbench printed no tps line\(quoted(pgbench.lastWords))") }
                    tps["\(variant) \(shape.name)", default: []].append(value)
                }
            }
            try classic.requireRunning(while: "pgbench")
            guard let listening else { throw BenchFailure("the rowcast tail did not start again after the nobody-listening runs") }
            try listening.requireRunning(while: "pgbench")
        }
        for (variant, label) in variants {
            for shape in shapes {
                bench.record(key, "tps", ["trigger": label, "statement": shape.label], unit: "transactions/s", tps["\(variant) \(shape.name)"] ?? [])
            }
        }
    }
}
