import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import HummingbirdWSTesting
import NIOCore
import RowcastCore
import RowcastServer
import RowcastTestSupport
import Synchronization
import Testing

/// /ws, /events, the page, /healthz and /status, over a scripted capture.
@Suite(.timeLimit(.minutes(3)))
struct WebSocketTests {
    static let table: TableName = "public.items"

    @Test func handshakeThenUpdatesForAnInsert() async throws {
        try await within(150, "handshake then updates for an insert") {
            let (app, capture) = ScriptedServer.make()
            let table = Self.table
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    let connected = ScriptedServer.object(try await messages.next())
                    #expect(connected?["event"] as? String == "connected")
                    let data = connected?["data"] as? [String: Any]
                    #expect(data?["connected"] as? Bool == true)
                    #expect(data?["mode"] as? String == "trigger")

                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed")

                    try capture.commit(.insert(table, row: ScriptedServer.row(7, "hello")))
                    ScriptedServer.expectTriggerInsert(try await messages.next(), table: table, id: 7, title: "hello")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func malformedFramesGetAnErrorAndTheConnectionStaysOpen() async throws {
        try await within(150, "malformed frames get an error and the connection stays open") {
            let (app, capture) = ScriptedServer.make()
            let table = Self.table
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    for (frame, code) in [("not json", "bad_frame"), (#"{"data":{}}"#, "bad_frame"), (#"{"event":"dance","data":{}}"#, "unknown_event")] {
                        try await outbound.write(.text(frame))
                        let error = ScriptedServer.object(try await messages.next())
                        #expect(error?["event"] as? String == "error")
                        #expect((error?["data"] as? [String: Any])?["code"] as? String == code)
                    }
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed")
                    try capture.commit(.insert(table, row: ScriptedServer.row(1, "still open")))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "update")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func subscribeFiltersByTableOpAndRowAndAnswersErrorsInPlace() async throws {
        try await within(150, "subscribe filters by table op and row and answers errors in place") {
            let (app, capture) = ScriptedServer.make()
            let table = Self.table
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    for (frame, code) in [
                        (#"{"event":"subscribe","data":{"filter":"id=like.1"}}"#, "bad_filter"),
                        (#"{"event":"subscribe","data":{"ops":["upsert"]}}"#, "bad_subscription"),
                        (#"{"event":"subscribe","data":{"tables":"all"}}"#, "bad_subscription"),
                        (#"{"event":"subscribe","data":{"since":"t0000000000000001.0000000000000001"}}"#, "cursor_expired"),
                    ] {
                        try await outbound.write(.text(frame))
                        let error = ScriptedServer.object(try await messages.next())
                        #expect(error?["event"] as? String == "error")
                        #expect((error?["data"] as? [String: Any])?["code"] as? String == code, "\(frame)")
                    }
                    let request = #"{"event":"subscribe","data":{"tables":["\#(table.name)"],"ops":["update"],"filter":"id=in.(2,3)"}}"#
                    try await outbound.write(.text(request))
                    let subscribed = ScriptedServer.object(try await messages.next())
                    #expect(subscribed?["event"] as? String == "subscribed")
                    let echo = subscribed?["data"] as? [String: Any]
                    #expect(echo?["tables"] as? [String] == [table.description])
                    #expect(echo?["ops"] as? [String] == ["update"])
                    #expect(echo?["filter"] as? String == "id=in.(2,3)")

                    // INSERT (1, 'a'), (2, 'b'), (3, 'c'); UPDATE SET title = title || '!', in one transaction.
                    let rows = [(1, "a"), (2, "b"), (3, "c")]
                    try capture.commit(
                        rows.map { .insert(table, row: ScriptedServer.row($0.0, $0.1)) }
                            + rows.map { .update(table, row: ScriptedServer.row($0.0, $0.1 + "!"), old: ScriptedServer.row($0.0, $0.1)) }
                    )
                    var ids: [Int] = []
                    for _ in 0..<2 {
                        let update = ScriptedServer.object(try await messages.next())
                        let record = update?["data"] as? [String: Any]
                        #expect(record?["op"] as? String == "update")
                        if let id = (record?["row"] as? [String: Any])?["id"] as? Int { ids.append(id) }
                    }
                    #expect(ids == [2, 3])
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func resumingWithSinceYieldsEveryRecordExactlyOnce() async throws {
        try await within(150, "resuming with since yields every record exactly once") {
            let (app, capture) = ScriptedServer.make()
            let table = Self.table
            _ = try await app.test(.live) { client in
                // First connection: live, sees 1 and 2, then goes away.
                let lastCursor = Mutex<String?>(nil)
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"]}}"#))
                    _ = try await messages.next()
                    try capture.commit(.insert(table, row: ScriptedServer.row(1, "a")), .insert(table, row: ScriptedServer.row(2, "b")))
                    for _ in 0..<2 {
                        let cursor = (ScriptedServer.object(try await messages.next())?["data"] as? [String: Any])?["cursor"] as? String
                        lastCursor.withLock { $0 = cursor }
                    }
                    try await outbound.close(.normalClosure, reason: nil)
                }
                // Missed while away.
                try capture.commit(.insert(table, row: ScriptedServer.row(3, "c")), .insert(table, row: ScriptedServer.row(4, "d")))
                try await capture.waitUntilDelivered()
                let since = try #require(lastCursor.withLock { $0 })
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"],"since":"\#(since)"}}"#))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed")
                    var ids: [Int] = []
                    for _ in 0..<2 {
                        let record = ScriptedServer.object(try await messages.next())?["data"] as? [String: Any]
                        if let id = (record?["row"] as? [String: Any])?["id"] as? Int { ids.append(id) }
                    }
                    #expect(ids == [3, 4], "the missed records, once each")
                    try capture.commit(.insert(table, row: ScriptedServer.row(5, "e")))
                    let live = ScriptedServer.object(try await messages.next())?["data"] as? [String: Any]
                    #expect((live?["row"] as? [String: Any])?["id"] as? Int == 5, "then live, with nothing repeated at the seam")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func serverSentEventsFilterAndResumeWithLastEventID() async throws {
        try await within(150, "server sent events filter and resume with last event i d") {
            let (app, capture) = ScriptedServer.make()
            let table = Self.table
            _ = try await app.test(.live) { client in
                let port = try #require(client.port)
                let path = "/events?tables=\(table.name)&ops=insert"
                let first = try EventStreamClient(port: port, path: path)
                let head = try await onThread("an HTTP exchange with the test server", within: 90) { try first.readHead() }
                #expect(head.hasPrefix("HTTP/1.1 200"))
                #expect(head.lowercased().contains("content-type: text/event-stream"))
                try capture.commit(
                    .insert(table, row: ScriptedServer.row(1, "a")), .insert(table, row: ScriptedServer.row(2, "b")),
                    .update(table, row: ScriptedServer.row(1, "x"), old: ScriptedServer.row(1, "a")),
                    .update(table, row: ScriptedServer.row(2, "x"), old: ScriptedServer.row(2, "b"))
                )
                let events = try await onThread("an HTTP exchange with the test server", within: 90) { try first.events(2) }
                #expect(events.count == 2)
                let ids = events.compactMap(\.id)
                #expect(ids.count == 2 && ids.allSatisfy { Cursor($0) != nil })
                let record = try JSONSerialization.jsonObject(with: Data(events[0].data.utf8)) as? [String: Any]
                #expect(record?["op"] as? String == "insert")
                #expect(record?["cursor"] as? String == ids.first)

                // EventSource reconnects with Last-Event-ID: it gets what came after, once.
                let second = try EventStreamClient(port: port, path: path, headers: ["Last-Event-ID": ids[0]])
                _ = try await onThread("an HTTP exchange with the test server", within: 90) { try second.readHead() }
                let resumed = try await onThread("an HTTP exchange with the test server", within: 90) { try second.events(1) }
                #expect(resumed.map(\.id) == [ids[1]])

                let bad = try EventStreamClient(port: port, path: "/events?filter=id=like.1")
                #expect(try await onThread("an HTTP exchange with the test server", within: 90) { try bad.readHead() }.hasPrefix("HTTP/1.1 400"))
                let expired = try EventStreamClient(port: port, path: "/events", headers: ["Last-Event-ID": "t0000000000000001.0000000000000001"])
                _ = try await onThread("an HTTP exchange with the test server", within: 90) { try expired.readHead() }
                #expect(try await onThread("an HTTP exchange with the test server", within: 90) { try expired.events(1) }.first?.event == "error")
                for stream in [first, second, bad, expired] { stream.disconnect() }
            }
        }
    }

    @Test func onlyAllowedBrowserOriginsMayConnect() async throws {
        try await within(150, "only allowed browser origins may connect") {
            var options = ServerOptions(port: 0)
            options.allowedOrigins = ["http://good.example"]
            let (app, _) = ScriptedServer.make(options: options)
            _ = try await app.test(.live) { client in
                // This client sends an Origin of its own (ws://localhost), which no browser
                // sends: it is let through like a client that sends none.
                #expect(try await client.ws("/ws") { _, outbound, _ in try await outbound.close(.normalClosure, reason: nil) } != nil)
                let port = try #require(client.port)
                let upgrade = ["Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="]
                for (origin, path, status) in [
                    ("http://good.example", "/ws", "101"), ("http://evil.example", "/ws", "400"),
                    ("http://good.example", "/events", "200"), ("http://evil.example", "/events", "403"),
                ] {
                    let headers = path == "/ws" ? upgrade.merging(["Origin": origin]) { $1 } : ["Origin": origin]
                    let request = try EventStreamClient(port: port, path: path, headers: headers)
                    let head = try await onThread("an HTTP exchange with the test server", within: 90) { try request.readHead() }
                    #expect(head.hasPrefix("HTTP/1.1 \(status)"), "\(origin) \(path): \(head.prefix(40))")
                    request.disconnect()
                }
            }
        }
    }

    @Test func healthzAndThePage() async throws {
        try await within(150, "healthz and the page") {
            let (app, _) = ScriptedServer.make()
            try await app.test(.router) { client in
                try await client.execute(uri: "/healthz", method: .get) { response in
                    #expect(response.status == .ok)
                }
                try await client.execute(uri: "/", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body).contains("new WebSocket"))
                }
                try await client.execute(uri: "/status", method: .get) { response in
                    #expect(response.status == .ok)
                    let status = try JSONSerialization.jsonObject(with: Data(String(buffer: response.body).utf8)) as? [String: Any]
                    #expect(status?["mode"] as? String == "trigger")
                    #expect(status?["capture"] as? String == "connected")
                    #expect(status?["clients"] as? Int == 0)
                    #expect(status?["records_sent"] as? Int == 0)
                }
            }
        }
    }

    @Test func healthzAndStatusFollowTheCaptureConnection() async throws {
        try await within(150, "healthz and status follow the capture connection") {
            let (app, capture) = ScriptedServer.make()
            try await app.test(.router) { client in
                capture.disconnect("server closed the connection unexpectedly")
                try await client.execute(uri: "/healthz", method: .get) { response in
                    #expect(response.status == .serviceUnavailable)
                    #expect(String(buffer: response.body).contains("server closed the connection unexpectedly"))
                }
                try await client.execute(uri: "/status", method: .get) { response in
                    let status = try JSONSerialization.jsonObject(with: Data(String(buffer: response.body).utf8)) as? [String: Any]
                    #expect(status?["capture"] as? String == "disconnected")
                    #expect(status?["capture_error"] as? String == "server closed the connection unexpectedly")
                }
                capture.reconnect()
                try await client.execute(uri: "/healthz", method: .get) { response in
                    #expect(response.status == .ok)
                }
            }
        }
    }

    @Test func replicationModeIsAnnouncedAndItsCursorsResume() async throws {
        try await within(150, "replication mode is announced and its cursors resume") {
            let capture = ScriptedCapture(mode: .replication, tables: [Self.table: ScriptedServer.columns])
            let app = buildApplication(options: ServerOptions(port: 0), source: capture, logger: ScriptedServer.logger)
            _ = try await app.test(.live) { client in
                let cursors = try capture.commit(
                    .insert(Self.table, row: ScriptedServer.row(1, "a")), .insert(Self.table, row: ScriptedServer.row(2, "b"))
                )
                try await capture.waitUntilDelivered()
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    let connected = ScriptedServer.object(try await messages.next())
                    #expect((connected?["data"] as? [String: Any])?["mode"] as? String == "replication")
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"since":"\#(cursors[0])"}}"#))
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed")
                    let record = ScriptedServer.object(try await messages.next())?["data"] as? [String: Any]
                    #expect(record?["source"] as? String == "replication")
                    #expect(record?["cursor"] as? String == cursors[1].description, "the record after the cursor, once")
                    #expect(record?["lsn"] as? String == formatLSN(cursors[1].major))
                    #expect(record?["commit_time"] is String)
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }
}
