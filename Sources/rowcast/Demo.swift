import ArgumentParser
import Foundation
import Hummingbird
import Logging
import RowcastCore
import RowcastPostgres
import RowcastServer
import ServiceLifecycle

/// `rowcast demo`: everything in one command, on a throwaway PostgreSQL.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a throwaway PostgreSQL, a writer and the demo page; Ctrl-C removes it all.",
        discussion: """
            Creates realtime(title varchar(128)), captures it in the chosen mode (replication: \
            a publication and a slot, decoded from the WAL; trigger: the rowcast trigger and \
            LISTEN), inserts a row every second, and serves the live page.

            Example:
              rowcast demo --port 8080
              rowcast demo --mode trigger
            """
    )

    @Option(name: .long, help: ArgumentHelp("Capture mode: trigger or replication (default: replication, as serve).", valueName: "mode"))
    var mode: String?

    @Option(name: .long, help: ArgumentHelp("Port to serve the page on.", valueName: "port"))
    var port: Int?

    @Option(name: .long, help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: String?

    func run() async throws {
        let logger = try ConnectionOptions.parse(logLevel.map { ["--log-level", $0] } ?? []).bootstrapLogging()
        let port = port ?? 8080
        let mode = try ModeOption(mode: mode).resolve(default: .replication)
        logger.info("starting a throwaway PostgreSQL")
        let cluster: ThrowawayCluster
        do {
            cluster = try ThrowawayCluster.start()
        } catch {
            throw CommandFailure.failed("\(error)")
        }
        defer {
            cluster.destroy()
            logger.info("removed the throwaway PostgreSQL")
        }
        let settings = ConnectionSettings(conninfo: cluster.url)
        let realtime = TableName(schema: "public", name: "realtime")
        let capture: any CaptureSource
        do {
            let database = try PostgresConnection(settings)
            try database.execute("CREATE TABLE realtime (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title varchar(128))")
            switch mode {
            case .trigger:
                try TriggerSetup.install(on: database, tables: [realtime])
                capture = try TriggerCapture.connect(configuration: .init(connection: settings, tables: [realtime]), logger: logger)
            case .replication:
                capture = try ReplicationCapture.connect(configuration: .init(connection: settings, tables: [realtime]), logger: logger)
            }
        } catch {
            throw CommandFailure.failed("demo set-up failed: \(error)")
        }
        let url = cluster.url
        try await runServer(host: "127.0.0.1", port: port) {
            try await buildApplication(
                options: ServerOptions(port: port, slot: mode == .replication ? "rowcast" : nil),
                source: capture,
                services: [DemoWriter(settings: settings, logger: logger)],
                onServerRunning: { port in
                    print("rowcast demo: \(mode.rawValue) mode; open http://127.0.0.1:\(port)/  (database: \(url); Ctrl-C to stop)")
                    fflush(nil)
                },
                logger: logger
            ).runUntilSignalled()
        }
    }
}

/// Inserts a row into `realtime` every second.
struct DemoWriter: Service {
    let settings: ConnectionSettings
    let logger: Logger

    func run() async {
        let stop = StopSignal()
        let settings = settings
        let logger = logger
        await withGracefulShutdownHandler {
            await runBlockingOnThread(named: "rowcast-demo-writer", stop: stop) { stop in
                var number = 0
                var connection: PostgresConnection?
                while stop.sleep(seconds: 1) {
                    number += 1
                    do {
                        let live = try connection ?? PostgresConnection(settings)
                        connection = live
                        try live.execute("INSERT INTO realtime (title) VALUES ($1)", ["hello #\(number)"])
                    } catch {
                        logger.warning("demo writer: \(error)")
                        connection = nil
                    }
                }
            }
        } onGracefulShutdown: {
            stop.stop()
        }
    }
}
