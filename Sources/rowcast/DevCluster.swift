import ArgumentParser
import Foundation
import RowcastPostgres

/// `rowcast dev-cluster`: the throwaway PostgreSQL that `make test` runs the suite against.
struct DevCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-cluster",
        abstract: "Start or stop a throwaway PostgreSQL (used by make test).",
        shouldDisplay: false,
        subcommands: [Start.self, Stop.self]
    )

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a cluster; prints its folder and URL on one line.")

        @Option(name: .long, help: "wal_level: logical or replica.")
        var walLevel = "logical"

        @Option(name: .long, help: "Another setting, name=value (repeatable).")
        var setting: [String] = []

        func run() throws {
            do {
                let cluster = try ThrowawayCluster.start(walLevel: walLevel, settings: setting.map { $0.replacingOccurrences(of: "=", with: " = ") })
                print(cluster.directory.path, cluster.url)
            } catch {
                throw CommandFailure.failed("\(error)")
            }
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a cluster and delete its folder.")

        @Argument(help: "The folder that start printed.")
        var directory: String

        func run() throws {
            do {
                try ThrowawayCluster.existing(at: URL(fileURLWithPath: directory)).destroy()
            } catch {
                throw CommandFailure.failed("\(error)")
            }
        }
    }
}
