import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import HummingbirdWSTesting
import Logging
import NIOCore
import RowcastCore
import RowcastPostgres
import RowcastServer
import RowcastTestSupport
import Synchronization
import Testing

@Suite(.enabled(if: ProcessInfo.processInfo.environment["ROWCAST_TEST_DATABASE_URL"] != nil, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct WebSocketTests {
    static let url = ProcessInfo.processInfo.environment["ROWCAST_TEST_DATABASE_URL"] ?? ""

    /// A table with the trigger and an app capturing it.
    static func makeApp(options: ServerOptions = ServerOptions(port: 0)) throws -> (app: some ApplicationProtocol, table: TableName) {
        let (app, tables) = try makeApp(options: options, tables: 1)
        return (app, tables[0])
    }

    /// `count` tables with the trigger and an app capturing them.
    static func makeApp(options: ServerOptions, tables count: Int) throws -> (app: some ApplicationProtocol, tables: [TableName]) {
        let database = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let tables = (0..<count).map { _ in
            TableName(schema: "public", name: "ws_" + String(UInt32.random(in: 0...UInt32.max), radix: 36))
        }
        for table in tables {
            try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, title text)")
        }
        try TriggerSetup.install(on: database, tables: tables)
        var logger = Logger(label: "rowcast-tests")
        logger.logLevel = .warning
        let capture = try TriggerCapture.connect(
            configuration: .init(connection: ConnectionSettings(conninfo: url), tables: Set(tables)),
            logger: logger
        )
        return (buildApplication(options: options, source: capture, logger: logger), tables)
    }

    static func insert(_ sql: String) async throws {
        try await onThread("SQL to run: \(sql.prefix(60))", within: 60) {
            try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url))).executeScript(sql)
        }
    }

    static func object(_ message: WebSocketMessage?) -> [String: Any]? {
        guard case .text(let text) = message else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
    }

    @Test func handshakeThenUpdatesForAnInsert() async throws {
        try await within(150, "handshake then updates for an insert") {
            let (app, table) = try Self.makeApp()
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    let connected = Self.object(try await messages.next())
                    #expect(connected?["event"] as? String == "connected")
                    let data = connected?["data"] as? [String: Any]
                    #expect(data?["connected"] as? Bool == true)
                    #expect(data?["mode"] as? String == "trigger")

                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    #expect(Self.object(try await messages.next())?["event"] as? String == "subscribed")

                    try await Self.insert("INSERT INTO \(table.quoted) VALUES (7, 'hello')")
                    let update = Self.object(try await messages.next())
                    #expect(update?["event"] as? String == "update")
                    let record = update?["data"] as? [String: Any]
                    #expect(record?["op"] as? String == "insert")
                    #expect(record?["source"] as? String == "trigger")
                    #expect(record?["schema"] as? String == "public")
                    #expect(record?["table"] as? String == table.name)
                    #expect((record?["cursor"] as? String).flatMap(Cursor.init) != nil)
                    let row = record?["row"] as? [String: Any]
                    #expect(row?["id"] as? Int == 7)
                    #expect(row?["title"] as? String == "hello")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func malformedFramesGetAnErrorAndTheConnectionStaysOpen() async throws {
        try await within(150, "malformed frames get an error and the connection stays open") {
            let (app, table) = try Self.makeApp()
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    for (frame, code) in [("not json", "bad_frame"), (#"{"data":{}}"#, "bad_frame"), (#"{"event":"dance","data":{}}"#, "unknown_event")] {
                        try await outbound.write(.text(frame))
                        let error = Self.object(try await messages.next())
                        #expect(error?["event"] as? String == "error")
                        #expect((error?["data"] as? [String: Any])?["code"] as? String == code)
                    }
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    #expect(Self.object(try await messages.next())?["event"] as? String == "subscribed")
                    try await Self.insert("INSERT INTO \(table.quoted) VALUES (1, 'still open')")
                    #expect(Self.object(try await messages.next())?["event"] as? String == "update")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func subscribeFiltersByTableOpAndRowAndAnswersErrorsInPlace() async throws {
        try await within(150, "subscribe filters by table op and row and answers errors in place") {
            let (app, table) = try Self.makeApp()
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
                        let error = Self.object(try await messages.next())
                        #expect(error?["event"] as? String == "error")
                        #expect((error?["data"] as? [String: Any])?["code"] as? String == code, "\(frame)")
                    }
                    let request = #"{"event":"subscribe","data":{"tables":["\#(table.name)"],"ops":["update"],"filter":"id=in.(2,3)"}}"#
                    try await outbound.write(.text(request))
                    let subscribed = Self.object(try await messages.next())
                    #expect(subscribed?["event"] as? String == "subscribed")
                    let echo = subscribed?["data"] as? [String: Any]
                    #expect(echo?["tables"] as? [String] == [table.description])
                    #expect(echo?["ops"] as? [String] == ["update"])
                    #expect(echo?["filter"] as? String == "id=in.(2,3)")

                    try await Self.insert(
                        """
                        INSERT INTO \(table.quoted) VALUES (1, 'a'), (2, 'b'), (3, 'c');
                        UPDATE \(table.quoted) SET title = title || '!';
                        """
                    )
                    var ids: [Int] = []
                    for _ in 0..<2 {
                        let update = Self.object(try await messages.next())
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
            let (app, table) = try Self.makeApp()
            _ = try await app.test(.live) { client in
                // First connection: live, sees 1 and 2, then goes away.
                let lastCursor = Mutex<String?>(nil)
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"]}}"#))
                    _ = try await messages.next()
                    try await Self.insert("INSERT INTO \(table.quoted) VALUES (1, 'a'); INSERT INTO \(table.quoted) VALUES (2, 'b')")
                    for _ in 0..<2 {
                        let cursor = (Self.object(try await messages.next())?["data"] as? [String: Any])?["cursor"] as? String
                        lastCursor.withLock { $0 = cursor }
                    }
                    try await outbound.close(.normalClosure, reason: nil)
                }
                // Missed while away.
                try await Self.insert("INSERT INTO \(table.quoted) VALUES (3, 'c'); INSERT INTO \(table.quoted) VALUES (4, 'd')")
                try await pause(for: .milliseconds(300))
                let since = try #require(lastCursor.withLock { $0 })
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(table.name)"],"since":"\#(since)"}}"#))
                    #expect(Self.object(try await messages.next())?["event"] as? String == "subscribed")
                    var ids: [Int] = []
                    for _ in 0..<2 {
                        let record = Self.object(try await messages.next())?["data"] as? [String: Any]
                        if let id = (record?["row"] as? [String: Any])?["id"] as? Int { ids.append(id) }
                    }
                    #expect(ids == [3, 4], "the missed records, once each")
                    try await Self.insert("INSERT INTO \(table.quoted) VALUES (5, 'e')")
                    let live = Self.object(try await messages.next())?["data"] as? [String: Any]
                    #expect((live?["row"] as? [String: Any])?["id"] as? Int == 5, "then live, with nothing repeated at the seam")
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }

    @Test func serverSentEventsFilterAndResumeWithLastEventID() async throws {
        try await within(150, "server sent events filter and resume with last event i d") {
            let (app, table) = try Self.makeApp()
            _ = try await app.test(.live) { client in
                let port = try #require(client.port)
                let path = "/events?tables=\(table.name)&ops=insert"
                let first = try EventStreamClient(port: port, path: path)
                let head = try await onThread("an HTTP exchange with the test server", within: 90) { try first.readHead() }
                #expect(head.hasPrefix("HTTP/1.1 200"))
                #expect(head.lowercased().contains("content-type: text/event-stream"))
                try await Self.insert("INSERT INTO \(table.quoted) VALUES (1, 'a'); INSERT INTO \(table.quoted) VALUES (2, 'b'); UPDATE \(table.quoted) SET title = 'x'")
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
            let (app, _) = try Self.makeApp(options: options)
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
            let (app, _) = try Self.makeApp()
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
}
