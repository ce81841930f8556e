import Foundation
import HummingbirdWSClient
import Logging
import RowcastTestSupport
import Synchronization
import Testing

/// The page at `/`, in a real headless Chromium, served by the real `rowcast serve`:
/// rows inserted into PostgreSQL appear in the page's DOM, the table filter narrows
/// them, and a dropped connection resumes without a gap or a repeat.
@Suite(
    .enabled(if: LiveDatabase.available, "needs the cluster that make test starts"),
    .timeLimit(.minutes(3))
)
struct BrowserTests {
    @Test func thePageShowsInsertedRowsFiltersByTableAndResumes() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY, note text); CREATE TABLE audit (id int PRIMARY KEY, note text)")
        let binary = Rowcast.binary.path
        let setup = try RunningProcess(binary, ["setup", "--mode", "trigger", "--table", "orders", "--table", "audit", "--db", url])
        #expect(try await setup.stop(0) == 0, "setup: \(setup.output)")
        let server = try RunningProcess(
            binary, ["serve", "--mode", "trigger", "--table", "orders", "--table", "audit", "--port", "0", "--db", url]
        )
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)

        try await Self.withBrowser { page in
            try await page.open("http://127.0.0.1:\(port)/?tables=orders")
            try await page.waitUntil("document.getElementById('state').textContent === 'live'")

            // Filtered to orders: the audit row never shows.
            try await LiveDatabase.psql(url, "INSERT INTO audit VALUES (1, 'hidden'); INSERT INTO orders VALUES (1, 'first'), (2, 'second')")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 2")
            let shown = try await page.rows()
            #expect(shown.map(\.table) == ["public.orders", "public.orders"])
            // Each row as the server's to_jsonb gives it, newest first.
            let expected = try await LiveDatabase.psql(url, "SELECT jsonb_agg(to_jsonb(o) ORDER BY id DESC) FROM orders o")
            #expect(shown.map(\.row) == (try JSONSerialization.jsonObject(with: Data(expected.utf8)) as? [NSDictionary]))

            // A malformed table name is refused in place; the message line says why.
            try await page.evaluate("tablesInput.value = 'a.b.c'; tablesInput.dispatchEvent(new Event('change')); 0")
            try await page.waitUntil("document.getElementById('message').textContent.startsWith('bad_subscription')")

            // Clearing the filter subscribes to every table: the latest records of all
            // tables come first (the audit row the filter hid included), then live ones.
            try await page.evaluate("tablesInput.value = ''; tablesInput.dispatchEvent(new Event('change')); 0")
            try await page.waitUntil("document.getElementById('state').textContent === 'live' && !resubscribing")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 3")
            try await LiveDatabase.psql(url, "INSERT INTO audit VALUES (2, 'now shown')")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 4")
            #expect(try await page.rows().map(\.table) == ["public.audit", "public.orders", "public.orders", "public.audit"])

            // The connection drops; rows committed meanwhile arrive once each after the reconnect.
            try await page.evaluate("socket.close(); 0")
            try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g, 'while away' FROM generate_series(10, 14) g")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 9")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (15, 'live again')")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 10")
            let ids = try await page.rows().filter { $0.table == "public.orders" }.compactMap { $0.row["id"] as? Int }
            #expect(ids == [15, 14, 13, 12, 11, 10, 2, 1], "every row once, newest first")
            #expect(try await page.evaluate("document.getElementById('state').textContent") as? String == "live")
        }
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output)")
    }

    @Test func thePageResumesAcrossARestartOfServeWithoutAReload() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY, note text)")
        let slot = "page_restart_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        defer { _ = try? LiveDatabase.psqlBlocking(url, "SELECT pg_drop_replication_slot('\(slot)')") }
        let binary = Rowcast.binary.path
        let serve: @Sendable (String) throws -> RunningProcess = { port in
            try RunningProcess(binary, [
                "serve", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", slot, "--port", port, "--db", url,
            ])
        }
        let first = try serve("0")
        let port = try await first.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        let restarted = Mutex<RunningProcess?>(nil)

        try await Self.withBrowser { page in
            try await page.open("http://127.0.0.1:\(port)/")
            try await page.waitUntil("document.getElementById('state').textContent === 'live'")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (1, 'before'), (2, 'before')")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 2")

            // serve stops; rows committed while it is down; a new serve on the same port.
            let status = try? await first.stop(SIGTERM)
            #expect(status == 0, "serve output:\n\(first.output.suffix(3000))")
            try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g, 'while down' FROM generate_series(3, 5) g")
            let second = try serve(port)
            restarted.withLock { $0 = second }
            _ = try await second.waitFor(#"serving replication mode on"#)
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 5")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (6, 'after')")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 6")
            let ids = try await page.rows().compactMap { $0.row["id"] as? Int }
            #expect(ids == [6, 5, 4, 3, 2, 1], "every row once, newest first, without a reload")
            #expect(try await page.evaluate("document.getElementById('message').textContent") as? String == "", "nothing missed")
            #expect(try await page.evaluate("document.getElementById('state').textContent") as? String == "live")
        }
        let second = try #require(restarted.withLock { $0 })
        #expect(try await second.stop(SIGINT) == 0, "serve output:\n\(second.output)")
    }

    @Test func thePageOpensOnASnapshotHighlightsUpdatesPausesAndKeepsUpWithABurst() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE items (id int PRIMARY KEY, note text, qty int)")
        let binary = Rowcast.binary.path
        #expect(try await Rowcast.run(["setup", "--mode", "replication", "--table", "items", "--slot", "page", "--db", url]).status == 0)
        let server = try RunningProcess(binary, ["serve", "--mode", "replication", "--table", "items", "--slot", "page", "--port", "0", "--db", url])
        defer { _ = try? Rowcast.runBlocking(["slot", "drop", "page", "--force", "--db", url]) }
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        // Committed before the page exists: it opens on the table's rows as they are.
        try await LiveDatabase.psql(url, "INSERT INTO items VALUES (1, 'first', 1), (2, 'second', 2)")

        try await Self.withBrowser { page in
            try await page.open("http://127.0.0.1:\(port)/")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 2 && snapshotRows === 2")
            #expect(try await page.rows().compactMap { $0.row["id"] as? Int } == [2, 1])
            // A readable time, and an op badge: the snapshot's rows, then an insert's.
            try await page.waitUntil("/^\\d+ (s|min) ago$/.test(document.querySelector('td.time').textContent)")
            try await page.waitUntil("document.querySelector('tr.record .op').textContent === 'snapshot'")
            try await LiveDatabase.psql(url, "INSERT INTO items VALUES (0, 'after the snapshot', 0)")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 3 && document.querySelector('tr.record .op').textContent === 'insert'")

            // An update shows the row with the changed columns as old → new.
            try await LiveDatabase.psql(url, "ALTER TABLE items REPLICA IDENTITY FULL; UPDATE items SET note = 'changed' WHERE id = 1")
            try await page.waitUntil("document.querySelector('tr.record').dataset.op === 'update'")
            try await page.waitUntil("document.querySelector('tr.record dd.changed[data-column=note]').textContent === 'first → changed'")
            #expect(try await page.evaluate("document.querySelectorAll('tr.record')[0].querySelectorAll('dd.changed').length") as? Int == 1)

            // Pause keeps counting but stops drawing; resume draws; clear empties.
            try await page.evaluate("document.getElementById('pause').click(); 0")
            try await page.waitUntil("document.getElementById('state').textContent === 'paused'")
            try await LiveDatabase.psql(url, "INSERT INTO items VALUES (3, 'while paused', 3)")
            try await page.waitUntil("document.getElementById('count').textContent === '5 records'")
            #expect(try await page.evaluate("document.querySelectorAll('tr.record').length") as? Int == 4)
            try await page.evaluate("document.getElementById('pause').click(); 0")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 5 && document.getElementById('state').textContent === 'live'")
            try await page.evaluate("document.getElementById('clear').click(); 0")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 0")

            // A burst far above 1,000 records/s: the page keeps a bounded list and answers.
            try await LiveDatabase.psql(url, "INSERT INTO items SELECT g, 'burst', g FROM generate_series(100, 5099) g")
            try await page.waitUntil("document.getElementById('count').textContent === '5000 records'")
            // Drawn on the next animation frame: wait for the newest row, then the list is bounded.
            try await page.waitUntil("JSON.parse(document.querySelector('tr.record pre').textContent).id === 5099")
            #expect(try await page.evaluate("document.querySelectorAll('tr.record').length") as? Int == 200)
            try await page.waitUntil("/^\\d+ records\\/s$/.test(document.getElementById('rate').textContent)")
        }
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output.suffix(2000))")
    }

    @Test func withATokenThePageConnectsOnlyWhenItsURLCarriesIt() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY, note text)")
        let binary = Rowcast.binary.path
        let setup = try RunningProcess(binary, ["setup", "--mode", "trigger", "--table", "orders", "--db", url])
        #expect(try await setup.stop(0) == 0, "setup: \(setup.output)")
        let server = try RunningProcess(
            binary, ["serve", "--mode", "trigger", "--table", "orders", "--port", "0", "--db", url],
            environment: ["ROWCAST_TOKEN": "page-token"]
        )
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)
        try await Self.withBrowser { page in
            try await page.open("http://127.0.0.1:\(port)/")
            try await page.waitUntil("document.getElementById('state').textContent === 'unauthorized'")
            let message = try await page.evaluate("document.getElementById('message').textContent") as? String ?? ""
            #expect(message.hasPrefix("unauthorized: authentication required"), "\(message)")

            try await page.evaluate("location.href = '/?token=page-token'; 0")
            try await page.waitUntil("document.getElementById('state').textContent === 'live'")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (1, 'with a token')")
            try await page.waitUntil("document.querySelectorAll('tr.record').length === 1")
        }
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output)")
    }

    /// A fresh headless Chromium with one page, driven over DevTools; removed afterwards.
    static func withBrowser(_ body: @escaping @Sendable (inout DevToolsSession) async throws -> Void) async throws {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-chromium-" + UUID().uuidString)
        defer { try? FileManager.default.removeItem(at: profile) }
        let browser = try RunningProcess(try Rowcast.chromium(), [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
            "--remote-allow-origins=*", "--user-data-dir=\(profile.path)", "about:blank",
        ])
        let devtools = try await browser.waitFor(#"DevTools listening on (ws://\S+)"#)
        let logger = {
            var logger = Logger(label: "devtools")
            logger.logLevel = .warning
            return logger
        }()
        // One deadline for the whole page session (each of its waits polls for 60 s at
        // most); past it the browser is killed, which ends the DevTools connection.
        do {
            try await within(150, "a browser session", seen: { browser.output.suffix(1000).description }) {
                try await WebSocketClient.connect(url: devtools, configuration: .init(maxFrameSize: 1 << 24), logger: logger) { inbound, outbound, _ in
                    var page = DevToolsSession(inbound: inbound, outbound: outbound)
                    try await body(&page)
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        } catch {
            _ = try? await browser.stop(SIGKILL)
            throw error
        }
        _ = try await browser.stop()
    }
}

/// A Chrome DevTools Protocol session over the browser's WebSocket: opens a page and
/// evaluates JavaScript in it.
struct DevToolsSession {
    var messages: WebSocketInboundMessageStream.AsyncIterator
    let outbound: WebSocketOutboundWriter
    var nextID = 0
    var session: String?

    init(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) {
        messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
        self.outbound = outbound
    }

    /// Sends a command and returns its `result`, skipping events.
    @discardableResult
    mutating func call(_ method: String, _ params: [String: Any] = [:]) async throws -> [String: Any] {
        nextID += 1
        var command: [String: Any] = ["id": nextID, "method": method, "params": params]
        if let session { command["sessionId"] = session }
        try await outbound.write(.text(String(decoding: try JSONSerialization.data(withJSONObject: command), as: UTF8.self)))
        while let message = try await messages.next() {
            guard case .text(let text) = message,
                let reply = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                reply["id"] as? Int == nextID
            else { continue }
            if let error = reply["error"] { throw Failure("\(method): \(error)") }
            return reply["result"] as? [String: Any] ?? [:]
        }
        throw Failure("the browser closed the DevTools connection")
    }

    mutating func open(_ url: String) async throws {
        let target = try await call("Target.createTarget", ["url": url])
        let attached = try await call("Target.attachToTarget", ["targetId": target["targetId"] ?? "", "flatten": true])
        session = attached["sessionId"] as? String
    }

    /// The value of a JavaScript expression in the page.
    @discardableResult
    mutating func evaluate(_ expression: String) async throws -> Any? {
        let result = try await call("Runtime.evaluate", ["expression": expression, "returnByValue": true])
        if let exception = result["exceptionDetails"] { throw Failure("\(expression): \(exception)") }
        return (result["result"] as? [String: Any])?["value"]
    }

    /// Polls until `condition` is true in the page (up to 60 s).
    mutating func waitUntil(_ condition: String) async throws {
        for _ in 0..<600 {
            // Until the page has loaded, its elements and globals do not exist yet.
            if try await evaluate("(() => { try { return Boolean(\(condition)) } catch (e) { return false } })()") as? Bool == true { return }
            try await pause(for: .milliseconds(100))
        }
        let html = try await evaluate("document.body.innerText") as? String ?? ""
        throw Failure("the page never satisfied \(condition); it shows:\n\(html.prefix(2000))")
    }

    /// The record rows the page shows, newest first: table and parsed row JSON.
    mutating func rows() async throws -> [(table: String, row: NSDictionary)] {
        let json = try await evaluate(
            "JSON.stringify([...document.querySelectorAll('tr.record')].map(tr => [tr.dataset.table || '', tr.querySelector('pre').textContent]))"
        ) as? String ?? "[]"
        let pairs = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String]] ?? []
        return try pairs.map { pair in
            (pair[0], try JSONSerialization.jsonObject(with: Data(pair[1].utf8)) as? NSDictionary ?? [:])
        }
    }
}
