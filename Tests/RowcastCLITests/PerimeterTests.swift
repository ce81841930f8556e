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

        let statuses = try await onThread("200 handshakes that never join", within: 120) {
            try (0..<200).map { _ in try RawClient.status(port: number, path: "/socket.io/?EIO=4&transport=polling", host: "127.0.0.1") }
        }
        let counts = Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count)
        #expect(counts == ["200": 20, "503": 180], "handshake answers: \(counts)")
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
        let seen = Mutex("")
        try await eventually("no client left registered", within: 60, seen: { seen.withLock { $0 } }) {
            let body = try await onThread("GET /status", within: 60) { try RawClient.body(port: number, path: "/status") }
            let status = try JSONSerialization.jsonObject(with: body) as? [String: Any]
            seen.withLock { $0 = "clients \(status?["clients"] ?? "?")" }
            return status?["clients"] as? Int == 0
        }
        try await LiveDatabase.psql(url, "INSERT INTO \(table) VALUES (1, 'to no one')")
        #expect(try await server.stop() == 0)
    }
}
