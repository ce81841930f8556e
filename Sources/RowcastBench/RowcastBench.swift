import ArgumentParser

/// `make bench`: `run` measures (a throwaway cluster, the sections, JSON lines out),
/// `report` turns the results into the tables of Docs/benchmarks.md, and `baseline`
/// and `load` are the bare broadcaster and the load client that `run` starts. Not part
/// of the product.
@main
struct RowcastBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rowcast-bench",
        abstract: "Benchmark helpers for rowcast.",
        subcommands: [Run.self, Report.self, Baseline.self, Load.self, Attack.self, SnapshotRead.self]
    )
}
