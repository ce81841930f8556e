import Foundation

/// 1. Drain throughput: a backlog of each table shape drained by `rowcast tail`, by
/// `pg_recvlogical` with pgoutput (the floor: the walsender's own work) and by
/// `pg_recvlogical` with wal2json format 2, each run from a slot of its own created
/// before the backlog was loaded. Per tool and shape, for every run: wall seconds and
/// CPU seconds (`wait4`) and peak RSS (GNU time).
enum Drain: BenchSection {
    static let number = 1
    static let key = "drain"
    static let ports: [Int] = []

    /// A table shape: its columns and the SELECT list that makes row `g`.
    struct Shape {
        let name: String
        let columns: String
        let select: String
        /// Its backlog as a fraction of `--rows` (wide rows are fewer).
        let divisor: Int
    }

    static let shapes = [
        Shape(name: "seed", columns: "id bigint PRIMARY KEY, title text", select: "g, 'row number ' || g", divisor: 1),
        Shape(
            name: "wide",
            columns: """
                id bigint PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
                n numeric(20,6), b boolean, d date, ts timestamp, tz timestamptz, iv interval, u uuid, j jsonb,
                a integer[], ta text[], by bytea, ip inet, t1 text, t2 text
                """,
            select: """
                g, (g % 30000)::smallint, g::int, g * 1000, g / 7.0, g / 3.0, g / 11.0, g % 2 = 0, date '2026-01-01' + (g % 365),
                timestamp '2026-01-01' + g * interval '1 second', timestamptz '2026-01-01 UTC' + g * interval '1 second',
                g * interval '1 minute', md5(g::text)::uuid, jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b')),
                ARRAY[g, g + 1, g + 2], ARRAY['x' || g, 'y'], decode(md5(g::text), 'hex'), '10.0.0.1'::inet,
                repeat(md5(g::text), 28), repeat('é', 100)
                """,
            divisor: 1
        ),
        // The shape of the performance issue: 20 typed columns, five 300-byte texts.
        Shape(
            name: "wide20",
            columns: """
                id bigint PRIMARY KEY, i1 int, i2 int, i3 int, i4 int, t1 text, t2 text, t3 text, t4 text, t5 text,
                n1 numeric, n2 numeric, n3 numeric, tz timestamptz, j jsonb, b boolean, u uuid, f float8, d date, a int[]
                """,
            select: """
                g, g::int, (g * 7)::int, (g % 1000)::int, -g::int, repeat(md5(g::text), 9) || 'abcdefghijkl',
                repeat(md5((g + 1)::text), 9) || 'abcdefghijkl', repeat(md5((g + 2)::text), 9) || 'abcdefghijkl',
                repeat(md5((g + 3)::text), 9) || 'abcdefghijkl', repeat(md5((g + 4)::text), 9) || 'abcdefghijkl',
                g / 7.0, g * 1.25, g / 3.0, timestamptz '2026-01-01 UTC' + g * interval '1 second',
                jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b'), 'name', 'n' || g), g % 2 = 0,
                md5(g::text)::uuid, g / 3.0::float8, date '2026-01-01' + (g % 365), ARRAY[g, g + 1, g + 2]::int[]
                """,
            divisor: 5
        ),
        // Long text (4 kB, with quotes and newlines to escape) and a 2 kB jsonb document.
        Shape(
            name: "long",
            columns: "id bigint PRIMARY KEY, body text, doc jsonb",
            select: """
                g, repeat(md5(g::text) || E' "quoted"\\n', 96),
                (SELECT jsonb_object_agg('key' || k, md5((g * k)::text)) FROM generate_series(1, 40) k)
                """,
            divisor: 20
        ),
    ]

    /// The tools, in the order each run drains with them.
    enum Tool: String, CaseIterable {
        case rowcast = "rc", pgoutput = "pg", wal2json = "wj"

        var label: String {
            switch self {
            case .rowcast: "rowcast tail"
            case .pgoutput: "pg_recvlogical pgoutput (floor)"
            case .wal2json: "pg_recvlogical wal2json 2"
            }
        }

        var plugin: String { self == .wal2json ? "wal2json" : "pgoutput" }
    }

    static func run(_ bench: Bench) throws {
        for shape in shapes { try drain(shape, bench) }
    }

    private static func drain(_ shape: Shape, _ bench: Bench) throws {
        let db = bench.database
        let rows = max(1, bench.settings.rows / shape.divisor)
        let runs = bench.settings.runs
        let table = shape.name
        try db.query("CREATE TABLE \(table) (\(shape.columns))")
        try db.query("CREATE PUBLICATION pub_\(table) FOR TABLE \(table)")
        func slot(_ tool: Tool, _ run: Int) -> String { "\(tool.rawValue)_\(table)_\(run)" }
        for run in 1...runs {
            for tool in Tool.allCases {
                try db.query("SELECT pg_create_logical_replication_slot('\(slot(tool, run))', '\(tool.plugin)')")
            }
        }
        // Batches of 10,000 rows, a transaction each.
        progress("drain \(table): loading \(rows) rows")
        let batches = stride(from: 1, through: rows, by: 10_000).map { start in
            "INSERT INTO \(table) SELECT \(shape.select) FROM generate_series(\(start), \(min(rows, start + 9_999))) g;"
        }
        try db.script(batches.joined(separator: "\n"))
        let endpos = try db.query("SELECT pg_current_wal_lsn()")
        var exits: [Tool: [ChildExit]] = [:]
        for run in 1...runs {
            for tool in Tool.allCases {
                let arguments: [String]
                switch tool {
                case .rowcast:
                    arguments = ["tail", "--mode", "replication", "--slot", slot(tool, run), "--publication", "pub_\(table)", "--endpos", endpos,
                        "--db", db.url, "--log-level", "warning"]
                case .pgoutput:
                    arguments = ["-d", db.url, "--slot", slot(tool, run), "--start", "--endpos", endpos, "-o", "proto_version=1",
                        "-o", "publication_names=pub_\(table)", "-f", "/dev/null"]
                case .wal2json:
                    arguments = ["-d", db.url, "--slot", slot(tool, run), "--start", "--endpos", endpos, "-o", "format-version=2",
                        "-o", "add-tables=public.\(table)", "-f", "/dev/null"]
                }
                let program = tool == .rowcast ? bench.tools.rowcast : bench.tools.pgRecvlogical
                exits[tool, default: []].append(try bench.timed(tool.label, program, arguments, within: 1800))
            }
        }
        for tool in [Tool.pgoutput, .rowcast, .wal2json] {
            let labels = ["table": table, "rows": String(rows), "tool": tool.label]
            let ran = exits[tool] ?? []
            bench.record(key, "seconds", labels, unit: "s", ran.map(\.seconds))
            bench.record(key, "cpu", labels, unit: "s", ran.map(\.cpuSeconds))
            bench.record(key, "peak_rss", labels, unit: "KB", ran.map { Double($0.peakRSSKilobytes) })
        }
        try db.query("DROP TABLE \(table)")
        for run in 1...runs {
            for tool in Tool.allCases { try db.query("SELECT pg_drop_replication_slot('\(slot(tool, run))')") }
        }
    }
}
