import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import HummingbirdWSTesting
import RowcastCore
import RowcastServer
import RowcastTestSupport
import Synchronization
import Testing

/// `subscribed` before any record, and subscriptions to tables the server does not capture.
@Suite(.timeLimit(.minutes(3)))
struct SubscribeEdgeTests {
    @Test func subscribedCarriesACursorBeforeTheFirstRecordAndResumingFromItMissesNothing() async throws {
        try await within(150, "subscribed carries a cursor before the first record and resuming from it misses nothing") {
            let (app, capture) = ScriptedServer.make()
            let table = WebSocketTests.table
            _ = try await app.test(.live) { client in
                let cursor = Mutex<String?>(nil)
                // Subscribe, then leave before anything is published.
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    let subscribed = ScriptedServer.object(try await messages.next())
                    #expect(subscribed?["event"] as? String == "subscribed")
                    cursor.withLock { $0 = (subscribed?["data"] as? [String: Any])?["cursor"] as? String }
                    try await outbound.close(.normalClosure, reason: nil)
                }
                let since = try #require(cursor.withLock { $0 }, "subscribed names a cursor even before the first record")
                try capture.commit((1...3).map { .insert(table, row: ScriptedServer.row($0, ["a", "b", "c"][$0 - 1])) })
                // Wait until the server has the rows, then come back with the cursor.
                try await capture.waitUntilDelivered()
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"since":"\#(since)"}}"#))
                    var ids: [Int] = []
                    while ids.count < 3, let frame = ScriptedServer.object(try await messages.next()) {
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
            let (app, capture) = ScriptedServer.make()
            let table = WebSocketTests.table
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)_typo"]}}"#))
                    let error = ScriptedServer.object(try await messages.next())
                    #expect(error?["event"] as? String == "error")
                    let data = error?["data"] as? [String: Any]
                    #expect(data?["code"] as? String == "unknown_table")
                    #expect((data?["message"] as? String)?.contains("\(table.description)_typo") == true)
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"]}}"#))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed")
                    try capture.commit(.insert(table, row: ScriptedServer.row(1, "still open")))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "update")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func aFilterOnAColumnTheTableLacksOrAValueThatCannotCompareIsAnError() async throws {
        try await within(150, "a filter on a column the table lacks or a value that cannot compare is an error") {
            let (app, _) = ScriptedServer.make()
            let table = WebSocketTests.table
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    for (filter, mentions) in [("nope=eq.1", "column \"nope\""), ("id=gt.abc", "id is a number"), ("id=in.(1,x)", "id is a number")] {
                        try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"],"filter":"\#(filter)"}}"#))
                        let error = ScriptedServer.object(try await messages.next())
                        let data = error?["data"] as? [String: Any]
                        #expect(data?["code"] as? String == "bad_filter", "\(filter)")
                        #expect((data?["message"] as? String)?.contains(mentions) == true, "\(filter): \(data?["message"] ?? "")")
                    }
                    // A filter the column can answer still subscribes.
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"filter":"id=gt.1"}}"#))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func aTableSetUpWhileServingIsCapturedOnceItsFirstChangeArrives() async throws {
        try await within(150, "a table set up while serving is captured once its first change arrives") {
            // As `serve --mode trigger` without --table: every table with the trigger at
            // start, and any set up later from its first change on.
            let (app, capture) = ScriptedServer.make()
            let late: TableName = "public.late"
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    // Not set up yet: not captured.
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(late.description)"]}}"#))
                    #expect((ScriptedServer.object(try await messages.next())?["data"] as? [String: Any])?["code"] as? String == "unknown_table")
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    _ = try await messages.next()
                    // Set up after serve started (CREATE TABLE late (id int PRIMARY KEY, n int)), then changed.
                    capture.setUp(late, columns: ["id": .number, "n": .number])
                    try capture.commit(.insert(late, row: #"{"id":1,"n":5}"#))
                    while let frame = ScriptedServer.object(try await messages.next()) {
                        if (frame["data"] as? [String: Any])?["table"] as? String == late.name { break }
                    }
                    // Now it is captured: subscribing to it, with a filter on its columns, works.
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(late.description)"],"filter":"n=gt.1"}}"#))
                    var reply = ScriptedServer.object(try await messages.next())
                    while reply?["event"] as? String == "update" { reply = ScriptedServer.object(try await messages.next()) }
                    #expect(reply?["event"] as? String == "subscribed", "\(reply ?? [:])")
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(late.description)"],"filter":"nope=eq.1"}}"#))
                    reply = ScriptedServer.object(try await messages.next())
                    while reply?["event"] as? String == "update" { reply = ScriptedServer.object(try await messages.next()) }
                    #expect((reply?["data"] as? [String: Any])?["code"] as? String == "bad_filter", "its columns are known too")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func eventsWithLastOpenOnTheNewestRecords() async throws {
        try await within(150, "events with last open on the newest records") {
            let (app, capture) = ScriptedServer.make()
            let table = WebSocketTests.table
            _ = try await app.test(.live) { client in
                let port = try #require(client.port)
                try capture.commit((1...3).map { .insert(table, row: ScriptedServer.row($0, ["a", "b", "c"][$0 - 1])) })
                // Wait until the server holds all three, then ask for the last two.
                try await capture.waitUntilDelivered()
                let response = try await onThread("an HTTP exchange with the test server", within: 90) { try EventStreamClient(port: port, path: "/status").response() }
                let body = response.components(separatedBy: "\r\n\r\n").last ?? ""
                let captured = ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any])?["records_captured"] as? Int
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
