import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import HummingbirdWSTesting
import RowcastCore
import RowcastPostgres
import RowcastServer
import RowcastTestSupport
import Testing

/// The one server test with PostgreSQL behind it: a real TriggerCapture on the test
/// cluster, through the server, to a WebSocket client. Every other server test runs
/// over a ScriptedCapture; capture itself is tested in RowcastPostgresTests.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct LiveDatabaseSmokeTests {
    @Test func anInsertOnTheClusterReachesAWebSocketClient() async throws {
        try await within(150, "an insert on the cluster to reach a WebSocket client") {
            let url = try #require(LiveDatabase.url)
            let table = TableName(schema: "public", name: LiveDatabase.uniqueName("ws"))
            let capture = try await onThread("a trigger capture of \(table)", within: 60) {
                let database = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
                try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, title text)")
                try TriggerSetup.install(on: database, tables: [table])
                return try TriggerCapture.connect(
                    configuration: .init(connection: ConnectionSettings(conninfo: url), tables: [table]),
                    logger: ScriptedServer.logger
                )
            }
            let app = buildApplication(options: ServerOptions(port: 0), source: capture, logger: ScriptedServer.logger)
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    let connected = ScriptedServer.object(try await messages.next())
                    #expect(connected?["event"] as? String == "connected")
                    #expect((connected?["data"] as? [String: Any])?["mode"] as? String == "trigger")
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed")

                    try await LiveDatabase.psql(url, "INSERT INTO \(table.quoted) VALUES (7, 'hello')")
                    ScriptedServer.expectTriggerInsert(try await messages.next(), table: table, id: 7, title: "hello")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }
}
