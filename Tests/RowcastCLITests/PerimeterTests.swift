import Foundation
import RowcastTestSupport
import Synchronization
import Testing

/// `rowcast serve` against a hostile client, asserting what a bystander sees.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct PerimeterTests {
    static let token = "perimeter-test-token"

    /// Socket.IO handshakes that never send CONNECT (no credential) are bounded per
    /// address: past the limit a handshake gets 503 with a reason, serve holds no more
    /// sessions than the limit, and a steady client gets every row meanwhile.
    @Test func handshakesThatNeverJoinAreBoundedAndABystanderGetsEveryRow() async throws {
        let table = "pending_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, url) = try await ServeFaultTests.serve(table: table, ["--token", Self.token, "--socketio-max-pending-per-address", "20"])
        let number = Int(port) ?? 0
        let bystander = try RawClient(port: number)
        bystander.send("GET /events?token=\(Self.token) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        #expect(try await onThread("the bystander's stream opening", within: 60) { bystander.read(until: ": connected") })

        // Few enough to be sent well within connectTimeout (45 s) on a loaded machine.
        let statuses = try await onThread("60 handshakes that never join", within: 120) {
            try (0..<60).map { _ in try RawClient.status(port: number, path: "/socket.io/?EIO=4&transport=polling", host: "127.0.0.1") }
        }
        let counts = Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count)
        #expect(counts == ["200": 20, "503": 40], "handshake answers: \(counts)")
        let body = try await onThread("GET /status", within: 60) { try RawClient.body(port: number, path: "/status?token=\(Self.token)") }
        let status = try JSONSerialization.jsonObject(with: body) as? [String: Any]
        #expect(status?["socketio_sessions"] as? Int == 20)
        let refusal = try await onThread("one more handshake's body", within: 60) {
            try RawClient.body(port: number, path: "/socket.io/?EIO=4&transport=polling")
        }
        #expect(String(decoding: refusal, as: UTF8.self).contains("Too many sessions waiting to join"))

        try await LiveDatabase.psql(url, "INSERT INTO \(table) SELECT n, 'row ' || n FROM generate_series(1, 50) n")
        #expect(try await onThread("the bystander's 50 rows", within: 60) { bystander.read(until: #""id":50,"#) })
        let stream = String(decoding: bystander.received, as: UTF8.self)
        let missing = (1...50).filter { !stream.contains(#""id":\#($0),"#) }
        #expect(missing.isEmpty, "the bystander missed rows \(missing.prefix(10))")
        #expect(try await server.stop() == 0)
    }

    /// A client that sends its request head a line at a time and never ends it
    /// (slowloris) is closed after `--idle-timeout`, as is a keep-alive connection left
    /// idle; an SSE stream and a WebSocket that were quiet for longer stay open and get
    /// the next row.
    @Test func connectionsWithoutAWholeRequestAreClosedAndStreamsStay() async throws {
        let table = "idle_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, url) = try await ServeFaultTests.serve(table: table, ["--idle-timeout", "2"])
        let number = Int(port) ?? 0
        let stream = try RawClient(port: number)
        stream.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let socket = try RawClient(port: number)
        #expect(try await onThread("the bystanders opening", within: 60) { stream.read(until: ": connected") && socket.upgrade() })
        socket.sendText(#"{"event":"ready for data","data":{}}"#)
        #expect(try await onThread("the WebSocket subscribed", within: 60) { socket.read(until: "subscribed") })

        // Opened after the bystanders: if idleness applied to them, they would be closed first.
        let keepAlive = try RawClient(port: number)
        keepAlive.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        // Blank lines before a request are skipped by the parser: they are no head.
        let blank = try RawClient(port: number)
        blank.send("\r\n\r\n")
        let slow = try RawClient(port: number)
        slow.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        let closedSlow = try await onThread("the slowloris client closed", within: 90) { () -> Bool in
            let deadline = Date().addingTimeInterval(80)
            while Date() < deadline {
                guard slow.trySend("X-Slow: a\r\n") else { return true }
                usleep(200_000)
            }
            return false
        }
        #expect(closedSlow, "a request head sent a line at a time kept its connection")
        #expect(try await onThread("the idle keep-alive connection closed", within: 90) { keepAlive.readUntilClosed(seconds: 80) })
        #expect(try await onThread("the blank-lines connection closed", within: 90) { blank.readUntilClosed(seconds: 80) })

        try await LiveDatabase.psql(url, "INSERT INTO \(table) VALUES (1, 'after the quiet')")
        #expect(try await onThread("the row on both streams", within: 60) {
            stream.read(until: "after the quiet") && socket.read(until: "after the quiet")
        })
        #expect(try await server.stop() == 0)
    }

    /// `/events` requests whose connection is reset before the answer leave nothing
    /// registered: the clients count comes back, and a record is sent to no one.
    @Test func streamsResetBeforeTheirAnswerLeaveNoClientBehind() async throws {
        let table = "reset_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, url) = try await ServeFaultTests.serve(table: table)
        let number = Int(port) ?? 0
        try await onThread("50 streams reset at once", within: 60) {
            for _ in 0..<50 {
                let client = try RawClient(port: number)
                client.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                client.reset()
            }
        }
        try await Self.waitForNoClient(port: number)
        try await LiveDatabase.psql(url, "INSERT INTO \(table) VALUES (1, 'to no one')")
        #expect(try await server.stop() == 0)
    }

    /// Past `--max-connections-per-address` a connection from that address is answered
    /// 503 naming the flag, while other addresses are served; past `--max-connections`
    /// every address is, until a connection closes. A stream opened first gets every
    /// row throughout. (Any 127/8 address is this machine: each is a client address.)
    @Test func connectionsPastTheLimitsAreRefusedAndABystanderGetsEveryRow() async throws {
        let table = "conns_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, url) = try await ServeFaultTests.serve(
            table: table, ["--max-connections", "8", "--max-connections-per-address", "5", "--idle-timeout", "600"]
        )
        let number = Int(port) ?? 0
        let bystander = try RawClient(port: number, from: "127.0.0.9")
        bystander.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        #expect(try await onThread("the bystander's stream opening", within: 60) { bystander.read(until: ": connected") })

        /// A keep-alive connection from `address` and the first line of its answer to `GET /healthz`.
        @Sendable func open(from address: String) throws -> (RawClient, String) {
            let client = try RawClient(port: number, from: address)
            client.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _ = client.read(until: "\r\n\r\n")
            return (client, String(decoding: client.received.prefix(while: { $0 != 13 }), as: UTF8.self))
        }
        let (held, sixth) = try await onThread("six connections from one address", within: 60) { () throws -> ([RawClient], (RawClient, String)) in
            var held: [RawClient] = []
            for _ in 0..<5 {
                let (client, line) = try open(from: "127.0.0.2")
                #expect(line == "HTTP/1.1 200 OK", "a connection within the limits was answered \(line)")
                held.append(client)
            }
            return (held, try open(from: "127.0.0.2"))
        }
        #expect(sixth.1 == "HTTP/1.1 503 Service Unavailable", "the sixth connection from one address was answered \(sixth.1)")
        #expect(String(decoding: sixth.0.received, as: UTF8.self).contains("--max-connections-per-address"))

        // The bystander and five held: two more from another address fill the total.
        let (others, refused) = try await onThread("connections up to the total", within: 60) { () throws -> ([RawClient], (RawClient, String)) in
            let others = try [open(from: "127.0.0.3"), open(from: "127.0.0.3")]
            return (others.map(\.0), try open(from: "127.0.0.4"))
        }
        #expect(others.count == 2)
        #expect(refused.1 == "HTTP/1.1 503 Service Unavailable", "a connection past the total was answered \(refused.1)")
        #expect(String(decoding: refused.0.received, as: UTF8.self).contains("--max-connections)"))

        try await LiveDatabase.psql(url, "INSERT INTO \(table) SELECT n, 'row ' || n FROM generate_series(1, 30) n")
        #expect(try await onThread("the bystander's 30 rows", within: 60) { bystander.read(until: #""id":30,"#) })

        // One closes: a newcomer is served again.
        held[0].reset()
        let seen = Mutex("")
        try await eventually("a connection served once one closed", within: 60, seen: { seen.withLock { $0 } }) {
            let line = try await onThread("a new connection", within: 60) { try open(from: "127.0.0.4").1 }
            seen.withLock { $0 = line }
            return line == "HTTP/1.1 200 OK"
        }
        #expect(try await server.stop() == 0)
    }

    /// When `--socketio-max-pending` sessions wait to join, sent from several addresses,
    /// a handshake from a new address is not refused: the oldest session of the address
    /// holding the most is closed instead, and the newcomer joins. An address at its own
    /// limit is still refused.
    @Test func aFullPendingSetShedsTheBusiestAddressNotANewcomer() async throws {
        let table = "shed_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(
            table: table, ["--token", Self.token, "--socketio-max-pending", "40", "--socketio-max-pending-per-address", "10"]
        )
        let number = Int(port) ?? 0
        let handshake = "/socket.io/?EIO=4&transport=polling"
        let statuses = try await onThread("40 handshakes from four addresses", within: 120) {
            try (2...5).flatMap { address in
                try (0..<10).map { _ in try RawClient.status(port: number, path: handshake, host: "127.0.0.1", from: "127.0.0.\(address)") }
            }
        }
        #expect(statuses == Array(repeating: "200", count: 40), "handshake answers: \(statuses)")
        let again = try await onThread("one more from a full address", within: 60) {
            try RawClient.status(port: number, path: handshake, host: "127.0.0.1", from: "127.0.0.2")
        }
        #expect(again == "503")

        let open = try await onThread("a newcomer's handshake", within: 60) { try RawClient.body(port: number, path: handshake, from: "127.0.0.6") }
        let opened = try? JSONSerialization.jsonObject(with: open.dropFirst()) as? [String: Any]
        let sid = try #require(opened?["sid"] as? String, "the newcomer was answered \(String(decoding: open.prefix(200), as: UTF8.self))")
        let connect = #"40{"token":"\#(Self.token)"}"#
        let posted = try await onThread("the newcomer's CONNECT", within: 60) { () throws -> String in
            let client = try RawClient(port: number, from: "127.0.0.6")
            client.send("POST \(handshake)&sid=\(sid) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: \(connect.utf8.count)\r\nConnection: close\r\n\r\n\(connect)")
            _ = client.readUntilClosed(seconds: 30)
            return String(decoding: client.received, as: UTF8.self)
        }
        #expect(posted.hasSuffix("ok"), "the CONNECT was answered \(posted.suffix(200))")
        let joined = try await onThread("the newcomer's poll", within: 60) { try RawClient.body(port: number, path: "\(handshake)&sid=\(sid)", from: "127.0.0.6") }
        #expect(String(decoding: joined, as: UTF8.self).contains(#"40{"sid""#))

        let seen = Mutex("")
        try await eventually("40 sessions: the shed one closed", within: 60, seen: { seen.withLock { $0 } }) {
            let body = try await onThread("GET /status", within: 60) { try RawClient.body(port: number, path: "/status?token=\(Self.token)") }
            let status = try JSONSerialization.jsonObject(with: body) as? [String: Any]
            seen.withLock { $0 = "socketio_sessions \(status?["socketio_sessions"] ?? "?")" }
            return status?["socketio_sessions"] as? Int == 40
        }
        #expect(try await server.stop() == 0)
    }

    /// A request body sent a byte at a time is cut off at `--idle-timeout` (each byte
    /// used to restart the HTTP layer's idle timer), on any route and on Socket.IO's
    /// `POST`; a `POST` over Engine.IO's maxPayload is 413 and ends its session; a URL or
    /// headers over 80 KB are 400 (the HTTP parser's bound), and serve answers on.
    @Test func bodiesSentAByteAtATimeAreCutOffAndOversizedRequestsRefused() async throws {
        let table = "body_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--idle-timeout", "2"])
        let number = Int(port) ?? 0
        let handshake = "/socket.io/?EIO=4&transport=polling"
        func session() async throws -> String {
            let open = try await onThread("a handshake", within: 60) { try RawClient.body(port: number, path: handshake) }
            let opened = try? JSONSerialization.jsonObject(with: open.dropFirst()) as? [String: Any]
            return try #require(opened?["sid"] as? String, "the handshake was answered \(String(decoding: open.prefix(200), as: UTF8.self))")
        }
        let sid = try await session()
        let page = try RawClient(port: number)
        page.send("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        let post = try RawClient(port: number)
        post.send("POST \(handshake)&sid=\(sid) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n")
        // Refused at once (413) for its length, then sent a byte at a time: the refusal
        // left the body to be drained part by part.
        let refused = try RawClient(port: number)
        refused.send("POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n")
        let closed = try await onThread("bodies sent a byte at a time", within: 90) { () -> [Bool] in
            var open = [true, true, true]
            let deadline = Date().addingTimeInterval(80)
            while open.contains(true), Date() < deadline {
                for (index, client) in [page, post, refused].enumerated() where open[index] {
                    open[index] = client.trySend("a")
                }
                usleep(200_000)
            }
            return open.map { !$0 }
        }
        #expect(closed == [true, true, true], "closed (a route, Socket.IO's POST, a body refused for its length): \(closed)")

        let other = try await session()
        let payload = String(repeating: "4", count: 70_000)
        let answer = try await onThread("a POST over maxPayload", within: 60) { () throws -> String in
            let client = try RawClient(port: number)
            client.send("POST \(handshake)&sid=\(other) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: \(payload.utf8.count)\r\nConnection: close\r\n\r\n\(payload)")
            _ = client.readUntilClosed(seconds: 30)
            return String(decoding: client.received.prefix(while: { $0 != 13 }), as: UTF8.self)
        }
        #expect(answer.hasPrefix("HTTP/1.1 413 "), "a POST over maxPayload was answered \(answer)")
        let poll = try await onThread("a poll of that session", within: 60) { try RawClient.body(port: number, path: "\(handshake)&sid=\(other)") }
        #expect(String(decoding: poll, as: UTF8.self).contains("Session ID unknown"))

        // Hundreds of packets in one POST are no client's (each would wait its turn).
        let many = try await session()
        let packets = Array(repeating: "6", count: 300).joined(separator: "\u{1E}")
        let manyAnswer = try await onThread("a POST of 300 packets", within: 60) { () throws -> String in
            let client = try RawClient(port: number)
            client.send("POST \(handshake)&sid=\(many) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: \(packets.utf8.count)\r\nConnection: close\r\n\r\n\(packets)")
            _ = client.readUntilClosed(seconds: 30)
            return String(decoding: client.received, as: UTF8.self)
        }
        #expect(manyAnswer.contains("more than 256 packets"), "a POST of 300 packets was answered \(manyAnswer.suffix(200))")

        #expect(try await server.stop() == 0)

        // On a serve with the default --idle-timeout: 100 KB of head must be read before
        // the parser refuses it, which a loaded machine may not do within 2 s.
        let (defaults, defaultsPort, _) = try await ServeFaultTests.serve(table: table + "_long")
        let defaultsNumber = Int(defaultsPort) ?? 0
        let long = String(repeating: "a", count: 100_000)
        let (url, headers, health) = try await onThread("a long URL, long headers, then /healthz", within: 60) {
            try (
                RawClient.status(port: defaultsNumber, path: "/events?tables=\(long)", host: "127.0.0.1"),
                RawClient.status(port: defaultsNumber, path: "/healthz", host: "127.0.0.1", headers: ["X-Long": long]),
                RawClient.status(port: defaultsNumber, path: "/healthz", host: "127.0.0.1")
            )
        }
        #expect([url, headers, health] == ["400", "400", "200"], "a long URL, long headers, then /healthz: \([url, headers, health])")
        #expect(try await defaults.stop() == 0)
    }

    /// Ten `POST`s, each carrying a CONNECT, sent at once on one session: the session
    /// joins once (one answer, one client), whatever order they land in.
    @Test func concurrentConnectsJoinASessionOnce() async throws {
        let table = "joins_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--token", Self.token])
        let number = Int(port) ?? 0
        let handshake = "/socket.io/?EIO=4&transport=polling"
        let open = try await onThread("a handshake", within: 60) { try RawClient.body(port: number, path: handshake) }
        let opened = try? JSONSerialization.jsonObject(with: open.dropFirst()) as? [String: Any]
        let sid = try #require(opened?["sid"] as? String, "the handshake was answered \(String(decoding: open.prefix(200), as: UTF8.self))")
        let connect = #"40{"token":"\#(Self.token)"}"#
        // Every connection is open and its head sent before any body: the bodies land together.
        let answers = try await onThread("ten CONNECTs at once", within: 90) { () throws -> [String] in
            let clients = try (0..<10).map { _ in try RawClient(port: number) }
            for client in clients {
                client.send("POST \(handshake)&sid=\(sid) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: \(connect.utf8.count)\r\nConnection: close\r\n\r\n")
            }
            DispatchQueue.concurrentPerform(iterations: clients.count) { clients[$0].send(connect) }
            return clients.map { client in
                _ = client.readUntilClosed(seconds: 30)
                return String(decoding: client.received, as: UTF8.self)
            }
        }
        #expect(answers.allSatisfy { $0.hasSuffix("ok") }, "answers: \(answers.map { $0.suffix(40) })")
        let polled = try await onThread("a poll", within: 60) { try RawClient.body(port: number, path: "\(handshake)&sid=\(sid)") }
        let packets = String(decoding: polled, as: UTF8.self)
        #expect(packets.components(separatedBy: #"40{"sid""#).count - 1 == 1, "the session joined more than once: \(packets.prefix(400))")
        let body = try await onThread("GET /status", within: 60) { try RawClient.body(port: number, path: "/status?token=\(Self.token)") }
        let status = try JSONSerialization.jsonObject(with: body) as? [String: Any]
        #expect(status?["socketio_sessions"] as? Int == 1 && status?["clients"] as? Int == 1, "status: \(String(decoding: body, as: UTF8.self))")
        #expect(try await server.stop() == 0)
    }

    /// Frames a `/ws` client sent faster than its rate and then left are dropped, not
    /// handled one by one after it is gone (5,000 of them kept a session, its client
    /// count and serve's shutdown waiting for four minutes).
    @Test func framesSentAheadOfTheirTurnDieWithTheirConnection() async throws {
        let table = "ahead_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table)
        let number = Int(port) ?? 0
        try await onThread("5,000 frames, then a reset", within: 60) {
            let client = try RawClient(port: number)
            guard client.upgrade() else { throw Failure("no WebSocket upgrade") }
            for _ in 0..<5_000 { client.sendText(#"{"event":"unsubscribe","data":{}}"#) }
            client.reset()
        }
        try await Self.waitForNoClient(port: number)
        #expect(try await server.stop() == 0)
    }

    /// A WebSocket that probes a polling session (`2probe`, answered `3probe`) and never
    /// sends `5` is closed within pingTimeout (2 s; the session itself lives on, its
    /// first ping two minutes away); it used to stay open for as long as the session,
    /// and minutes after the session had ended.
    @Test func aProbeThatNeverMovesTheSessionIsClosedWithinPingTimeout() async throws {
        let table = "probe_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--socketio-ping-interval", "120", "--socketio-ping-timeout", "2"])
        let number = Int(port) ?? 0
        let open = try await onThread("a handshake", within: 60) { try RawClient.body(port: number, path: "/socket.io/?EIO=4&transport=polling") }
        let opened = try? JSONSerialization.jsonObject(with: open.dropFirst()) as? [String: Any]
        let sid = try #require(opened?["sid"] as? String, "the handshake was answered \(String(decoding: open.prefix(200), as: UTF8.self))")
        let closed = try await onThread("a probe that never sends 5", within: 120) { () throws -> Bool in
            let probe = try RawClient(port: number)
            guard probe.upgrade(path: "/socket.io/?EIO=4&transport=websocket&sid=\(sid)") else { throw Failure("no WebSocket upgrade") }
            probe.sendText("2probe")
            guard probe.read(until: "3probe") else { throw Failure("no 3probe") }
            return probe.readUntilClosed(seconds: 30)
        }
        #expect(closed, "the probe stayed open for 30 s")
        #expect(try await server.stop() == 0)
    }

    /// WebSocket pings (answered by the WebSocket layer, before any message reaches the
    /// session) are paced with every other frame, at eight times the message rate: 400
    /// of them sent at once at 10 messages a second take 4 s or more to be answered,
    /// all of them, in order with the next message. They used to be answered as fast as
    /// they came (5,000 to 7,500 a second from one connection).
    @Test func pingFramesArePacedLikeMessages() async throws {
        let table = "pings_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--client-messages-per-second", "10"])
        let number = Int(port) ?? 0
        let (pongs, seconds) = try await onThread("400 pings, then a ping message", within: 120) { () throws -> (Int, Double) in
            let client = try RawClient(port: number)
            guard client.upgrade(), client.read(until: "connected") else { throw Failure("no WebSocket upgrade") }
            let ping: [UInt8] = [0x89, 0x84, 0, 0, 0, 0] + Array("abcd".utf8)
            let started = Date()
            client.send(Array((0..<400).map { _ in ping }.joined()))
            client.sendText(#"{"event":"ping","data":{"after":"pings"}}"#)
            guard client.read(until: #""after":"pings""#) else { throw Failure("no answer to the ping message") }
            let pong = Data([0x8A, 0x04] + Array("abcd".utf8))
            var count = 0
            var rest = client.received[...]
            while let found = rest.range(of: pong) {
                count += 1
                rest = rest[found.upperBound...]
            }
            return (count, Date().timeIntervalSince(started))
        }
        #expect(pongs == 400, "pongs before the message's answer")
        // 80 frames a second, 80 at once: the other 320 take 4 s; a little less for timers.
        #expect(seconds >= 3.6, "400 pings were answered within \(seconds) s")
        #expect(try await server.stop() == 0)
    }

    /// `--requests-per-second-per-address`: requests from one address wait their turn
    /// over all its connections (60 at once at one a second: the last a minute later),
    /// while another address is answered at once; requests still waiting do not hold
    /// serve's shutdown.
    @Test func requestsFromOneAddressWaitTheirTurnAndOtherAddressesDoNot() async throws {
        let table = "turns_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--requests-per-second-per-address", "1"])
        let number = Int(port) ?? 0
        let flood = try (0..<60).map { _ in try RawClient(port: number) }
        for client in flood { client.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") }
        #expect(try await ServeFaultTests.status(port: port, from: "127.0.0.2")["mode"] as? String == "trigger")
        let answered = flood.filter { client in
            client.readAvailable()
            return client.received.starts(with: Data("HTTP/1.1 ".utf8))
        }.count
        #expect(answered < 60, "all 60 requests of one address were answered before another address's one")
        let metrics = try await onThread("GET /metrics from a third address", within: 60) {
            try RawClient.body(port: number, path: "/metrics", from: "127.0.0.3")
        }
        let paced = String(decoding: metrics, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("rowcast_requests_paced_total") }
        #expect(paced.flatMap { $0.split(separator: " ").last.flatMap { Int($0) } } ?? 0 >= 1, "\(paced ?? "no rowcast_requests_paced_total")")
        #expect(try await server.stop() == 0, "serve output:\n\(server.output.suffix(1000))")
    }

    /// Matching the resume window (`last`, `since`) is paid for by the client's address,
    /// whatever its number of connections: every 50 records matched cost the address a
    /// turn of `--requests-per-second-per-address`, and a scan takes a turn first, so it
    /// waits until the address's earlier ones are paid for. Four connections scanning 500
    /// records one after another at 5 turns a second (11 turns a scan, 5 at once) take
    /// 6 s or more; each connection's own pace (1,000 messages a second here) let them
    /// all go at once before.
    @Test func windowScansAreChargedToTheAddressAcrossItsConnections() async throws {
        let table = "scans_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, url) = try await ServeFaultTests.serve(
            table: table, ["--requests-per-second-per-address", "5", "--client-messages-per-second", "1000"]
        )
        let number = Int(port) ?? 0
        try await LiveDatabase.psql(url, "INSERT INTO \(table) SELECT n, 'row ' || n FROM generate_series(1, 500) n")
        try await eventually("the window to hold the 500 rows", within: 60, interval: .milliseconds(100)) {
            try await ServeFaultTests.status(port: port, from: "127.0.0.2")["window_records"] as? Int == 500
        }
        let clients = try await onThread("four WebSocket clients", within: 60) { () throws -> [RawClient] in
            try (0..<4).map { _ in
                let client = try RawClient(port: number)
                guard client.upgrade(), client.read(until: "connected") else { throw Failure("no WebSocket upgrade") }
                return client
            }
        }
        let started = Date()
        let answered = try await onThread("four scans of the whole window, one after another", within: 120) { () -> Int in
            clients.filter { client in
                client.sendText(#"{"event":"subscribe","data":{"last":500,"filter":"id=eq.0"}}"#)
                return client.read(until: #""event":"subscribed""#)
            }.count
        }
        let seconds = Date().timeIntervalSince(started)
        #expect(answered == 4)
        // The upgrades' 4 turns and the burst's 5 aside, each later scan waits for the 11
        // turns of the one before: 6.6 s on the schedule, a little less for timers.
        #expect(seconds >= 6, "four scans of 500 records from one address took \(seconds) s")
        #expect(try await server.stop() == 0)
    }

    /// Scans that one address starts at once: each pays ahead for all it may read (the
    /// window after its `since`, or the whole window for a `last`), in the same
    /// critical section that lets it start, so the others wait or are refused before
    /// any of them runs; a scan that matched little gives the rest back at once. Scans
    /// used to be charged only as they went: of twenty started together, as many ran
    /// whole as there were threads to start them before the first had charged enough
    /// (two of them on two cores; a burst of a hundred connections kept both busy
    /// for seconds).
    @Test func scansStartedAtOnceFromOneAddressPayAheadAndOnlyOneRuns() async throws {
        let table = "burst_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, url) = try await ServeFaultTests.serve(
            table: table, ["--resume-window", "100000", "--client-messages-per-second", "1000"]
        )
        let number = Int(port) ?? 0
        try await LiveDatabase.psql(url, "INSERT INTO \(table) SELECT n, 'row ' || n FROM generate_series(1, 100000) n")
        try await eventually("the window to hold the 100,000 rows", within: 120, interval: .milliseconds(200)) {
            try await ServeFaultTests.status(port: port, from: "127.0.0.2")["window_records"] as? Int == 100_000
        }
        let clients = try await onThread("twenty WebSocket clients", within: 60) { () throws -> [RawClient] in
            try (0..<20).map { _ in
                let client = try RawClient(port: number)
                guard client.upgrade(), client.read(until: "connected") else { throw Failure("no WebSocket upgrade") }
                return client
            }
        }
        @Sendable func count(_ marker: String, in text: String) -> Int { text.components(separatedBy: marker).count - 1 }
        let subscribed = #""event":"subscribed""#, refused = #""code":"too_many_scans""#
        // One after another, each `last: 1` matches a record or two and gives back the
        // 100,000 it paid ahead for: none waits long, none is refused.
        let honest = try await onThread("twenty scans of one record, one after another", within: 120) { () -> Int in
            clients.filter { client in
                client.sendText(#"{"event":"subscribe","data":{"last":1}}"#)
                return client.read { count(subscribed, in: $0) + count(refused, in: $0) >= 1 } && count(subscribed, in: String(decoding: client.received, as: UTF8.self)) == 1
            }.count
        }
        #expect(honest == 20, "\(20 - honest) of 20 scans of one record, one after another, were refused")
        // At once, each asking for a record that is not there: the whole window each.
        let outcomes = try await onThread("twenty scans of the whole window at once", within: 120) { () -> [String] in
            for client in clients { client.sendText(#"{"event":"subscribe","data":{"last":1,"filter":"id=eq.0"}}"#) }
            return clients.map { client in
                let answered = client.read { count(subscribed, in: $0) + count(refused, in: $0) >= 2 }
                let text = String(decoding: client.received, as: UTF8.self)
                return !answered ? "none" : count(refused, in: text) > 0 ? "refused" : "ran"
            }
        }
        let ran = outcomes.filter { $0 == "ran" }.count, refusedCount = outcomes.filter { $0 == "refused" }.count
        // The first pays ahead 2,000 turns (20 s at 100 a second): every other is refused.
        #expect(ran == 1 && refusedCount == 19, "of twenty whole-window scans at once \(ran) ran, \(refusedCount) were refused")
        #expect(try await server.stop() == 0)
    }

    /// A request that would wait more than 10 s for its address's turn is held 10 s,
    /// then refused with 429 and `Retry-After`, and takes no turn. Requests used to
    /// wait however long the address owed, each connection unread meanwhile (a client
    /// that left unseen): minutes once window scans had charged the address. Refused at
    /// once instead, a client pipelining on keep-alive connections was refused as fast
    /// as it asked (43,000 a second, serve at 163 % CPU): a refusal costs its
    /// connection the longest wait.
    @Test func requestsThatWouldWaitLongAreHeldThenRefused() async throws {
        let table = "waits_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--requests-per-second-per-address", "1"])
        let number = Int(port) ?? 0
        let answers = try await onThread("twenty requests at once from one address", within: 120) { () throws -> [(String, Double)] in
            let clients = try (0..<20).map { _ in try RawClient(port: number, from: "127.0.0.4") }
            let sent = Date()
            for client in clients { client.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") }
            // One goes at once, the next ten wait a second more each, the rest would wait
            // more than 10 s. Each answer with when it came.
            var answers = [(String, Double)?](repeating: nil, count: clients.count)
            let head = Data("\r\n\r\n".utf8)
            while answers.contains(where: { $0 == nil }), Date().timeIntervalSince(sent) < 90 {
                for (index, client) in clients.enumerated() where answers[index] == nil {
                    client.readAvailable()
                    if client.received.range(of: head) != nil {
                        answers[index] = (String(decoding: client.received, as: UTF8.self).lowercased(), Date().timeIntervalSince(sent))
                    }
                }
                usleep(5_000)
            }
            return answers.map { $0 ?? ("none", 90) }
        }
        let ok = answers.filter { $0.0.hasPrefix("http/1.1 200") }.count
        let refusals = answers.filter { $0.0.hasPrefix("http/1.1 429") && $0.0.contains("\r\nretry-after: ") }
        #expect(ok >= 1 && refusals.count >= 5 && ok + refusals.count == 20, "\(ok) answered, \(refusals.count) refused with Retry-After, of 20")
        let soonest = refusals.map(\.1).min() ?? 0
        #expect(soonest >= 9, "a refusal came \(soonest) s after its request")
        #expect(try await server.stop() == 0)
    }

    /// SIGTERM ends every wait for a turn: a waiting request is answered 503, a waiting
    /// upgrade refused (a bare 400 in this HTTP stack). An upgrade is decided outside
    /// the request's task, which the server's graceful shutdown does not reach: it used
    /// to wait for its turn after SIGTERM and get its `101` then, holding the shutdown
    /// for as long as its address owed.
    @Test func shutdownEndsTheWaitsOfRequestsAndUpgrades() async throws {
        let table = "shutwait_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--requests-per-second-per-address", "1"])
        let number = Int(port) ?? 0
        let upgrade = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        // The twenty-one connections are made, and held by serve, before any request is
        // sent: the requests' waits (10 s at most) then start just before SIGTERM. Sent
        // first, they could all end, answered or refused, while a loaded machine still
        // made the connections (all 200 or 429, none waiting).
        let (clients, upgrading) = try await onThread("twenty-one connections from one address", within: 120) {
            () throws -> ([RawClient], RawClient) in
            (try (0..<20).map { _ in try RawClient(port: number, from: "127.0.0.4") }, try RawClient(port: number, from: "127.0.0.4"))
        }
        try await eventually("serve to hold the twenty-one connections", within: 60, interval: .milliseconds(50)) {
            try await ServeFaultTests.status(port: port, from: "127.0.0.2")["connections"] as? Int ?? 0 >= 22
        }
        let (requests, upgraded) = try await onThread("twenty requests and an upgrade, SIGTERM, and the answers", within: 120) {
            () -> ([String], String) in
            for client in clients { client.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") }
            // One is answered at once (whichever: the server takes them in no set order);
            // ten wait up to 10 s, and the others and the upgrade are held 10 s before
            // their refusal: SIGTERM comes while several wait.
            let head = Data("\r\n\r\n".utf8)
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline, !clients.contains(where: { $0.received.range(of: head) != nil }) {
                for client in clients { client.readAvailable() }
                usleep(5_000)
            }
            upgrading.send(upgrade)
            server.signal(SIGTERM)
            let status = { (client: RawClient) -> String in
                _ = client.read(until: "\r\n\r\n")
                let line = String(decoding: client.received.prefix(while: { $0 != 13 }), as: UTF8.self)
                // A connection the server had not read yet is closed unanswered.
                return line.split(separator: " ").dropFirst().first.map(String.init) ?? "none"
            }
            return (clients.map(status), status(upgrading))
        }
        let count = { (status: String) in requests.filter { $0 == status }.count }
        #expect(count("503") >= 3 && count("200") + count("503") + count("none") == 20, "requests: \(requests)")
        #expect(upgraded == "400" || upgraded == "none", "the upgrade: \(upgraded)")
        #expect(try await server.stop() == 0)
    }

    /// SIGTERM while a WebSocket's next message waits its connection's turn (its
    /// replay charged the connection 10 s, twice): the wait ends, and serve exits in
    /// seconds. The wait was a timer nothing ended: serve took 21 s to exit.
    @Test func shutdownEndsAConnectionsWaitForItsTurn() async throws {
        let table = "turnwait_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        // A small queue: the replay is read on as the client drains, and what that
        // matches is charged again before the next message.
        let (server, port, url) = try await ServeFaultTests.serve(
            table: table, ["--client-messages-per-second", "1", "--client-queue-bytes", "16384"]
        )
        let number = Int(port) ?? 0
        try await LiveDatabase.psql(url, "INSERT INTO \(table) SELECT n, 'row ' || n FROM generate_series(1, 1000) n")
        try await eventually("the window to hold the 1,000 rows", within: 60, interval: .milliseconds(100)) {
            try await ServeFaultTests.status(port: port, from: "127.0.0.2")["window_records"] as? Int == 1_000
        }
        let client = try await onThread("a replay of the window, then a ping", within: 60) { () throws -> RawClient in
            let client = try RawClient(port: number)
            guard client.upgrade(), client.read(until: "connected") else { throw Failure("no WebSocket upgrade") }
            // 2,000 records matched (backward, then forward as it drains): 40 turns at
            // 1 a second, 10 s charged to the connection (its most at once) after the
            // reply, and 10 s more before its next message.
            client.sendText(#"{"event":"subscribe","data":{"last":1000}}"#)
            guard client.read(until: #""id":1000"#) else { throw Failure("the replay did not arrive") }
            client.sendText(#"{"event":"ping"}"#)
            return client
        }
        // The ping waits its turn; SIGTERM now. The client leaves once it is told the
        // server is shutting down, as a real one does (or once the server closes it: a
        // close frame can be lost to the reset that closing with the ping unread sends,
        // and serve then closes the connection after its 10 s grace).
        let started = Date()
        server.signal(SIGTERM)
        _ = try await onThread("the close frame", within: 60) { () -> Bool in
            defer { client.reset() }
            return client.read(until: "server shutting down")
        }
        let code = try await server.stop(SIGTERM, seconds: 60)
        let seconds = Date().timeIntervalSince(started)
        #expect(code == 0)
        // 0.1 s when the close frame arrives, at most the grace when it does not; the
        // wait that nothing ended made it 21 s.
        #expect(seconds < 16, "serve took \(seconds) s to exit while a connection waited its turn")
    }

    /// Pipelined requests whose answers are never read: once the kernel's and the
    /// channel's buffers are full, the connection is closed after `--idle-timeout`
    /// without a write going through. It used to stay open for good (the HTTP layer's
    /// idle timer runs only while it reads), holding megabytes of buffers.
    @Test func aConnectionWhoseAnswersAreNeverReadIsClosed() async throws {
        let table = "unread_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--idle-timeout", "2", "--requests-per-second-per-address", "0"])
        let number = Int(port) ?? 0
        let client = try RawClient(port: number, receiveBuffer: 4096)
        // 3,000 pages of 13 KB: 40 MB of answers, far more than the buffers hold.
        let requests = String(repeating: "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", count: 3_000)
        try await onThread("3,000 pipelined requests", within: 60) { client.send(requests) }
        // Never read: only the connection asking for /status is left. (A poll that
        // fails, its own connection closed by `--idle-timeout 2` when the run is busy,
        // is polled again.)
        try await eventually("serve to close the connection whose answers nobody reads", within: 60, interval: .milliseconds(200)) {
            (try? await ServeFaultTests.status(port: port, from: "127.0.0.2"))?["connections"] as? Int == 1
        }
        #expect(try await server.stop() == 0)
    }

    /// A client that streams WebSocket frames right behind its upgrade request, while
    /// the upgrade waits for its address's turn: serve reads nothing past the request
    /// until it answered, so the frames wait in the kernel, whose window stops the
    /// client after a few MB. Serve used to read them all into memory (gigabytes in
    /// seconds, with SIGTERM ignored).
    @Test func framesStreamedBehindAnUpgradeWaitInTheKernel() async throws {
        let table = "upflood_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, _) = try await ServeFaultTests.serve(table: table, ["--requests-per-second-per-address", "1"])
        let number = Int(port) ?? 0
        let before = server.residentMegabytes
        let (accepted, during) = try await onThread("an upgrade that waits its turn, and 4 s of pings behind it", within: 60) { () throws -> (Int, Int) in
            // The address's one request at once goes to this one; the upgrade waits a second.
            _ = try RawClient.body(port: number, path: "/healthz")
            let client = try RawClient(port: number)
            client.send("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            let pings = Array(repeating: [UInt8]([0x89, 0x80, 0, 0, 0, 0]), count: 10_000).flatMap { $0 }
            var accepted = 0
            let end = Date().addingTimeInterval(4)
            while Date() < end {
                let sent = client.sendAvailable(pings)
                accepted += sent
                if sent == 0 { usleep(10_000) }
            }
            return (accepted, server.residentMegabytes)
        }
        // The kernel's buffers on both sides hold a few MB; 4 s of a loopback stream is gigabytes.
        #expect(accepted < 64 << 20, "the client got \(accepted >> 20) MB of pings into the connection")
        #expect(during - before < 64, "serve's RSS went from \(before) MB to \(during) MB")
        #expect(try await server.stop() == 0)
    }

    /// `/events?last=` pays for its scan of the window too: every 50 records matched
    /// cost the address a turn, so the address's next request waits for them. Four
    /// streams opened one after another, each scanning 500 records at 5 turns a second,
    /// take 6 s or more; they opened at once before.
    @Test func eventStreamScansAreChargedToTheAddress() async throws {
        let table = "sse_scans_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (server, port, url) = try await ServeFaultTests.serve(table: table, ["--requests-per-second-per-address", "5"])
        let number = Int(port) ?? 0
        try await LiveDatabase.psql(url, "INSERT INTO \(table) SELECT n, 'row ' || n FROM generate_series(1, 500) n")
        try await eventually("the window to hold the 500 rows", within: 60, interval: .milliseconds(100)) {
            try await ServeFaultTests.status(port: port, from: "127.0.0.2")["window_records"] as? Int == 500
        }
        let started = Date()
        let opened = try await onThread("four streams scanning the whole window, one after another", within: 120) { () throws -> Int in
            try (0..<4).filter { _ in
                let client = try RawClient(port: number)
                client.send("GET /events?last=500&filter=id=eq.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                return client.read(until: ": connected")
            }.count
        }
        let seconds = Date().timeIntervalSince(started)
        #expect(opened == 4)
        // Each stream's request waits for the 10 turns the one before matched: 3 × 2 s on
        // the schedule, less the burst's 5 turns, a little less for timers.
        #expect(seconds >= 4.5, "four /events scans of 500 records from one address took \(seconds) s")
        #expect(try await server.stop() == 0)
    }

    /// Waits (a minute at most) until `/status` counts no client.
    static func waitForNoClient(port: Int) async throws {
        let seen = Mutex("")
        try await eventually("no client left registered", within: 60, seen: { seen.withLock { $0 } }) {
            let body = try await onThread("GET /status", within: 60) { try RawClient.body(port: port, path: "/status") }
            let status = try JSONSerialization.jsonObject(with: body) as? [String: Any]
            seen.withLock { $0 = "clients \(status?["clients"] ?? "?")" }
            return status?["clients"] as? Int == 0
        }
    }
}
