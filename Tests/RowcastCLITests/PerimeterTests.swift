import Foundation
import RowcastTestSupport
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
}
