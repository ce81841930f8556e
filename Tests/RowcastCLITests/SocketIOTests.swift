import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import RowcastTestSupport
import Testing

/// `/socket.io/` with two real clients that rowcast had no hand in: the official
/// socket.io-client 4.8.1 bundle in headless Chromium, on a page from another origin,
/// and python-socketio 5 (an independent implementation). `make test` fetches both
/// (scripts/socketio-clients.sh).
@Suite(
    .enabled(if: LiveDatabase.available, "needs the cluster that make test starts"),
    .timeLimit(.minutes(3))
)
struct SocketIOTests {
    /// Polling only, WebSocket only, and polling upgraded to WebSocket (the default):
    /// a filtered subscription gets exactly its rows on each.
    @Test func pythonSocketIOGetsFilteredRowsOverEveryTransport() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let server = try await Self.serveTrigger(url)
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)

        for (index, transports) in ["polling", "websocket", "polling,websocket"].enumerated() {
            let base = (index + 1) * 100
            let client = try Self.python([
                "http://127.0.0.1:\(port)", "--transports", transports, "--count", "2",
                "--subscribe", #"{"tables": ["orders"], "filter": "id=gt.\#(base)"}"#,
            ])
            _ = try await client.waitFor("subscribed cursor=")
            try await LiveDatabase.psql(url, "INSERT INTO audit VALUES (\(base + 1)); INSERT INTO orders VALUES (\(base)), (\(base + 1)), (\(base + 2))")
            let done = try await client.waitFor("(done .*)")
            let transport = transports.split(separator: ",").last ?? ""
            #expect(done == "done ids=[\(base + 1), \(base + 2)] tables=[\"orders\"] transport=\(transport)", "\(transports):\n\(client.output)")
            #expect(try await client.stop(0) == 0, "\(client.output)")
        }

        // A burst on long-polling: many packets per response, every one in order.
        let burst = try Self.python([
            "http://127.0.0.1:\(port)", "--transports", "polling", "--count", "1000", "--subscribe", #"{"filter": "id=gt.1000"}"#,
        ])
        _ = try await burst.waitFor("subscribed cursor=")
        try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g FROM generate_series(1001, 2000) g")
        let done = try await burst.waitFor("(done .*)")
        let inOrder = done == "done ids=\(Array(1001...2000).description) tables=[\"orders\"] transport=polling"
        #expect(inOrder, "not rows 1001...2000 in order over polling: \(done.prefix(120))…\(done.suffix(120))")
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output)")
    }

    /// The same credentials as `/ws`: the client's `auth` payload, or `?token=`; a JWT's
    /// `tables` claim narrows what it sees; a browser origin not allowed is refused.
    @Test func pythonSocketIOIsRefusedOrAdmittedByItsCredentials() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let secret = String(repeating: "s", count: 32)
        let server = try await Self.serveTrigger(url, environment: ["ROWCAST_TOKEN": "sio-token", "ROWCAST_JWT_SECRET": secret])
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)
        let address = "http://127.0.0.1:\(port)"

        let anonymous = try Self.python([address, "--transports", "polling"])
        #expect(try await anonymous.waitFor("(connect_error .*)") == "connect_error unauthorized: authentication required: pass io(url, { auth: { token } }), or ?token= in the URL")
        let wrong = try Self.python([address, "--transports", "websocket", "--auth-token", "not-it"])
        #expect(try await wrong.waitFor("(connect_error .*)").hasPrefix("connect_error unauthorized: the token is not a JWT rowcast can read"))

        let inAuth = try Self.python([address, "--transports", "websocket", "--auth-token", "sio-token"])
        #expect(try await inAuth.waitFor("(connected .*)") == "connected mode=trigger")
        let inQuery = try Self.python([address + "/?token=sio-token", "--transports", "polling"])
        #expect(try await inQuery.waitFor("(connected .*)") == "connected mode=trigger")

        let narrowed = try Self.python([address, "--mint-jwt", secret, "--jwt-tables", "orders", "--count", "2"])
        _ = try await narrowed.waitFor("subscribed cursor=")
        try await LiveDatabase.psql(url, "INSERT INTO audit VALUES (1); INSERT INTO orders VALUES (1), (2)")
        #expect(try await narrowed.waitFor("(done .*)").hasPrefix(#"done ids=[1, 2] tables=["orders"]"#), "\(narrowed.output)")

        let elsewhere = try Self.python([address, "--auth-token", "sio-token", "--origin", "http://elsewhere.example"])
        #expect(try await elsewhere.waitFor("(connect_failed .*)") == "connect_failed Unexpected status code 403 in server response")
        for client in [anonymous, wrong, inAuth, inQuery, narrowed, elsewhere] { _ = try await client.stop() }
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output)")
    }

    /// Heartbeats: a session whose client vanished after the handshake (it never polls
    /// again, so never answers a ping) is closed after pingInterval + pingTimeout,
    /// while a python-socketio client on polling answers every ping and stays.
    @Test func aSessionThatStopsAnsweringPingsIsClosedAndALiveOneStays() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE audit (id int PRIMARY KEY)")
        let setup = try await Rowcast.run(["setup", "--mode", "trigger", "--table", "orders", "--db", url])
        #expect(setup.status == 0, "\(setup.stderr)")
        let server = try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", "trigger", "--table", "orders", "--port", "0", "--db", url,
            // A ping timeout of 20 s: the vanished session lives 20.5 s, long enough to be
            // seen beside the live one on a loaded machine (5 s once was not).
            "--socketio-ping-interval", "0.5", "--socketio-ping-timeout", "20", "--log-level", "debug",
        ])
        // Why a session closed, for a failure message.
        let closes = { server.output.split(separator: "\n").filter { $0.contains("socket.io session") }.suffix(10).joined(separator: "\n") }
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)
        let live = try Self.python(["http://127.0.0.1:\(port)", "--transports", "polling", "--count", "1"])
        _ = try await live.waitFor("subscribed cursor=")

        let portNumber = try #require(Int(port))
        let open = try await onThread("an Engine.IO open packet", within: 60) { try RawClient.body(port: portNumber, path: "/socket.io/?EIO=4&transport=polling") }
        #expect(String(decoding: open, as: UTF8.self).contains(#""pingInterval":500,"pingTimeout":20000"#))
        #expect(try await Self.socketIOSessions(port: port, until: { $0 == 2 }) == 2, "\(closes())")
        // Ten pings later the vanished one is gone.
        #expect(try await Self.socketIOSessions(port: port, until: { $0 == 1 }) == 1, "\(closes())")

        try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (1)")
        #expect(try await live.waitFor("(done .*)") == #"done ids=[1] tables=["orders"] transport=polling"#, "\(live.output)\n\(closes())")
        #expect(try await live.stop(0) == 0)
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output)")
    }

    /// `socketio_sessions` from `/status`, polled until `done` holds (up to 60 s).
    static func socketIOSessions(port: String, until done: (Int) -> Bool) async throws -> Int {
        var sessions = -1
        for _ in 0..<600 {
            sessions = try await ServeFaultTests.status(port: port)["socketio_sessions"] as? Int ?? -1
            if done(sessions) { return sessions }
            try await pause(for: .milliseconds(100))
        }
        return sessions
    }

    /// The recipe's page, unchanged, from another origin: rows arrive, the transport
    /// moves from polling to WebSocket, a filtered and a WebSocket-only socket get
    /// theirs, and a dropped connection recovers (`socket.recovered`) with every row
    /// committed meanwhile exactly once, whether the page reconnects itself or later.
    @Test func theOfficialClientInChromiumReceivesUpgradesAndRecovers() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY)")
        let slot = "socketio_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        defer { _ = try? LiveDatabase.psqlBlocking(url, "SELECT pg_drop_replication_slot('\(slot)')") }

        let (site, pages, pagePort) = try await Self.pageSite()
        defer { try? FileManager.default.removeItem(at: site) }

        let server = try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", slot, "--port", "0", "--db", url,
            "--allow-origin", "http://127.0.0.1:\(pagePort)",
        ])
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)

        try await BrowserTests.withBrowser { page in
            try await page.open("http://127.0.0.1:\(pagePort)/page.html?server=http://127.0.0.1:\(port)")
            try await page.waitUntil("mode === 'replication'")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (1), (2)")
            try await page.waitUntil("rows.length === 2")
            try await page.waitUntil("socket.io.engine.transport.name === 'websocket'")

            // A filtered socket, and one on WebSocket alone.
            try await page.evaluate("""
                var filtered = io(url, { forceNew: true }), filteredRows = [], filteredReady = false;
                filtered.on('connected', function () { filtered.emit('subscribe', { tables: ['orders'], filter: 'id=gt.10' }); });
                filtered.on('subscribed', function () { filteredReady = true; });
                filtered.on('update', function (data) { filteredRows.push(data.row.id); });
                var direct = io(url, { forceNew: true, transports: ['websocket'] }), directRows = [], directReady = false;
                direct.emit('ready for data', {});
                direct.on('subscribed', function () { directReady = true; });
                direct.on('update', function (data) { directRows.push(data.row.id); });
                0
                """)
            try await page.waitUntil("filteredReady && directReady")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (3), (11), (12)")
            try await page.waitUntil("rows.length === 5 && filteredRows.length === 2 && directRows.length === 3")
            #expect(try await page.evaluate("JSON.stringify([filteredRows, directRows, direct.io.engine.transport.name])") as? String == "[[11,12],[3,11,12],\"websocket\"]")

            // Dropped with reconnection off: rows committed while away come back on the
            // next connect, recovered.
            try await page.evaluate("socket.io.reconnection(false); socket.io.engine.close(); 0")
            try await page.waitUntil("!socket.connected")
            try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g FROM generate_series(20, 24) g")
            try await page.evaluate("socket.io.reconnection(true); socket.connect(); 0")
            try await page.waitUntil("socket.connected && rows.length === 10")
            #expect(try await page.evaluate("socket.recovered") as? Bool == true)

            // Dropped, and the client reconnects by itself, over either transport.
            try await page.evaluate("socket.io.engine.close(); direct.io.engine.close(); 0")
            try await LiveDatabase.psql(url, "INSERT INTO orders SELECT g FROM generate_series(30, 32) g")
            try await page.waitUntil("socket.connected && direct.connected && rows.length === 13 && directRows.length === 11")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (40)")
            try await page.waitUntil("rows.length === 14 && directRows.length === 12")
            let seen = try await page.evaluate("JSON.stringify([rows, directRows, socket.recovered, direct.recovered])") as? String
            #expect(seen == "[[1,2,3,11,12,20,21,22,23,24,30,31,32,40],[3,11,12,20,21,22,23,24,30,31,32,40],true,true]")
        }
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output.suffix(2000))")
        _ = try await pages.stop(SIGKILL)
    }

    /// With a token required, the official client is refused without it (`connect_error`
    /// with the reason) and admitted with it in its `auth` option or the URL.
    @Test func theOfficialClientIsRefusedWithoutItsTokenAndAdmittedWithIt() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        let (site, pages, pagePort) = try await Self.pageSite()
        defer { try? FileManager.default.removeItem(at: site) }
        let server = try await Self.serveTrigger(url, arguments: ["--allow-origin", "http://127.0.0.1:\(pagePort)"], environment: ["ROWCAST_TOKEN": "page-token"])
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)
        try await BrowserTests.withBrowser { page in
            // The page's own socket has no token: refused, with the reason.
            try await page.open("http://127.0.0.1:\(pagePort)/page.html?server=http://127.0.0.1:\(port)")
            try await page.waitUntil("refusal !== null")
            #expect(try await page.evaluate("refusal") as? String == "unauthorized: authentication required: pass io(url, { auth: { token } }), or ?token= in the URL")
            try await page.evaluate("""
                var ready = 0;
                var inAuth = io(url, { forceNew: true, auth: { token: 'page-token' } }), inAuthRows = [];
                inAuth.emit('subscribe', { tables: ['orders'] });
                inAuth.on('subscribed', function () { ready++; });
                inAuth.on('update', function (data) { inAuthRows.push(data.row.id); });
                var inQuery = io(url + '/?token=page-token', { forceNew: true, transports: ['websocket'] }), inQueryRows = [];
                inQuery.emit('ready for data', {});
                inQuery.on('subscribed', function () { ready++; });
                inQuery.on('update', function (data) { inQueryRows.push(data.row.id); });
                var wrong = io(url, { forceNew: true, auth: { token: 'not-it' } }), wrongRefusal = null;
                wrong.on('connect_error', function (e) { wrongRefusal = e.message; });
                0
                """)
            try await page.waitUntil("ready === 2 && wrongRefusal !== null")
            #expect(try await page.evaluate("wrongRefusal") as? String == "unauthorized: the token is not valid")
            try await LiveDatabase.psql(url, "INSERT INTO orders VALUES (1)")
            try await page.waitUntil("inAuthRows.length === 1 && inQueryRows.length === 1")
            #expect(try await page.evaluate("JSON.stringify([inAuthRows, inQueryRows, rows, socket.connected])") as? String == "[[1],[1],[],false]")
        }
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output.suffix(2000))")
        _ = try await pages.stop(SIGKILL)
    }

    /// A temporary site with the test page and the official bundle, served by Python on
    /// another port than rowcast's: another origin.
    static func pageSite() async throws -> (URL, RunningProcess, String) {
        let site = FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-sio-page-" + UUID().uuidString)
        try FileManager.default.createDirectory(at: site, withIntermediateDirectories: true)
        let bundle = clients.appendingPathComponent("socket.io.min.js")
        guard FileManager.default.fileExists(atPath: bundle.path) else {
            throw Failure("the socket.io-client bundle is missing from \(bundle.path) (fix: scripts/socketio-clients.sh, which make test runs)")
        }
        try FileManager.default.copyItem(at: bundle, to: site.appendingPathComponent("socket.io.min.js"))
        try FileManager.default.copyItem(at: scripts.appendingPathComponent("page.html"), to: site.appendingPathComponent("page.html"))
        let pages = try RunningProcess("/usr/bin/env", ["python3", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", site.path])
        return (site, pages, try await pages.waitFor(#"port (\d+)"#))
    }

    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../SocketIOClients").standardized

    /// What scripts/socketio-clients.sh fetched.
    static var clients: URL {
        if let path = ProcessInfo.processInfo.environment["ROWCAST_SOCKETIO_CLIENTS"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/socketio-clients").standardized
    }

    /// Tests/SocketIOClients/client.py with python-socketio.
    static func python(_ arguments: [String]) throws -> RunningProcess {
        let library = clients.appendingPathComponent("python")
        guard FileManager.default.fileExists(atPath: library.appendingPathComponent("socketio").path) else {
            throw Failure("python-socketio is missing from \(library.path) (fix: scripts/socketio-clients.sh, which make test runs)")
        }
        return try RunningProcess(
            "/usr/bin/env", ["python3", scripts.appendingPathComponent("client.py").path] + arguments,
            environment: ["PYTHONPATH": library.path, "PYTHONUNBUFFERED": "1"]
        )
    }

    /// `orders` and `audit` captured in trigger mode on a fresh database.
    static func serveTrigger(_ url: String, arguments: [String] = [], environment: [String: String] = [:]) async throws -> RunningProcess {
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE audit (id int PRIMARY KEY)")
        let setup = try await Rowcast.run(["setup", "--mode", "trigger", "--table", "orders", "--table", "audit", "--db", url])
        guard setup.status == 0 else { throw Failure("setup: \(setup.stderr)") }
        return try RunningProcess(
            Rowcast.binary.path, ["serve", "--mode", "trigger", "--table", "orders", "--table", "audit", "--port", "0", "--db", url] + arguments,
            environment: environment
        )
    }
}
