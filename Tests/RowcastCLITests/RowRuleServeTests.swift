import Foundation
import HummingbirdWSClient
import Logging
import RowcastTestSupport
import Synchronization
import Testing

/// Row rules (a JWT's `rows` claim) through `serve`, in both modes: two hundred clients
/// in twenty tenants, over `/ws`, SSE and Socket.IO, live, from a snapshot, resumed with
/// `since` and recovered by Socket.IO, each rebuild exactly their tenant's rows of a table
/// that a random workload changes (inserts, updates, updates that move rows between
/// tenants, deletes, several rows at once), and no frame any of them receives carries a
/// value of another tenant's row. The table's final state is the oracle.
/// Heavy: `make test` runs it after the rest (scripts/test.sh), one mode at a time.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(10)), .serialized)
struct RowRuleServeTests {
    static let secret = "a-jwt-secret-of-at-least-32-bytes!!"
    static let tenants = 20

    @Test(arguments: ["trigger", "replication"])
    func twoHundredClientsInTwentyTenantsEachSeeExactlyTheirRows(mode: String) async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "rules")
        try await LiveDatabase.psql(url, """
            CREATE TABLE orders (id int PRIMARY KEY, tenant int NOT NULL, v int NOT NULL, secret text NOT NULL);
            ALTER TABLE orders REPLICA IDENTITY FULL;
            CREATE TABLE plain (id int PRIMARY KEY, tenant int NOT NULL);
            INSERT INTO orders SELECT g, g % \(Self.tenants), 0, 't' || (g % \(Self.tenants)) || '-' || g FROM generate_series(1, 100) g;
            """)
        #expect(try await Rowcast.run(["setup", "--mode", mode, "--table", "orders", "--table", "plain", "--db", url]).status == 0)
        let server = try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", mode, "--table", "orders", "--table", "plain", "--port", "0", "--db", url, "--jwt-secret", Self.secret,
            "--max-snapshots", "64", "--max-snapshots-per-address", "64", "--resume-window", "100000",
            // Two hundred clients from one address: not a flood here.
            "--requests-per-second-per-address", "0", "--max-connections-per-address", "1000",
        ])
        let port = try await server.waitFor(#"serving \w+ mode on http://127\.0\.0\.1:(\d+)/"#)
        let seed = try await Self.tenantRows(url: url)

        // Per tenant: 7 on /ws (one from a snapshot, one whose own filter names another
        // tenant, two that leave and resume with since), 2 on SSE (from snapshots: SSE
        // says nothing when live), 1 on Socket.IO (dropped and recovered).
        var clients: [TenantClient] = []
        for tenant in 0..<Self.tenants {
            let other = (tenant + 1) % Self.tenants, rows = seed[tenant] ?? [:]
            clients.append(TenantClient(tenant: tenant, transport: .webSocket, snapshot: true))
            clients.append(TenantClient(tenant: tenant, transport: .webSocket, filter: "tenant=eq.\(other)"))
            for n in 0..<5 { clients.append(TenantClient(tenant: tenant, transport: .webSocket, leaves: n < 2, seed: rows)) }
            for _ in 0..<2 { clients.append(TenantClient(tenant: tenant, transport: .serverSentEvents, snapshot: true)) }
            clients.append(TenantClient(tenant: tenant, transport: .socketIO, leaves: true, seed: rows))
        }
        #expect(clients.count == 200)
        let leaving = clients.filter(\.leaves)
        // Each its own token; the leaving ones come back with fresh ones.
        let tokens = try await Self.jwts((clients + leaving).map { Self.claims(tenant: $0.tenant) })
        for (client, token) in zip(clients, tokens) { client.run(port: port, token: token) }
        defer { for client in clients { client.stop() } }
        let all = clients
        func summary(_ unfinished: @escaping @Sendable (TenantClient) -> Bool) -> @Sendable () -> String {
            { "\(all.filter(unfinished).count) clients, e.g. \(all.filter(unfinished).prefix(3).map(\.summary))" }
        }
        try await eventually("every client subscribed (or its snapshot ended)", within: 120, seen: summary { !$0.isReady }) {
            clients.allSatisfy(\.isReady) || clients.contains { !$0.problems.isEmpty }
        }

        var workload = Workload(seed: UInt64(mode.utf8.count) &* 0x9E37_79B9, rows: 100)
        try await LiveDatabase.psql(url, workload.script(transactions: 300))
        // Three clients a tenant leave: /ws ones resume with since, Socket.IO's recovers.
        for client in leaving { client.drop() }
        try await eventually("the leaving clients to be gone", within: 60, seen: summary { !$0.isDown }) { leaving.allSatisfy(\.isDown) }
        try await LiveDatabase.psql(url, workload.script(transactions: 300))
        for (client, token) in zip(leaving, tokens.suffix(leaving.count)) { client.run(port: port, token: token, resuming: true) }
        try await LiveDatabase.psql(url, workload.script(transactions: 100))

        let final = try await Self.tenantRows(url: url)
        @Sendable func holdsItsRows(_ client: TenantClient) -> Bool { client.rows == (client.filter == nil ? final[client.tenant] ?? [:] : [:]) }
        try await eventually("every client to hold its tenant's rows", within: 180, seen: summary { !holdsItsRows($0) }) {
            clients.allSatisfy(holdsItsRows) || clients.contains { !$0.problems.isEmpty }
        }
        for client in clients { #expect(client.problems.isEmpty, "\(client.summary)") }
        let socketIO = clients.filter { $0.transport == .socketIO }
        let unrecovered = socketIO.filter { !$0.recovered }.map(\.summary)
        #expect(unrecovered.isEmpty, "Socket.IO sessions not recovered: \(unrecovered.prefix(3))")
        // The filter that named another tenant widened nothing.
        #expect(clients.filter { $0.filter != nil }.allSatisfy { $0.updates == 0 })
        // Moves reached their tenants as deletes and inserts.
        #expect(clients.contains { $0.reasons.contains("left_view") } && clients.contains { $0.reasons.contains("entered_view") })

        // Row rules need each update's old row: replication mode refuses one on a table
        // without REPLICA IDENTITY FULL, naming the fix; trigger mode has the old row.
        let plain = try await Self.jwts([#"{"tables":["public.plain"],"rows":{"public.plain":"tenant=eq.1"}}"#])[0]
        for message in [#"{"event":"subscribe","data":{"tables":["plain"]}}"#, #"{"event":"ready for data","data":{}}"#] {
            let answer = try await Self.firstAnswer(port: port, token: plain, to: message)
            if mode == "replication" {
                #expect(answer.contains(#""code":"forbidden""#) && answer.contains("REPLICA IDENTITY FULL"), "\(message): \(answer)")
            } else {
                #expect(answer.contains(#""event":"subscribed""#), "\(message): \(answer)")
            }
        }
        #expect(try await server.stop(SIGINT) == 0, "serve output:\n\(server.output.suffix(2000))")
    }

    static func claims(tenant: Int) -> String {
        #"{"tables":["public.orders"],"rows":{"public.orders":"tenant=eq.\#(tenant)"}}"#
    }

    /// Each tenant's rows as `to_json` gives them, keyed by id, in one canonical form.
    static func tenantRows(url: String) async throws -> [Int: [Int: String]] {
        let lines = try await LiveDatabase.psql(url, "SELECT to_json(t.*) FROM orders t").split(separator: "\n")
        var rows: [Int: [Int: String]] = [:]
        for line in lines {
            let row = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let tenant = try #require(row["tenant"] as? Int), id = try #require(row["id"] as? Int)
            rows[tenant, default: [:]][id] = try RebuildingClient.canonical(row)
        }
        return rows
    }

    /// HS256 JWTs for `payloads` (JSON, `exp` an hour on), made by Python's standard
    /// library in one run: an implementation rowcast had no hand in.
    static func jwts(_ payloads: [String]) async throws -> [String] {
        let script = """
            import base64, hashlib, hmac, json, sys, time
            part = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
            for payload in json.load(sys.stdin):
                claims = json.loads(payload)
                claims["exp"] = int(time.time()) + 3600
                head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + part(json.dumps(claims).encode())
                print(head + "." + part(hmac.new(sys.argv[1].encode(), head.encode(), hashlib.sha256).digest()))
            """
        let input = try FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-claims-\(UUID().uuidString).json")
        try JSONSerialization.data(withJSONObject: payloads).write(to: input)
        defer { try? FileManager.default.removeItem(at: input) }
        let made = try await onThread("python3 to sign JWTs", within: 120) {
            try runChild("/bin/sh", ["-c", "python3 -c \"$0\" \"$1\" < \"$2\"", script, secret, input.path], seconds: 100)
        }
        guard made.status == 0 else { throw Failure("python3 could not sign JWTs: \(made.stderr)") }
        let tokens = made.stdout.split(separator: "\n").map(String.init)
        guard tokens.count == payloads.count else { throw Failure("python3 signed \(tokens.count) of \(payloads.count) JWTs") }
        return tokens
    }

    /// The first answer to `message` from a client with `token` on `/ws`.
    static func firstAnswer(port: String, token: String, to message: String) async throws -> String {
        let answer = Mutex("")
        var logger = Logger(label: "client")
        logger.logLevel = .critical
        _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws?token=\(token)", logger: logger) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
            _ = try await messages.next()  // connected
            try await outbound.write(.text(message))
            if case .text(let text)? = try await messages.next() { answer.withLock { $0 = text } }
            try await outbound.close(.normalClosure, reason: nil)
        }
        return answer.withLock { $0 }
    }
}

/// Random statements on `orders` (seeded: a failure is replayed by the same seed),
/// each row's `secret` naming its tenant so that a leaked value shows: inserts, updates
/// of `v`, moves to another tenant, deletes, a tenant's rows at once, and transactions
/// of several.
struct Workload {
    var random: SplitMix
    var tenantOf: [Int: Int] = [:]
    var nextID: Int

    init(seed: UInt64, rows: Int) {
        random = SplitMix(seed: seed)
        for id in 1...rows { tenantOf[id] = id % RowRuleServeTests.tenants }
        nextID = rows + 1
    }

    mutating func script(transactions: Int) -> String {
        var sql = ""
        for _ in 0..<transactions {
            let statements = Int(random.next() % 3) + 1
            sql += statements > 1 ? "BEGIN;\n" : ""
            for _ in 0..<statements { sql += statement() + ";\n" }
            sql += statements > 1 ? "COMMIT;\n" : ""
        }
        return sql
    }

    private mutating func statement() -> String {
        let tenant = Int(random.next() % UInt64(RowRuleServeTests.tenants))
        let ids = tenantOf.keys.sorted()
        let roll = random.next() % 100
        guard !ids.isEmpty, roll >= 20 else {
            let id = nextID
            nextID += 1
            tenantOf[id] = tenant
            return "INSERT INTO orders VALUES (\(id), \(tenant), 0, 't\(tenant)-\(id)')"
        }
        let id = ids[Int(random.next() % UInt64(ids.count))]
        switch roll {
        case 20..<45:
            return "UPDATE orders SET v = v + 1 WHERE id = \(id)"
        case 45..<75:
            tenantOf[id] = tenant
            return "UPDATE orders SET tenant = \(tenant), secret = 't\(tenant)-\(id)', v = v + 1 WHERE id = \(id)"
        case 75..<90:
            tenantOf[id] = nil
            return "DELETE FROM orders WHERE id = \(id)"
        default:
            return "UPDATE orders SET v = v + 1 WHERE tenant = \(tenant)"
        }
    }
}

/// One client of one tenant: rebuilds the tenant's rows from what it receives, checking
/// every frame for a value of another tenant, and leaves and comes back when told.
final class TenantClient: Sendable {
    enum Transport: Sendable { case webSocket, serverSentEvents, socketIO }

    struct State {
        var rows: [Int: String] = [:]
        var ready = false
        var down = false
        var cursor: String?
        var updates = 0
        var reasons: Set<String> = []
        var problems: [String] = []
        var recovered = false
        /// Connections the server ended (cut off as too slow on a loaded machine), each
        /// made again from the last cursor, as a page does.
        var reconnects = 0
        /// Socket.IO: the session's id and pid, to recover it.
        var sid: String?
        var pid: String?
    }

    let tenant: Int
    let transport: Transport
    let filter: String?
    let snapshot: Bool
    let leaves: Bool
    private let state: Mutex<State>
    private let stopped = Mutex(false)
    private let dropped = Mutex(false)
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(tenant: Int, transport: Transport, snapshot: Bool = false, filter: String? = nil, leaves: Bool = false, seed: [Int: String] = [:]) {
        self.tenant = tenant
        self.transport = transport
        self.filter = filter
        self.snapshot = snapshot
        self.leaves = leaves
        self.state = Mutex(State(rows: snapshot || filter != nil ? [:] : seed))
    }

    var rows: [Int: String] { state.withLock { $0.rows } }
    var problems: [String] { state.withLock { $0.problems } }
    var isReady: Bool { state.withLock { $0.ready } }
    var isDown: Bool { state.withLock { $0.down } }
    var updates: Int { state.withLock { $0.updates } }
    var reasons: Set<String> { state.withLock { $0.reasons } }
    var recovered: Bool { state.withLock { $0.recovered } }
    var summary: String {
        state.withLock {
            "tenant \(tenant) \(transport)\(snapshot ? " snapshot" : "")\(leaves ? " leaves" : ""): \($0.rows.count) rows, \($0.updates) updates, \($0.reconnects) reconnects, problems \($0.problems.prefix(2))"
        }
    }

    func stop() {
        stopped.withLock { $0 = true }
        task.withLock { $0?.cancel() }
    }

    /// Closes the connection, as a page that lost its network.
    func drop() {
        dropped.withLock { $0 = true }
        task.withLock { $0?.cancel() }
    }

    /// Connects with `token`; `resuming`, it comes back: `since` its last cursor on
    /// `/ws`, Socket.IO's recovery with its pid and offset.
    func run(port: String, token: String, resuming: Bool = false) {
        dropped.withLock { $0 = false }
        state.withLock { $0.down = false }
        let running = Task.detached { [self] in
            var resuming = resuming
            while !done {
                do {
                    switch transport {
                    case .webSocket: try await runWebSocket(port: port, token: token)
                    case .socketIO: try await runSocketIO(port: port, token: token, resuming: resuming)
                    case .serverSentEvents: try await runEventStream(port: port, token: token)
                    }
                } catch {
                    if !done { state.withLock { $0.problems.append("connection failed: \(error)") } }
                    break
                }
                // The server ended the connection: back from the last cursor, or, before
                // the client had one, its snapshot again.
                guard !done else { break }
                let again = state.withLock { state -> Bool in
                    state.reconnects += 1
                    guard state.ready else { return false }
                    return true
                }
                guard again else {
                    state.withLock { $0.problems.append("the server ended the connection before it subscribed") }
                    break
                }
                resuming = true
                try? await pause(for: .milliseconds(100))
            }
            state.withLock { $0.down = true }
        }
        task.withLock { $0 = running }
    }

    private var subscribeData: String {
        var fields = [#""tables":["orders"]"#]
        if let filter { fields.append(#""filter":"\#(filter)""#) }
        if snapshot { fields.append(#""snapshot":true"#) }
        if let cursor = state.withLock({ $0.cursor }), state.withLock({ $0.ready }) { fields = [#""tables":["orders"]"#, #""since":"\#(cursor)""#] }
        return "{" + fields.joined(separator: ",") + "}"
    }

    private var done: Bool { stopped.withLock { $0 } || dropped.withLock { $0 } }

    private func runWebSocket(port: String, token: String) async throws {
        var logger = Logger(label: "client")
        logger.logLevel = .critical
        let subscribe = #"{"event":"subscribe","data":\#(subscribeData)}"#
        _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws?token=\(token)", configuration: .init(maxFrameSize: 1 << 24), logger: logger) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
            _ = try await messages.next()  // connected
            try await outbound.write(.text(subscribe))
            while !self.done, case .text(let text)? = try await messages.next() { self.take(text) }
        }
    }

    private func runSocketIO(port: String, token: String, resuming: Bool) async throws {
        var logger = Logger(label: "client")
        logger.logLevel = .critical
        let url = "ws://127.0.0.1:\(port)/socket.io/?EIO=4&transport=websocket"
        _ = try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: 1 << 24), logger: logger) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
            _ = try await messages.next()  // Engine.IO open
            var auth: [String: Any] = ["token": token]
            let held = self.state.withLock { ($0.pid, $0.sid, $0.cursor) }
            if resuming, let pid = held.0, let offset = held.2 {
                auth["pid"] = pid
                auth["offset"] = offset
            }
            try await outbound.write(.text("40" + String(decoding: try JSONSerialization.data(withJSONObject: auth), as: UTF8.self)))
            var recoveredNow = false
            while !self.done, case .text(let text)? = try await messages.next() {
                if text == "2" {
                    try await outbound.write(.text("3"))
                } else if text.hasPrefix("40") {
                    let answer = try JSONSerialization.jsonObject(with: Data(text.dropFirst(2).utf8)) as? [String: Any]
                    recoveredNow = resuming && held.1 != nil && answer?["sid"] as? String == held.1
                    self.state.withLock { state in
                        if recoveredNow { state.recovered = true }
                        state.sid = answer?["sid"] as? String
                        state.pid = answer?["pid"] as? String
                    }
                } else if text.hasPrefix("42") {
                    guard let packet = try JSONSerialization.jsonObject(with: Data(text.dropFirst(2).utf8)) as? [Any], let event = packet.first as? String else { continue }
                    if event == "connected" {
                        // A session not recovered starts again: from its last cursor.
                        if !recoveredNow { try await outbound.write(.text(#"42["subscribe",\#(self.subscribeData)]"#)) }
                        continue
                    }
                    let data = packet.count > 1 ? packet[1] : [:]
                    let frame = try JSONSerialization.data(withJSONObject: ["event": event, "data": data])
                    self.take(String(decoding: frame, as: UTF8.self))
                } else if text.hasPrefix("44") {
                    self.state.withLock { $0.problems.append("connect error \(text)") }
                }
            }
        }
    }

    private func runEventStream(port: String, token: String) async throws {
        let since = state.withLock { $0.ready ? $0.cursor : nil }
        let path = "/events?tables=orders&token=\(token)" + (since.map { "&since=" + $0 } ?? (snapshot ? "&snapshot=1" : ""))
        try await onThread("an SSE client", within: 600) {
            let stream = try EventStreamClient(port: Int(port) ?? 0, path: path)
            let status = try stream.status()
            guard status == "200" else { throw Failure("/events answered \(status)") }
            // SSE says nothing on subscribing: it is live once the head arrived.
            if !self.snapshot { self.state.withLock { $0.ready = true } }
            while !self.done, let events = stream.available(seconds: 0.2) {
                for event in events {
                    self.take(#"{"event":"\#(event.event ?? "update")","data":\#(event.data)}"#)
                }
            }
        }
    }

    private func take(_ text: String) {
        state.withLock { state in
            guard let frame = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                let event = frame["event"] as? String, let data = frame["data"] as? [String: Any]
            else { return state.problems.append("not a frame: \(text.prefix(200))") }
            switch event {
            case "subscribed":
                if !snapshot || state.ready { state.ready = true }
                if state.cursor == nil { state.cursor = data["cursor"] as? String }
                return
            case "snapshot_end":
                state.ready = true
                state.cursor = data["cursor"] as? String
                return
            case "update": break
            case "pong": return
            default: return state.problems.append("\(event) \(data)")
            }
            let op = data["op"] as? String ?? "", row = data["row"] as? [String: Any], old = data["old"] as? [String: Any]
            // Not one value of another tenant's row, in row or old.
            for values in [row, old].compactMap({ $0 }) {
                if values["tenant"] as? Int != tenant || (values["secret"] as? String)?.hasPrefix("t\(tenant)-") != true {
                    return state.problems.append("tenant \(tenant) got another's row: \(data)")
                }
            }
            if let reason = data["reason"] as? String { state.reasons.insert(reason) }
            if op != "snapshot" {
                state.updates += 1
                state.cursor = data["cursor"] as? String
            }
            do {
                switch op {
                case "snapshot", "insert":
                    let row = try #require(row), id = try #require(row["id"] as? Int)
                    if state.rows[id] != nil, data["reason"] == nil { state.problems.append("insert of \(id), which it has") }
                    state.rows[id] = try RebuildingClient.canonical(row)
                case "update":
                    let row = try #require(row), id = try #require(row["id"] as? Int)
                    if state.rows[id] == nil { state.problems.append("update of \(id), which it does not have") }
                    state.rows[id] = try RebuildingClient.canonical(row)
                case "delete":
                    let id = try #require(old?["id"] as? Int)
                    if state.rows.removeValue(forKey: id) == nil { state.problems.append("delete of \(id), which it does not have") }
                default:
                    state.problems.append("op \(op)")
                }
            } catch {
                state.problems.append("malformed \(data)")
            }
        }
    }
}
