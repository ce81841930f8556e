import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// `rowcast serve` against peers that misbehave: clients that stop reading, pages
/// from other origins, requests for other hosts.
@Suite(.enabled(if: Rowcast.databaseURL != nil, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct ServeFaultTests {
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    /// Polls `condition` every 100 ms until it holds or `seconds` pass.
    static func eventually(seconds: Double = 60, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return try await condition()
    }

    /// `GET /status` on a connection of its own that closes after the response, so
    /// that no keep-alive connection counts among the server's descriptors.
    static func status(port: String) async throws -> [String: Any] {
        let body = try await onThread { () throws -> Data in
            let client = try RawClient(port: Int(port) ?? 0)
            client.send("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            _ = client.readUntilClosed(seconds: 30)
            guard let start = client.received.range(of: Data("\r\n\r\n".utf8)) else { throw Failure("no response") }
            return client.received[start.upperBound...]
        }
        return try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
    }

    /// A table with the trigger, and `serve --mode trigger` on it with `arguments`.
    static func serve(table: String, _ arguments: [String] = []) async throws -> (RunningProcess, port: String, url: String) {
        let url = try Rowcast.freshDatabase()
        try Rowcast.psql(url, "CREATE TABLE \(table) (id int PRIMARY KEY, body text)")
        #expect(try Rowcast.run(["setup", "--mode", "trigger", "--table", table, "--db", url]).status == 0)
        let server = try RunningProcess(Rowcast.binary.path, ["serve", "--mode", "trigger", "--table", table, "--port", "0", "--db", url] + arguments)
        let port = try await server.waitFor(#"serving trigger mode on http://127\.0\.0\.1:(\d+)/"#)
        return (server, port, url)
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
        let clients = try await Self.onThread { () throws -> [RawClient] in
            let webSocket = try RawClient(port: portNumber, receiveBuffer: 4096)
            guard webSocket.upgrade() else { throw Failure("no 101: \(String(decoding: webSocket.received, as: UTF8.self))") }
            webSocket.sendText(#"{"event":"ready for data","data":{}}"#)
            guard webSocket.read(until: "subscribed") else { throw Failure("no subscribed frame") }
            let events = try RawClient(port: portNumber, receiveBuffer: 4096)
            events.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            guard events.read(until: ": connected") else { throw Failure("no SSE stream: \(String(decoding: events.received, as: UTF8.self))") }
            return [webSocket, events]
        }
        #expect(try await Self.status(port: port)["clients"] as? Int == 2)
        // Neither reads again. 20 MB of rows: far more than their queues (1 MB) and the socket buffers hold.
        for batch in 0..<20 {
            try Rowcast.psql(url, "INSERT INTO stalled SELECT g, repeat('x', 100000) FROM generate_series(\(batch * 10 + 1), \(batch * 10 + 10)) g")
        }
        let written = Date()
        let released = try await Self.eventually { server.openSockets <= baseline }
        let seconds = Date().timeIntervalSince(written)
        #expect(released, "serve still holds \(server.openSockets - baseline) more sockets than before the clients came: \(server.describeDescriptors) (before: \(baselineList))")
        #expect(try await Self.status(port: port)["clients"] as? Int == 0)
        let closed = try await Self.onThread { clients.map { $0.readUntilClosed(seconds: 30) } }
        #expect(closed == [true, true], "the server closed both connections (WebSocket, SSE)")
        print("rowcast-test: stalled clients released \(String(format: "%.1f", seconds)) s after the last insert; serve RSS \(server.residentMegabytes) MB")
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
            // DNS rebinding: a name rowcast does not serve, on any route.
            ("/status", "rebound.example:\(port)", nil, false, "421"),
            ("/events", "rebound.example:\(port)", "http://rebound.example:\(port)", false, "421"),
            ("/ws", "rebound.example:\(port)", "http://rebound.example:\(port)", true, "400"),
            ("/", "rebound.example:\(port)", nil, false, "421"),
            ("/status", "localhost:\(port)", nil, false, "200"),
        ]
        for item in cases {
            let status = try await Self.onThread {
                try RawClient.status(port: portNumber, path: item.path, host: item.host, headers: item.origin.map { ["Origin": $0] } ?? [:], upgrade: item.upgrade)
            }
            #expect(status == item.expected, "\(item.path) Host \(item.host) Origin \(item.origin ?? "none")")
        }
        #expect(try await server.stop() == 0)
    }
}
