import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import HummingbirdWSTesting
import RowcastCore
import Logging
import RowcastPostgres
import RowcastServer
import RowcastTestSupport
import Synchronization
import Testing

/// `subscribed` before any record, and subscriptions to tables the server does not capture.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["ROWCAST_TEST_DATABASE_URL"] != nil, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct SubscribeEdgeTests {
    @Test func subscribedCarriesACursorBeforeTheFirstRecordAndResumingFromItMissesNothing() async throws {
        try await within(150, "subscribed carries a cursor before the first record and resuming from it misses nothing") {
            let (app, table) = try WebSocketTests.makeApp()
            _ = try await app.test(.live) { client in
                let cursor = Mutex<String?>(nil)
                // Subscribe, then leave before anything is published.
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    let subscribed = WebSocketTests.object(try await messages.next())
                    #expect(subscribed?["event"] as? String == "subscribed")
                    cursor.withLock { $0 = (subscribed?["data"] as? [String: Any])?["cursor"] as? String }
                    try await outbound.close(.normalClosure, reason: nil)
                }
                let since = try #require(cursor.withLock { $0 }, "subscribed names a cursor even before the first record")
                try await WebSocketTests.insert("INSERT INTO \(table.quoted) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
                // Wait until the server has the rows, then come back with the cursor.
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"since":"\#(since)"}}"#))
                    var ids: [Int] = []
                    while ids.count < 3, let frame = WebSocketTests.object(try await messages.next()) {
                        if frame["event"] as? String == "error" { Issue.record("error: \(frame)"); break }
                        if let row = (frame["data"] as? [String: Any])?["row"] as? [String: Any], let id = row["id"] as? Int { ids.append(id) }
                    }
                    #expect(ids == [1, 2, 3])
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func aTableThatIsNotCapturedIsAnErrorAndTheConnectionStaysOpen() async throws {
        try await within(150, "a table that is not captured is an error and the connection stays open") {
            let (app, table) = try WebSocketTests.makeApp()
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)_typo"]}}"#))
                    let error = WebSocketTests.object(try await messages.next())
                    #expect(error?["event"] as? String == "error")
                    let data = error?["data"] as? [String: Any]
                    #expect(data?["code"] as? String == "unknown_table")
                    #expect((data?["message"] as? String)?.contains("\(table.description)_typo") == true)
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"]}}"#))
                    #expect(WebSocketTests.object(try await messages.next())?["event"] as? String == "subscribed")
                    try await WebSocketTests.insert("INSERT INTO \(table.quoted) VALUES (1, 'still open')")
                    #expect(WebSocketTests.object(try await messages.next())?["event"] as? String == "update")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func aFilterOnAColumnTheTableLacksOrAValueThatCannotCompareIsAnError() async throws {
        try await within(150, "a filter on a column the table lacks or a value that cannot compare is an error") {
            let (app, table) = try WebSocketTests.makeApp()
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    for (filter, mentions) in [("nope=eq.1", "column \"nope\""), ("id=gt.abc", "id is a number"), ("id=in.(1,x)", "id is a number")] {
                        try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"],"filter":"\#(filter)"}}"#))
                        let error = WebSocketTests.object(try await messages.next())
                        let data = error?["data"] as? [String: Any]
                        #expect(data?["code"] as? String == "bad_filter", "\(filter)")
                        #expect((data?["message"] as? String)?.contains(mentions) == true, "\(filter): \(data?["message"] ?? "")")
                    }
                    // A filter the column can answer still subscribes.
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"filter":"id=gt.1"}}"#))
                    #expect(WebSocketTests.object(try await messages.next())?["event"] as? String == "subscribed")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func aTableSetUpWhileServingIsCapturedOnceItsFirstChangeArrives() async throws {
        try await within(150, "a table set up while serving is captured once its first change arrives") {
            // Every table with the trigger, as `serve --mode trigger` without --table.
            let url = WebSocketTests.url
            let database = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
            try TriggerSetup.install(on: database, tables: [])  // the function, on no table yet
            let logger = { var logger = Logger(label: "rowcast-tests"); logger.logLevel = .warning; return logger }()
            let capture = try TriggerCapture.connect(configuration: .init(connection: ConnectionSettings(conninfo: url)), logger: logger)
            // It hears every trigger table of the shared test database, thousands of rows
            // from other tests in bursts: a queue that holds them, or a burst while this
            // client is busy cuts it off for being slow (what it tests is not that).
            var options = ServerOptions(port: 0)
            options.clientQueueLimit = 1 << 20
            options.clientQueueBytes = 1 << 30
            let app = buildApplication(options: options, source: capture, logger: logger)
            let late = TableName(schema: "public", name: "late_" + String(UInt32.random(in: 0...UInt32.max), radix: 36))
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    _ = try await messages.next()
                    // Set up after serve started, then changed.
                    try await WebSocketTests.insert(
                        "CREATE TABLE \(late.quoted) (id int PRIMARY KEY, n int); SELECT 1;"
                    )
                    try await onThread("the trigger on \(late)", within: 60) { try TriggerSetup.install(on: database, tables: [late]) }
                    try await WebSocketTests.insert("INSERT INTO \(late.quoted) VALUES (1, 5)")
                    while let frame = WebSocketTests.object(try await messages.next()) {
                        if (frame["data"] as? [String: Any])?["table"] as? String == late.name { break }
                    }
                    // Now it is captured: subscribing to it, with a filter on its columns, works.
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(late.description)"],"filter":"n=gt.1"}}"#))
                    var reply = WebSocketTests.object(try await messages.next())
                    while reply?["event"] as? String == "update" { reply = WebSocketTests.object(try await messages.next()) }
                    #expect(reply?["event"] as? String == "subscribed", "\(reply ?? [:])")
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(late.description)"],"filter":"nope=eq.1"}}"#))
                    reply = WebSocketTests.object(try await messages.next())
                    while reply?["event"] as? String == "update" { reply = WebSocketTests.object(try await messages.next()) }
                    #expect((reply?["data"] as? [String: Any])?["code"] as? String == "bad_filter", "its columns are known too")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func eventsWithLastOpenOnTheNewestRecords() async throws {
        try await within(150, "events with last open on the newest records") {
            let (app, table) = try WebSocketTests.makeApp()
            _ = try await app.test(.live) { client in
                let port = try #require(client.port)
                try await WebSocketTests.insert("INSERT INTO \(table.quoted) VALUES (1, 'a'); INSERT INTO \(table.quoted) VALUES (2, 'b'); INSERT INTO \(table.quoted) VALUES (3, 'c')")
                // Wait until the server holds all three, then ask for the last two.
                let deadline = Date().addingTimeInterval(60)
                var captured = 0
                while captured < 3, Date() < deadline {
                    let response = try await onThread("an HTTP exchange with the test server", within: 90) { try EventStreamClient(port: port, path: "/status").response() }
                    let body = response.components(separatedBy: "\r\n\r\n").last ?? ""
                    captured = ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any])?["records_captured"] as? Int ?? 0
                    if captured < 3 { try await pause(for: .milliseconds(50)) }
                }
                #expect(captured == 3)
                let stream = try EventStreamClient(port: port, path: "/events?tables=\(table.name)&last=2")
                #expect(try await onThread("an HTTP exchange with the test server", within: 90) { try stream.readHead() }.hasPrefix("HTTP/1.1 200"))
                let events = try await onThread("an HTTP exchange with the test server", within: 90) { try stream.events(2) }
                let ids = events.compactMap { event in
                    ((try? JSONSerialization.jsonObject(with: Data(event.data.utf8))) as? [String: Any]).flatMap { ($0["row"] as? [String: Any])?["id"] as? Int }
                }
                #expect(ids == [2, 3])
                stream.disconnect()
            }
        }
    }
}
