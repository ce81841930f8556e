import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import HummingbirdWSTesting
import JWTKit
import NIOWebSocket
import RowcastCore
import RowcastServer
import RowcastTestSupport
import Synchronization
import Testing

/// Authentication (`--token`, `--jwt-secret` and the `tables` claim), `ping`, the
/// frame size limit and `/metrics`, against a live server over a scripted capture.
@Suite(.timeLimit(.minutes(3)))
struct AuthAndMetricsTests {
    static let token = "static-token-for-tests"
    static let secret = "a-jwt-secret-of-at-least-32-bytes!!"

    struct Claims: JWTPayload {
        var exp: ExpirationClaim?
        var tables: [String]?
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    static func jwt(tables: [String]?, expiresIn seconds: Double = 600, secret: String = secret) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(Claims(exp: ExpirationClaim(value: Date().addingTimeInterval(seconds)), tables: tables))
    }

    /// Two captured tables, a client may be allowed one of.
    static let tables: [TableName] = ["public.orders", "public.secrets"]

    static func authenticatedApp() async -> (app: RowcastApplication, capture: ScriptedCapture) {
        var options = ServerOptions(port: 0)
        options.auth = await ClientAuthenticator(token: token, jwtSecret: secret)
        // An expired client's close frame must not race the grace after which its
        // connection is closed outright (5 s, held by its own test): under a loaded
        // machine the writer once took longer, and the client saw no close frame.
        options.stalledClientGrace = .seconds(60)
        return ScriptedServer.make(options: options, tables: tables)
    }

    static func status(_ port: Int, _ path: String, headers: [String: String] = [:]) async throws -> String {
        let request = try EventStreamClient(port: port, path: path, headers: headers)
        defer { request.disconnect() }
        return try await onThread("an HTTP exchange with the test server", within: 90) { try request.status() }
    }

    @Test func credentialsAreRequiredExceptForThePageAndHealth() async throws {
        try await within(150, "credentials are required except for the page and health") {
            let (app, _) = await Self.authenticatedApp()
            let expired = try await Self.jwt(tables: nil, expiresIn: -60)
            let forged = try await Self.jwt(tables: nil, secret: "another-secret-of-at-least-32-bytes!")
            let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ0YWJsZXMiOm51bGx9."
            _ = try await app.test(.live) { client in
                let port = try #require(client.port)
                #expect(try await Self.status(port, "/") == "200")
                #expect(try await Self.status(port, "/healthz") == "200")
                for path in ["/events", "/status", "/metrics"] {
                    #expect(try await Self.status(port, path) == "401", "\(path) without credentials")
                    #expect(try await Self.status(port, path + "?token=wrong") == "401", "\(path) with a wrong token")
                    #expect(try await Self.status(port, path + "?token=\(expired)") == "401", "\(path) with an expired JWT")
                    #expect(try await Self.status(port, path + "?token=\(forged)") == "401", "\(path) with a JWT signed by another secret")
                    #expect(try await Self.status(port, path + "?token=\(unsigned)") == "401", "\(path) with an unsigned JWT")
                    #expect(try await Self.status(port, path + "?token=\(Self.token)") == "200", "\(path) with the token")
                    #expect(try await Self.status(port, path, headers: ["Authorization": "Bearer \(Self.token)"]) == "200", "\(path) with a Bearer header")
                }
                // WebSocket: browsers hide a refused handshake's status, so the socket opens
                // and closes at once with 1008 and the cause.
                // (Read with a raw socket: the close follows the 101 at once, in the same packet.)
                let upgrade = ["Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="]
                for path in ["/ws", "/ws?token=wrong", "/ws?token=\(expired)"] {
                    let request = try EventStreamClient(port: port, path: path, headers: upgrade)
                    let (head, frame) = try await onThread("an HTTP exchange with the test server", within: 90) { (try request.readHead(), try request.webSocketFrame()) }
                    request.disconnect()
                    #expect(head.hasPrefix("HTTP/1.1 101"), "\(path)")
                    #expect(frame?.opcode == 0x8, "\(path): a close frame")
                    let payload = frame?.payload ?? Data()
                    #expect(payload.count > 2 && UInt16(payload[0]) << 8 | UInt16(payload[1]) == 1008, "\(path)")
                    let reason = String(decoding: payload.dropFirst(2), as: UTF8.self)
                    #expect(reason.hasPrefix("unauthorized: "), "\(path): \(reason)")
                }
                try await client.ws("/ws?token=\(Self.token)") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "connected")
                    try await outbound.close(.normalClosure, reason: nil)
                }
                let bearer = WebSocketClientConfiguration(additionalHeaders: [.authorization: "Bearer \(Self.token)"])
                try await client.ws("/ws", configuration: bearer) { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    #expect(ScriptedServer.object(try await messages.next())?["event"] as? String == "connected")
                    try await outbound.close(.normalClosure, reason: nil)
                }

                // The body names the cause and the fix.
                let request = try EventStreamClient(port: port, path: "/status?token=\(expired)")
                let answer = try await onThread("an HTTP exchange with the test server", within: 90) { try request.response() }
                #expect(answer.contains(#""code":"unauthorized""#))
                #expect(answer.contains("expired"))
                request.disconnect()
            }
        }
    }

    @Test func aJWTsTablesClaimLimitsWhatTheClientSees() async throws {
        try await within(150, "a j w ts tables claim limits what the client sees") {
            let (app, capture) = await Self.authenticatedApp()
            let (allowed, other) = (Self.tables[0], Self.tables[1])
            let jwt = try await Self.jwt(tables: [allowed.name])
            _ = try await app.test(.live) { client in
                try await client.ws("/ws?token=\(jwt)") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"subscribe","data":{"tables":["\#(other.name)"]}}"#))
                    let refused = ScriptedServer.object(try await messages.next())
                    #expect(refused?["event"] as? String == "error")
                    let error = refused?["data"] as? [String: Any]
                    #expect(error?["code"] as? String == "forbidden")
                    #expect((error?["message"] as? String)?.contains(other.description) == true)

                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    let subscribed = ScriptedServer.object(try await messages.next())
                    #expect(subscribed?["event"] as? String == "subscribed")
                    #expect((subscribed?["data"] as? [String: Any])?["tables"] as? [String] == [allowed.description])

                    try capture.commit(.insert(other, row: ScriptedServer.row(1, "secret")), .insert(allowed, row: ScriptedServer.row(2, "visible")))
                    let update = ScriptedServer.object(try await messages.next())?["data"] as? [String: Any]
                    #expect(update?["table"] as? String == allowed.name)
                    #expect((update?["row"] as? [String: Any])?["id"] as? Int == 2)
                    try await outbound.close(.normalClosure, reason: nil)
                }

                // The same rule on /events, with the JWT as a Bearer header.
                let port = try #require(client.port)
                #expect(try await Self.status(port, "/events?tables=\(other.name)", headers: ["Authorization": "Bearer \(jwt)"]) == "403")
                // /status and /metrics count every table's records: not for a limited claim.
                for path in ["/status", "/metrics"] {
                    #expect(try await Self.status(port, path, headers: ["Authorization": "Bearer \(jwt)"]) == "403", "\(path) with a tables claim")
                    #expect(try await Self.status(port, path, headers: ["Authorization": "Bearer \(Self.token)"]) == "200", "\(path) with the token")
                }
                let stream = try EventStreamClient(port: port, path: "/events", headers: ["Authorization": "Bearer \(jwt)"])
                #expect(try await onThread("an HTTP exchange with the test server", within: 90) { try stream.readHead() }.hasPrefix("HTTP/1.1 200"))
                try capture.commit(.insert(other, row: ScriptedServer.row(3, "secret")), .insert(allowed, row: ScriptedServer.row(4, "visible")))
                let events = try await onThread("an HTTP exchange with the test server", within: 90) { try stream.events(1) }
                let record = try events.first.map { try JSONSerialization.jsonObject(with: Data($0.data.utf8)) } as? [String: Any]
                #expect(record?["table"] as? String == allowed.name)
                #expect((record?["row"] as? [String: Any])?["id"] as? Int == 4)
                stream.disconnect()
            }
        }
    }

    @Test func aClientIsClosedWhenItsTokenExpires() async throws {
        try await within(150, "a client is closed when its token expires") {
            let (app, _) = await Self.authenticatedApp()
            _ = try await app.test(.live) { client in
                // The token must still be valid when the client subscribes, however slow this
                // machine is: when it expired first, try again with one that lives twice as long.
                for lifetime in [4.0, 8, 16, 32, 64] {
                    let jwt = try await Self.jwt(tables: nil, expiresIn: lifetime)
                    let subscribed = Mutex(false)
                    let close = try await client.ws("/ws?token=\(jwt)") { inbound, outbound, _ in
                        var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                        guard ScriptedServer.object(try await messages.next())?["event"] as? String == "connected" else { return }
                        try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                        if ScriptedServer.object(try await messages.next())?["event"] as? String == "subscribed" {
                            subscribed.withLock { $0 = true }
                        }
                        while try await messages.next() != nil {}
                    }
                    guard subscribed.withLock({ $0 }) else { continue }
                    #expect(close?.closeCode == .policyViolation)
                    #expect(close?.reason?.hasPrefix("token expired; reconnect with a fresh one; last cursor") == true, "\(close?.reason ?? "no reason")")
                    return
                }
                Issue.record("no token lived long enough to subscribe, even one of 64 s")
            }
        }
    }

    @Test func pingIsAnsweredAndOversizedFramesCloseTheConnection() async throws {
        try await within(150, "ping is answered and oversized frames close the connection") {
            var options = ServerOptions(port: 0)
            options.maxClientFrameSize = 1024
            let (app, _) = ScriptedServer.make(options: options)
            _ = try await app.test(.live) { client in
                let close = try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"ping","data":{"n":7}}"#))
                    let pong = ScriptedServer.object(try await messages.next())
                    #expect(pong?["event"] as? String == "pong")
                    #expect((pong?["data"] as? [String: Any])?["n"] as? Int == 7)
                    try await outbound.write(.text(#"{"event":"ping","data":{"pad":""# + String(repeating: "x", count: 2000) + #""}}"#))
                    while try await messages.next() != nil {}
                }
                #expect(close?.closeCode == .messageTooLarge)
            }
        }
    }

    @Test func metricsCountRecordsClientsAndCapture() async throws {
        try await within(150, "metrics count records clients and capture") {
            let (app, capture) = ScriptedServer.make()
            let table = WebSocketTests.table
            _ = try await app.test(.live) { client in
                try await client.ws("/ws") { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    _ = try await messages.next()
                    try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
                    _ = try await messages.next()
                    try capture.commit(.insert(table, row: ScriptedServer.row(1, "a")), .insert(table, row: ScriptedServer.row(2, "b")))
                    _ = try await messages.next()
                    _ = try await messages.next()

                    // Counters are bumped just after the frames are queued: read until they settle.
                    let port = try #require(client.port)
                    let values = Mutex<[String: String]>([:])
                    try await eventually("rowcast_records_sent_total to reach 2", within: 60, interval: .milliseconds(100), seen: { "\(values.withLock { $0 })" }) {
                        let request = try EventStreamClient(port: port, path: "/metrics")
                        let text = try await onThread("an HTTP exchange with the test server", within: 90) { try request.response() }
                        request.disconnect()
                        let read = Dictionary(
                            text.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { line -> (String, String)? in
                                let parts = line.split(separator: " ")
                                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
                            },
                            uniquingKeysWith: { $1 }
                        )
                        values.withLock { $0 = read }
                        return read["rowcast_records_sent_total"] == "2"
                    }
                    let metrics = values.withLock { $0 }
                    #expect(metrics["rowcast_records_captured_total"] == "2")
                    #expect(metrics["rowcast_records_sent_total"] == "2")
                    #expect(metrics["rowcast_clients"].flatMap(Double.init) == 1)
                    #expect(metrics["rowcast_capture_connected"].flatMap(Double.init) == 1)
                    #expect(metrics["rowcast_clients_cut_off_total"] == "0")
                    #expect(metrics["rowcast_capture_lag_bytes"] == nil, "trigger mode has no WAL position")
                    #expect(Int(metrics["rowcast_sent_bytes_total"] ?? "") ?? 0 > 100)
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
    }
}
