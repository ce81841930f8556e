import Foundation

/// The generated regions of Docs/benchmarks.md, from a run's results: the header (when
/// and on what) and one region per section that ran, each its heading, its table and
/// the lines that say how it was measured. Derived figures (rows/s, × floor, KB per
/// client) are computed here from the medians.
enum Tables {
    static func render(_ results: Results) throws -> [Region] {
        var regions: [Region] = []
        if let info = results.info { regions.append(Region(key: "header", text: header(info))) }
        let renderers: [(String, (Results) throws -> String)] = [
            (Drain.key, drain), (FanOut.key, fanOut), (TriggerCost.key, trigger), (BigRow.key, bigRow), (Nodes.key, nodes), (Connections.key, connections),
            (Perimeter.key, perimeter), (Snapshot.key, snapshot), (RowRules.key, rowRules),
        ]
        for (key, render) in renderers where results.measurements.contains(where: { $0.section == key }) {
            regions.append(Region(key: key, text: try render(results)))
        }
        return regions
    }

    static func header(_ info: RunInfo) -> String {
        """
        Written by `make bench` (rowcast-bench) on \(info.date). Release builds;
        one throwaway PostgreSQL \(info.postgres) cluster with `wal_level=logical` on the same machine.

        Machine: \(info.cores) cores (\(info.processor)),
        \(info.memoryGiB) GiB memory, Linux \(info.kernel).
        """
    }

    static func drain(_ results: Results) throws -> String {
        let key = Drain.key
        let runs = results.measurements.first { $0.section == key }?.runs ?? 0
        var lines = [
            "## 1. Drain throughput: a backlog per table shape (median of \(runs) runs)", "",
            "| table | rows | tool | seconds | rows/s | × floor | tool CPU | peak RSS |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for table in results.labelValues(key, "table") {
            let floor = try results.one(key, "seconds", ["table": table, "tool": Drain.Tool.pgoutput.label]).median
            for tool in [Drain.Tool.pgoutput, .rowcast, .wal2json] {
                let labels = ["table": table, "tool": tool.label]
                let seconds = try results.one(key, "seconds", labels)
                let rows = Double(seconds.labels["rows"] ?? "") ?? 0
                let cpu = try results.one(key, "cpu", labels).median
                let rss = try results.one(key, "peak_rss", labels).maximum
                lines.append(
                    "| \(table) | \(Int(rows)) | \(tool.label) | \(fixed(seconds.median)) | \(whole(rows / seconds.median)) | \(fixed(seconds.median / floor)) "
                        + "| \(fixed(cpu)) s | \(megabytes(rss)) MB |"
                )
            }
        }
        return lines.joined(separator: "\n")
    }

    static func fanOut(_ results: Results) throws -> String {
        let key = FanOut.key
        var lines = [
            "## 2. Fan-out: frames delivered per second and commit-to-client latency (\(seconds(results)) s each)", "",
            "| server | clients | rows/s | frames/s | p50 ms | p99 ms | max ms | server CPU | load-client CPU | server peak RSS |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for measured in results.find(key, "frames_per_s") {
            let labels = measured.labels
            func median(_ name: String) throws -> Double { try results.one(key, name, labels).median }
            lines.append(
                "| \(labels["server"] ?? "") | \(whole(try median("connected"))) | \(labels["rate"] ?? "") | \(whole(measured.median)) "
                    + "| \(fixed(try median("p50"))) | \(fixed(try median("p99"))) | \(fixed(try median("max"))) "
                    + "| \(whole(try median("server_cpu")))% | \(whole(try median("load_cpu")))% | \(megabytes(try median("server_peak_rss"))) MB |"
            )
        }
        return lines.joined(separator: "\n")
    }

    static func trigger(_ results: Results) throws -> String {
        let key = TriggerCost.key
        let runs = results.measurements.first { $0.section == key }?.runs ?? 0
        var header = "| trigger |"
        for shape in TriggerCost.shapes { header += " \(shape.label) | × none |" }
        var lines = [
            "## 3. Trigger mode's cost on the writer: pgbench, 4 clients, \(seconds(results)) s per figure (median of \(runs))", "",
            "Transactions/s of three statement shapes, and the ratio to the same table without a trigger.", "",
            header, "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for (_, label) in TriggerCost.variants {
            var line = "| \(label) |"
            for shape in TriggerCost.shapes {
                let tps = try results.one(key, "tps", ["trigger": label, "statement": shape.label]).median
                let none = try results.one(key, "tps", ["trigger": "none", "statement": shape.label]).median
                line += " \(whole(tps)) | \(fixed(tps / none)) |"
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    static func bigRow(_ results: Results) throws -> String {
        let key = BigRow.key
        return """
            ## 4. Peak RSS with one 64 MB row

            - `rowcast tail`: peak RSS \(megabytes(try results.one(key, "tail_peak_rss").median)) MB (\(fixed(try results.one(key, "tail_seconds").median)) s)
            - `rowcast serve` sending it to one client: peak RSS \(megabytes(try results.one(key, "serve_peak_rss").median)) MB, \
            \(megabytes(try results.one(key, "serve_rss_after").median)) MB afterwards (the frame stays in the resume window)
            """
    }

    static func nodes(_ results: Results) throws -> String {
        let key = Nodes.key
        let drains = results.find(key, "seconds")
        var lines = [
            "## 5. Several nodes: each with its own slot (\(drains.first?.labels["rows"] ?? "?")-row backlog)", "",
            "k `rowcast tail` processes drain the same backlog at once, each from its own slot, as k",
            "`serve` nodes would: wall time until all are done, and the CPU the walsenders used.", "",
            "| slots | seconds | rows/s per slot | walsender CPU s (all) | per slot |",
            "| --- | --- | --- | --- | --- |",
        ]
        for measured in drains {
            let slots = Double(measured.labels["slots"] ?? "") ?? 1
            let rows = Double(measured.labels["rows"] ?? "") ?? 0
            let cpu = try results.one(key, "walsender_cpu", measured.labels).median
            lines.append("| \(Int(slots)) | \(fixed(measured.median)) | \(whole(rows / measured.median)) | \(fixed(cpu)) | \(fixed(cpu / slots)) |")
        }
        let lag = try results.one(key, "lag")
        let records = try results.one(key, "window_records").median
        let age = Double(lag.labels["window_age"] ?? "") ?? 60
        lines += [
            "",
            "WAL kept by `serve`'s slot for its resume window: \(lag.labels["rate"] ?? "?") single-row transactions/s for \(lag.labels["seconds"] ?? "?") s,",
            "`--resume-window 100000 --resume-window-age \(Int(age))` (so age is the bound; the window is kept in its log on disk):",
            "- window: \(whole(records)) records; slot holds back \(String(format: "%.1f", lag.median / 1_048_576)) MB of WAL (`lag_bytes`)",
        ]
        let costs = results.find(key, "log_ns_per_record")
        if !costs.isEmpty {
            lines += [
                "",
                "What the window log costs per record (\(costs.first?.labels["records"] ?? "?") records appended in batches of 500, one flush each):", "",
                "| row | --window-fsync | wall ns/record | CPU ns/record | bytes/record on disk |",
                "| --- | --- | --- | --- | --- |",
            ]
            for cost in costs {
                let cpu = try results.one(key, "log_cpu_ns_per_record", cost.labels).median
                let bytes = try results.one(key, "log_bytes_per_record", cost.labels).median
                lines.append("| \(cost.labels["shape"] ?? "?") | \(cost.labels["fsync"] ?? "?") | \(whole(cost.median)) | \(whole(cpu)) | \(whole(bytes)) |")
            }
        }
        return lines.joined(separator: "\n")
    }

    static func connections(_ results: Results) throws -> String {
        let key = Connections.key
        let serve = ["server": "rowcast"]
        let base = ["server": "baseline"]
        let clients = try results.one(key, "rss_before", serve).labels["clients"] ?? "?"
        func memory(_ labels: [String: String]) throws -> (before: Int, with: Int, perClient: Int) {
            let before = try results.one(key, "rss_before", labels).median
            let with = try results.one(key, "rss_with", labels).median
            let count = max(1, try results.one(key, "idle_connected", labels).median)
            return (Int((before / 1024).rounded()), Int((with / 1024).rounded()), Int(((with - before) / count).rounded(.down)))
        }
        let served = try memory(serve)
        let bare = try memory(base)
        let subscribed = whole(try results.one(key, "idle_subscribed", serve).median)
        let allSubscribed = fixed(try results.one(key, "idle_all_subscribed", serve).median)
        let burst = try results.one(key, "burst_all_connected")
        return """
            ## 6. Connections: idle clients' memory, and a burst of arrivals

            - \(clients) idle WebSocket clients, each subscribed (`rowcast-bench load --clients \(clients) --subscribe`, \(subscribed) subscribed): \
            serve's RSS \(served.before) MB before, \(served.with) MB with them, **\(served.perClient) KB per client**; all subscribed \(allSubscribed) s after the first connect
            - the same \(clients) idle clients on the bare Hummingbird WebSocket server (`rowcast-bench baseline`): \(bare.before) MB before, \(bare.with) MB with them, \
            **\(bare.perClient) KB per client**
            - \(grouped(burst.labels["clients"] ?? "?")) clients connecting at once: all upgraded \(fixed(burst.median)) s and all `subscribed` \
            \(fixed(try results.one(key, "burst_all_subscribed").median)) s after the first connect
            """
    }

    static func perimeter(_ results: Results) throws -> String {
        let key = Perimeter.key
        var lines = [
            "## 7. Perimeter: \(Perimeter.steady) steady clients beside each attack (\(Perimeter.rate) rows/s, \(seconds(results)) s each)", "",
            "| attack | hostile connections | frames/s | p50 ms | p99 ms | p99 × alone | max ms | server CPU | serve RSS before | during |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        let alone = try results.one(key, "p99", ["attack": "none"]).median
        for measured in results.find(key, "frames_per_s") {
            let labels = measured.labels
            func median(_ name: String) throws -> Double { try results.one(key, name, labels).median }
            let p99 = try median("p99")
            lines.append(
                "| \(labels["attack"] ?? "") | \(grouped(labels["clients"] ?? "")) | \(whole(measured.median)) | \(fixed(try median("p50"))) "
                    + "| \(fixed(p99)) | \(fixed(p99 / alone)) | \(fixed(try median("max"))) | \(whole(try median("server_cpu")))% "
                    + "| \(megabytes(try median("rss_before"))) MB | \(megabytes(try median("rss_during"))) MB |"
            )
        }
        return lines.joined(separator: "\n")
    }

    // MARK: - Formats

    /// Two decimals: seconds, ratios, milliseconds.
    static func fixed(_ value: Double) -> String { String(format: "%.2f", value) }

    /// No decimals: rates, counts, percentages.
    static func whole(_ value: Double) -> String { value.isFinite ? String(format: "%.0f", value) : "-" }

    /// Kilobytes as whole megabytes.
    static func megabytes(_ kilobytes: Double) -> String { whole(kilobytes / 1024) }

    /// "1000" as "1,000".
    static func grouped(_ number: String) -> String {
        guard let value = Int(number), value >= 1000 else { return number }
        return grouped(String(value / 1000)) + "," + String(format: "%03d", value % 1000)
    }

    /// The run's seconds per figure, "10" rather than "10.0".
    static func seconds(_ results: Results) -> String { Measurement.number(results.info?.seconds ?? 0) }

    static func snapshot(_ results: Results) throws -> String {
        let key = Snapshot.key
        var lines = [
            "## 8. A snapshot of a million rows to one client (median of 3)", "",
            "| reader | rows | first row | rows/s |",
            "| --- | --- | --- | --- |",
        ]
        for reader in results.labelValues(key, "reader") {
            let labels = ["reader": reader]
            let rows = try results.one(key, "rows", labels).median
            let first = try results.one(key, "first_row_ms", labels).median
            let rate = try results.one(key, "rows_per_second", labels).median
            lines.append("| \(reader) | \(whole(rows)) | \(fixed(first)) ms | \(whole(rate)) |")
        }
        if let rss = try? results.one(key, "serve_peak_rss", [:]).maximum {
            lines += ["", "`rowcast serve`'s peak RSS over the section: \(megabytes(rss)) MB."]
        }
        return lines.joined(separator: "\n")
    }

    static func rowRules(_ results: Results) throws -> String {
        let key = RowRules.key
        var lines = [
            "## 9. Row rules: \(grouped(String(RowRules.tenants))) clients with a tenant each (\(grouped(String(RowRules.rate))) inserts/s over the tenants, \(seconds(results)) s each)", "",
            "| clients | connected | frames/s | p50 ms | p99 ms | server CPU | CPU per change | serve peak RSS |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for load in results.labelValues(key, "load") {
            let labels = ["load": load]
            func median(_ name: String) throws -> Double { try results.one(key, name, labels).median }
            lines.append(
                "| \(load) | \(whole(try median("connected"))) | \(whole(try median("frames_per_s"))) | \(fixed(try median("p50"))) | \(fixed(try median("p99"))) "
                    + "| \(whole(try median("server_cpu")))% | \(whole(try median("cpu_per_change"))) µs | \(megabytes(try median("server_peak_rss"))) MB |"
            )
        }
        return lines.joined(separator: "\n")
    }
}
