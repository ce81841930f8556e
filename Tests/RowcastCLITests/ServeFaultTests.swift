import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HummingbirdWSClient
import Logging
import RowcastTestSupport
import Synchronization
import Testing

/// `rowcast serve` against peers that misbehave: clients that stop reading, pages
/// from other origins, requests for other hosts.
/// (Five minutes, the watchdog's bound: the 60,000-row transaction below takes 105 s
/// in the suite on two cores and up to 190 s beside other work, and its own waits
/// allow 270 s.)
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(5)))
struct ServeFaultTests {
    /// `GET /status` on a connection of its own that closes after the response, so
    /// that no keep-alive connection counts among the server's descriptors; `from`
    /// another client address than a test's attackers, whose per-address limits it
    /// then shares nothing of.
    static func status(port: String, from source: String = "127.0.0.1") async throws -> [String: Any] {
        let body = try await onThread("GET /status on port \(port)", within: 60) { try RawClient.body(port: Int(port) ?? 0, path: "/status", from: source) }
        return try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
    }

    /// A table with the trigger, and `serve --mode trigger` on it with `arguments`.
    static func serve(table: String, _ arguments: [String] = []) async throws -> (RunningProcess, port: String, url: String) {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE \(table) (id int PRIMARY KEY, body text)")
        #expect(try await Rowcast.run(["setup", "--mode", "trigger", "--table", table, "--db", url]).status == 0)
        let server = try RunningProcess(Rowcast.binary.path, ["serve", "--mode", "trigger", "--table", table, "--port", "0", "--db", url] + arguments)
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)
        return (server, port, url)
    }

    /// Every client holds a descriptor: serve started under a soft limit of 256 open
    /// files (the hard limit higher) raises it, instead of refusing clients past it.
    @Test func serveRaisesItsOpenFileLimitToTheHardLimit() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE limited (id int PRIMARY KEY)")
        #expect(try await Rowcast.run(["setup", "--mode", "trigger", "--table", "limited", "--db", url]).status == 0)
        let server = try RunningProcess("/bin/sh", [
            "-c", "ulimit -S -n 256 && exec \"$0\" serve --mode trigger --table limited --port 0 --db \"$1\"", Rowcast.binary.path, url,
        ])
        _ = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)
        let limits = try String(contentsOfFile: "/proc/\(server.pid)/limits", encoding: .utf8)
        let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        // "Max open files  <soft>  <hard>  files"
        #expect(fields.count >= 5 && fields[3] == fields[4] && fields[3] != "256", "\(line)")
        #expect(try await server.stop() == 0)
    }

    @Test func aClientThatStopsReadingIsClosedWithinSecondsAndEverythingIsReleased() async throws {
        let (server, port, url) = try await Self.serve(table: "stalled", ["--client-queue-bytes", "1048576", "--resume-window-bytes", "1048576"])
        // Let the server settle (its capture and listener), then count its descriptors.
        _ = try await Self.status(port: port)
        // Sockets, not all descriptors: an event loop creates its timer descriptor
        // lazily, the first time something is scheduled on it.
        let baseline = server.openSockets
        let baselineList = server.describeDescriptors
        let portNumber = try #require(Int(port))
        let clients = try await onThread("a stalled WebSocket, SSE and Socket.IO client to subscribe", within: 120) { () throws -> [RawClient] in
            let webSocket = try RawClient(port: portNumber, receiveBuffer: 4096)
            guard webSocket.upgrade() else { throw Failure("no 101: \(String(decoding: webSocket.received, as: UTF8.self))") }
            webSocket.sendText(#"{"event":"ready for data","data":{}}"#)
            guard webSocket.read(until: "subscribed") else { throw Failure("no subscribed frame") }
            let events = try RawClient(port: portNumber, receiveBuffer: 4096)
            events.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            guard events.read(until: ": connected") else { throw Failure("no SSE stream: \(String(decoding: events.received, as: UTF8.self))") }
            // A Socket.IO client on WebSocket: open packet, CONNECT, ready for data.
            let socketIO = try RawClient(port: portNumber, receiveBuffer: 4096)
            guard socketIO.upgrade(path: "/socket.io/?EIO=4&transport=websocket"), socketIO.read(until: "\"sid\"") else {
                throw Failure("no Engine.IO open packet: \(String(decoding: socketIO.received, as: UTF8.self))")
            }
            socketIO.sendText("40")
            guard socketIO.read(until: "\"pid\"") else { throw Failure("no CONNECT answer") }
            socketIO.sendText(#"42["ready for data",{}]"#)
            guard socketIO.read(until: "subscribed") else { throw Failure("no subscribed event") }
            return [webSocket, events, socketIO]
        }
        #expect(try await Self.status(port: port)["clients"] as? Int == 3)
        // Neither reads again. 20 MB of rows: far more than their queues (1 MB) and the socket buffers hold.
        for batch in 0..<20 {
            try await LiveDatabase.psql(url, "INSERT INTO stalled SELECT g, repeat('x', 100000) FROM generate_series(\(batch * 10 + 1), \(batch * 10 + 10)) g")
        }
        let written = Date()
        try await eventually("serve to release the stalled clients' sockets", within: 60, interval: .milliseconds(100), seen: {
            "serve still holds \(server.openSockets - baseline) more sockets than before the clients came: \(server.describeDescriptors) (before: \(baselineList))"
        }) { server.openSockets <= baseline }
        let seconds = Date().timeIntervalSince(written)
        #expect(try await Self.status(port: port)["clients"] as? Int == 0)
        let closed = try await onThread("serve to close the stalled clients", within: 120) { clients.map { $0.readUntilClosed(seconds: 30) } }
        #expect(closed == [true, true, true], "the server closed every connection (WebSocket, SSE, Socket.IO)")
        print("rowcast-test: stalled clients released \(String(format: "%.1f", seconds)) s after the last insert; serve RSS \(server.residentMegabytes) MB")
        #expect(try await server.stop() == 0, "serve output:\n\(server.output.suffix(2000))")
    }

    /// One transaction of 60,000 rows reaches a reading client whole, in order, while a
    /// client beside it has stopped reading. A client whose socket is full keeps its
    /// frames in its queue (an append a record, not a write through the channel), and
    /// a queue is bounded by the byte budget, with a frame count derived from it: a
    /// burst the budget holds never ends a client that keeps reading (with a fixed
    /// 4,096 frames, the reader was cut off a third of the way in).
    @Test func aLargeTransactionReachesAReaderWholeBesideAClientThatStoppedReading() async throws {
        let (server, port, url) = try await Self.serve(table: "parked")
        let portNumber = try #require(Int(port))
        let stalled = try await onThread("a WebSocket client to subscribe and stop reading", within: 120) { () throws -> RawClient in
            let client = try RawClient(port: portNumber, receiveBuffer: 4096)
            guard client.upgrade() else { throw Failure("no 101: \(String(decoding: client.received, as: UTF8.self))") }
            client.sendText(#"{"event":"ready for data","data":{}}"#)
            guard client.read(until: "subscribed") else { throw Failure("no subscribed frame") }
            return client
        }
        let rows = 60_000
        let received = Shared<[Int]>([])
        let reader = Task {
            try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", configuration: .init(maxFrameSize: 1 << 20), logger: Logger(label: "reader")) {
                inbound, outbound, _ in
                var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                _ = try await messages.next()
                try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                while received.withLock({ $0.count }) < rows, case .text(let text) = try await messages.next() {
                    guard let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                        let row = (frame["data"] as? [String: Any])?["row"] as? [String: Any], let id = row["id"] as? Int
                    else { continue }
                    received.withLock { $0.append(id) }
                }
                try await outbound.close(.normalClosure, reason: nil)
            }
        }
        try await eventually("the stalled client and the reader", within: 60, interval: .milliseconds(100)) {
            (try await Self.status(port: port)["clients"] as? Int) == 2
        }
        // 60,000 frames of about 180 bytes in one burst: 11 MB, within the 16 MB budget,
        // and fifteen times the old fixed frame limit.
        try await LiveDatabase.psql(url, "INSERT INTO parked SELECT g, 'r' FROM generate_series(1, \(rows)) g")
        try await eventually("the reader to have all \(rows) rows", within: 150, interval: .milliseconds(100), seen: {
            "the reader got \(received.withLock { $0.count }) of \(rows) rows"
        }) { received.withLock { $0.count } >= rows }
        #expect(received.withLock { $0 == Array(1...rows) }, "the reader got every row once, in order")
        try await within(60, "the reader to finish") { try await reader.value }
        _ = stalled
        #expect(try await server.stop() == 0, "serve output:\n\(server.output.suffix(2000))")
    }

    @Test func onlyThePagesOwnOriginAndServedHostsMayReadTheStream() async throws {
        let (server, port, _) = try await Self.serve(table: "guarded", ["--allow-origin", "http://good.example"])
        let portNumber = try #require(Int(port))
        let own = "127.0.0.1:\(port)"
        let cases: [(path: String, host: String, origin: String?, upgrade: Bool, expected: String)] = [
            // Browsers from other sites: refused by default, on every streaming route.
            // (A refused WebSocket upgrade is a bare 400 in hummingbird-websocket.)
            ("/ws", own, "http://evil.example", true, "400"),
            ("/events", own, "http://evil.example", false, "403"),
            // The page's own origin, an allowed one, and clients that are not browsers.
            ("/ws", own, "http://\(own)", true, "101"),
            ("/ws", own, "http://good.example", true, "101"),
            ("/ws", own, nil, true, "101"),
            ("/events", own, "http://\(own)", false, "200"),
            ("/events", own, nil, false, "200"),
            // Socket.IO, both transports.
            ("/socket.io/?EIO=4&transport=polling", own, "http://evil.example", false, "403"),
            ("/socket.io/?EIO=4&transport=websocket", own, "http://evil.example", true, "400"),
            ("/socket.io/?EIO=4&transport=polling", own, "http://good.example", false, "200"),
            ("/socket.io/?EIO=4&transport=websocket", own, "http://good.example", true, "101"),
            ("/socket.io/?EIO=4&transport=polling", "rebound.example:\(port)", "http://rebound.example:\(port)", false, "421"),
            // DNS rebinding: a name rowcast does not serve, on any route.
            ("/status", "rebound.example:\(port)", nil, false, "421"),
            ("/events", "rebound.example:\(port)", "http://rebound.example:\(port)", false, "421"),
            ("/ws", "rebound.example:\(port)", "http://rebound.example:\(port)", true, "400"),
            ("/", "rebound.example:\(port)", nil, false, "421"),
            ("/status", "localhost:\(port)", nil, false, "200"),
            // Hosts are parsed and compared exactly, never by prefix.
            ("/status", "127.rebind.example:\(port)", nil, false, "421"),
            ("/events", "127.rebind.example:\(port)", "http://127.rebind.example:\(port)", false, "421"),
            ("/status", "127.0.0.1.rebind.example:\(port)", nil, false, "421"),
            ("/status", "[::1].rebind.example:\(port)", nil, false, "421"),
            ("/status", "127.1:\(port)", nil, false, "421"),
            ("/status", "LOCALHOST.:\(port)", nil, false, "200"),
            ("/status", "127.0.0.2:\(port)", nil, false, "200"),
            ("/status", "[::1]:\(port)", nil, false, "200"),
        ]
        for item in cases {
            let status = try await onThread("\(item.path) with Host \(item.host)", within: 60) {
                try RawClient.status(port: portNumber, path: item.path, host: item.host, headers: item.origin.map { ["Origin": $0] } ?? [:], upgrade: item.upgrade)
            }
            #expect(status == item.expected, "\(item.path) Host \(item.host) Origin \(item.origin ?? "none")")
        }
        #expect(try await server.stop() == 0)
    }

    /// An HS256 JWT for `payload` (JSON), made with Python's standard library: an
    /// implementation rowcast had no hand in.
    static func jwt(secret: String, payload: String) async throws -> String {
        let script = """
            import base64, hashlib, hmac, json, sys
            part = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
            head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + part(sys.argv[2].encode())
            print(head + "." + part(hmac.new(sys.argv[1].encode(), head.encode(), hashlib.sha256).digest()))
            """
        let made = try await onThread("python3 to sign a JWT", within: 60) { try runChild("python3", ["-c", script, secret, payload], seconds: 30) }
        guard made.status == 0 else { throw Failure("python3 could not sign a JWT: \(made.stderr)") }
        return made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A token that "never expires" (exp in the year 9999, or later than any date) is a
    /// valid credential on every transport, and serve lives on: such a token once
    /// crashed it over /socket.io/ (an overflow converting the delay to its expiry).
    @Test func tokensThatExpireCenturiesAwayAreServedOnEveryTransport() async throws {
        let secret = "a-jwt-secret-of-at-least-32-bytes!!"
        let (server, port, _) = try await Self.serve(table: "forever", ["--jwt-secret", secret])
        let portNumber = try #require(Int(port))
        for exp in ["253402300799", "1e300"] {
            let token = try await Self.jwt(secret: secret, payload: #"{"exp": \#(exp)}"#)
            let answers = try await onThread("/ws, /events and /socket.io/ with a token expiring at \(exp)", within: 90) { () throws -> [String] in
                let webSocket = try RawClient(port: portNumber)
                guard webSocket.upgrade(path: "/ws?token=\(token)"), webSocket.read(until: "connected") else {
                    throw Failure("/ws: \(String(decoding: webSocket.received, as: UTF8.self))")
                }
                let events = try RawClient(port: portNumber)
                events.send("GET /events?token=\(token) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                guard events.read(until: ": connected") else { throw Failure("/events: \(String(decoding: events.received, as: UTF8.self))") }
                let socketIO = try RawClient(port: portNumber)
                guard socketIO.upgrade(path: "/socket.io/?EIO=4&transport=websocket"), socketIO.read(until: "\"sid\"") else {
                    throw Failure("no Engine.IO open packet: \(String(decoding: socketIO.received, as: UTF8.self))")
                }
                socketIO.sendText(#"40{"token":"\#(token)"}"#)
                guard socketIO.read(until: "\"pid\"") else { throw Failure("no CONNECT answer: \(String(decoding: socketIO.received, as: UTF8.self))") }
                return try [RawClient.status(port: portNumber, path: "/healthz", host: "127.0.0.1")]
            }
            #expect(answers == ["200"], "serve after exp \(exp):\n\(server.output.suffix(1500))")
        }
        #expect(try await server.stop() == 0, "serve output:\n\(server.output.suffix(2000))")
    }

    /// Durations from flags saturate: a window or recovery of 1e300 seconds, or an
    /// infinite one, means "as long as can be", not a trap converting it; a heartbeat
    /// longer than socket.io clients can wait (a day) is refused with the cause, and
    /// the tiniest positive one is a millisecond, never zero.
    @Test func absurdDurationFlagsSaturateOrAreRefused() async throws {
        let (server, port, url) = try await Self.serve(table: "absurd", [
            "--resume-window-age", "1e300", "--socketio-recovery", "inf", "--socketio-ping-interval", "1e-300", "--socketio-ping-timeout", "86400",
        ])
        let portNumber = try #require(Int(port))
        let health = try await onThread("GET /healthz", within: 60) { try RawClient.status(port: portNumber, path: "/healthz", host: "127.0.0.1") }
        #expect(health == "200")
        let open = String(decoding: try await onThread("an Engine.IO open packet", within: 60) {
            try RawClient.body(port: portNumber, path: "/socket.io/?EIO=4&transport=polling")
        }, as: UTF8.self)
        #expect(open.contains(#""pingInterval":1,"pingTimeout":86400000"#), "\(open)")
        #expect(try await server.stop() == 0, "serve output:\n\(server.output.suffix(2000))")
        for flag in ["--socketio-ping-interval", "--socketio-ping-timeout"] {
            let refused = try await Rowcast.run(["serve", "--mode", "trigger", "--table", "absurd", flag, "inf", "--port", "0", "--db", url])
            #expect(refused.status == 2)
            #expect(refused.stderr.hasPrefix("rowcast: --socketio-ping-interval and --socketio-ping-timeout take at most 86400 seconds"), "\(refused.stderr)")
        }
    }

    /// One client that connects, subscribes and leaves; true when it got `subscribed`.
    static func churnOnce(port: Int) -> Bool {
        guard let client = try? RawClient(port: port), client.upgrade() else { return false }
        client.sendText(#"{"event":"ready for data","data":{}}"#)
        return client.read(until: "subscribed")
    }

    @Test func aThousandClientsComingAndGoingLeakNothingAndSteadyClientsGetEveryRow() async throws {
        let (server, port, url) = try await Self.serve(table: "churn")
        let portNumber = try #require(Int(port))
        let logger = {
            var logger = Logger(label: "churn")
            logger.logLevel = .warning
            return logger
        }()
        // Steady clients: each must see every row exactly once, in order.
        let rows = 400
        let steady = 4
        let received = Shared<[[Int]]>(Array(repeating: [], count: steady))
        let steadyTasks = (0..<steady).map { index in
            Task {
                try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", configuration: .init(maxFrameSize: 1 << 20), logger: logger) { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    while received.withLock({ $0[index].count }) < rows, case .text(let text) = try await messages.next() {
                        guard let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                            let row = (frame["data"] as? [String: Any])?["row"] as? [String: Any], let id = row["id"] as? Int
                        else { continue }
                        received.withLock { $0[index].append(id) }
                    }
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
        try await eventually("\(steady) steady clients", within: 60, interval: .milliseconds(100)) {
            (try await Self.status(port: port)["clients"] as? Int) == steady
        }
        let baseline = server.openSockets
        // Rows flow while 1,000 clients come and go, 20 at a time.
        let writer = Task.detached {
            for batch in 0..<(rows / 10) {
                try await LiveDatabase.psql(url, "INSERT INTO churn SELECT g, 'row ' || g FROM generate_series(\(batch * 10 + 1), \(batch * 10 + 10)) g")
            }
        }
        var rss: [Int] = []
        var subscribed = 0
        for round in 0..<2 {
            subscribed += try await onThread("500 clients to come and go", within: 150) {
                let done = Mutex(0)
                DispatchQueue.concurrentPerform(iterations: 20) { _ in
                    for _ in 0..<25 where Self.churnOnce(port: portNumber) { done.withLock { $0 += 1 } }
                }
                return done.withLock { $0 }
            }
            // Every churning client is gone (steady ones may have left too, once they had every row).
            try await eventually("the churning clients to be gone", within: 60, interval: .milliseconds(100)) {
                (try await Self.status(port: port)["clients"] as? Int ?? .max) <= steady
            }
            rss.append(server.residentMegabytes)
            _ = round
        }
        try await within(120, "the churn test's writer") { try await writer.value }
        #expect(subscribed == 1_000, "every churning client subscribed")
        try await eventually("the steady clients to have all \(rows) rows", within: 60, interval: .milliseconds(100), seen: {
            "steady clients got \(received.withLock { $0.map(\.count) }) of \(rows) rows"
        }) { received.withLock { $0.allSatisfy { $0.count >= rows } } }
        let inOrder = received.withLock { $0.allSatisfy { $0 == Array(1...rows) } }
        #expect(inOrder, "steady clients got \(received.withLock { $0.map(\.count) }) of \(rows) rows, not in order")
        try await within(60, "the steady clients to close", seen: { "\(received.withLock { $0.map(\.count) }) rows" }) {
            for task in steadyTasks { _ = try? await task.value }
        }
        try await eventually("serve to release every client's socket", within: 60, interval: .milliseconds(100), seen: {
            "serve holds \(server.openSockets) sockets, \(baseline - steady) before any client came"
        }) { server.openSockets <= baseline - steady }
        // A leak would grow with every client; the second 500 must cost no more than the first.
        #expect(rss[1] <= rss[0] + 16, "RSS after 500 clients \(rss[0]) MB, after 1,000 \(rss[1]) MB")
        print("rowcast-test: churn of 1,000 clients: serve RSS \(rss[0]) MB after 500, \(rss[1]) MB after 1,000; sockets back to \(server.openSockets)")
        #expect(try await server.stop() == 0)
    }
}

/// A value several tasks update, behind a lock.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
