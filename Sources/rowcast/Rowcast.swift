import ArgumentParser

/// The `rowcast` command.
struct Rowcast: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rowcast",
        abstract: "Stream PostgreSQL row changes to browsers as JSON over WebSocket.",
        discussion: """
            Connection: --db CONNINFO (a libpq URI or key=value string), else DATABASE_URL, \
            else libpq's PG* variables, exactly as psql connects. Every flag also reads \
            ROWCAST_<FLAG> from the environment.

            Exit codes: 0 success, 1 a failed check or missing object, 2 bad usage, 3 cannot connect.
            """,
        version: "0.1.0",
        subcommands: [Serve.self, Tail.self, Setup.self, Teardown.self, Slot.self, Doctor.self, Demo.self, DevCluster.self, DevEnvironment.self]
    )
}
