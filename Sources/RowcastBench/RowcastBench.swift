import ArgumentParser

/// Helpers for `make bench` (scripts/bench.sh): the baseline broadcaster and the load
/// client. Not part of the product.
@main
struct RowcastBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rowcast-bench",
        abstract: "Benchmark helpers for rowcast.",
        subcommands: [Baseline.self, Load.self]
    )
}
