import Foundation
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization
import Testing

/// Replication mode's resume window lives in the slot: a client that reconnects with
/// its last cursor gets every row exactly once, whether `serve` was stopped with
/// SIGTERM, killed with SIGKILL, or the client moved to another node.
@Suite(
    .enabled(if: Rowcast.databaseURL != nil, "needs the cluster that make test starts"),
    .timeLimit(.minutes(5))
)
struct ResumeAcrossRestartTests {
    /// What one client received, in order.
    final class Received: Sendable {
        private let rows = Mutex<[(cursor: String, id: Int)]>([])
        private let errors = Mutex<[String]>([])

        func add(cursor: String, id: Int) { rows.withLock { $0.append((cursor, id)) } }
        func error(_ text: String) { errors.withLock { $0.append(text) } }
        var ids: [Int] { rows.withLock { $0.map(\.id) } }
        var count: Int { rows.withLock { $0.count } }
        var lastCursor: String? { rows.withLock { $0.last?.cursor } }
        var errorFrames: [String] { errors.withLock { $0 } }

        /// Waits until `count` rows arrived, or a minute passes.
        func wait(for count: Int) async {
            let deadline = Date().addingTimeInterval(60)
            while self.count < count, Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        }
    }

    /// A client that behaves like the page: it connects to the node the test points
    /// it at, subscribes to `orders` from its last cursor, and reconnects whenever the
    /// connection ends (a node stopped or killed, or the test moved it to another node).
    final class Client: Sendable {
        let received = Received()
        private let port = Mutex("")
        private let stopped = Mutex(false)
        private let sessions = Mutex(0)
        private let subscriptions = Mutex(0)

        /// Points the client at another node; the current session ends after its next row.
        func move(to port: String) { self.port.withLock { $0 = port } }
        func stop() { stopped.withLock { $0 = true } }
        var sessionCount: Int { sessions.withLock { $0 } }

        /// Waits until the client's first subscription is live, or a minute passes.
        func waitUntilSubscribed() async {
            let deadline = Date().addingTimeInterval(60)
            while subscriptions.withLock({ $0 }) == 0, Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        }

        func run() -> Task<Void, Never> {
            Task.detached {
                var logger = Logger(label: "client")
                logger.logLevel = .critical
                while !self.stopped.withLock({ $0 }) {
                    let port = self.port.withLock { $0 }
                    self.sessions.withLock { $0 += 1 }
                    await self.session(port: port, logger: logger)
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
        }

        private func session(port: String, logger: Logger) async {
            let since = received.lastCursor.map { #","since":"\#($0)""# } ?? ""
            let subscribe = #"{"event":"subscribe","data":{"tables":["orders"]"# + since + "}}"
            do {
                _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", logger: logger) { inbound, outbound, _ in
                    var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                    _ = try await messages.next()  // connected
                    try await outbound.write(.text(subscribe))
                    while case .text(let text)? = try await messages.next() {
                        guard let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                              let data = frame["data"] as? [String: Any]
                        else { continue }
                        if frame["event"] as? String == "error" {
                            self.received.error("\(data["code"] ?? ""): \(data["message"] ?? "")")
                            self.stop()
                            return
                        }
                        if frame["event"] as? String == "subscribed" { self.subscriptions.withLock { $0 += 1 } }
                        guard frame["event"] as? String == "update", let cursor = data["cursor"] as? String,
                              let row = data["row"] as? [String: Any], let id = row["id"] as? Int
                        else { continue }
                        self.received.add(cursor: cursor, id: id)
                        if self.stopped.withLock({ $0 }) || self.port.withLock({ $0 }) != port { return }
                    }
                }
            } catch {
                // The node went away, or is not listening yet: reconnect.
            }
        }
    }

    static func serve(slot: String, url: String) async throws -> (RunningProcess, String) {
        let server = try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders",
            "--status-interval", "1", "--port", "0", "--db", url,
        ])
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        return (server, port)
    }

    @Test func aClientResumesExactlyOnceAcrossSigtermAKillAndANodeSwitch() async throws {
        let url = try Rowcast.freshDatabase()
        try Rowcast.psql(url, "CREATE TABLE orders (id int PRIMARY KEY)")
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (slotA, slotB) = ("resume_a_" + suffix, "resume_b_" + suffix)
        for slot in [slotA, slotB] {
            let setup = try await ServeFaultTests.onThread {
                try Rowcast.run(["setup", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders", "--db", url])
            }
            #expect(setup.status == 0, "\(setup.stderr)")
        }
        defer {
            for slot in [slotA, slotB] { _ = try? Rowcast.psql(url, "SELECT pg_drop_replication_slot('\(slot)')") }
        }
        // Both nodes run from the start; a node that exits early is killed when the
        // test lets go of it.
        var (nodeA, portA) = try await Self.serve(slot: slotA, url: url)
        let (nodeB, portB) = try await Self.serve(slot: slotB, url: url)

        let client = Client()
        let received = client.received
        client.move(to: portA)
        let running = client.run()
        await client.waitUntilSubscribed()
        // Rows keep coming, one transaction each, through every restart. (psql -c runs
        // a string as one transaction unless it says otherwise.)
        let rows = 600
        let script = (1...rows).map { "BEGIN; INSERT INTO orders VALUES (\($0)); COMMIT; SELECT pg_sleep(0.01);" }.joined(separator: "\n")
        // On a thread of its own: a blocked cooperative pool would starve the client.
        let writer = Task { try await ServeFaultTests.onThread { try Rowcast.psql(url, script) } }

        // 1. SIGTERM node A while rows flow; a new A rebuilds its window from the slot.
        await received.wait(for: 100)
        let written = (try? await ServeFaultTests.onThread { try Rowcast.psql(url, "SELECT count(*) FROM orders") }) ?? "?"
        try #require(received.count >= 100, "rows written: \(written); node A:\n\(nodeA.output.suffix(3000))")
        #expect(try await nodeA.stop(SIGTERM) == 0)
        (nodeA, portA) = try await Self.serve(slot: slotA, url: url)
        client.move(to: portA)
        // 2. SIGKILL it: no shutdown at all.
        await received.wait(for: 250)
        _ = try await nodeA.stop(SIGKILL)
        (nodeA, portA) = try await Self.serve(slot: slotA, url: url)
        client.move(to: portA)
        // 3. Move to node B, which reads its own slot, with the cursor from A.
        await received.wait(for: 400)
        client.move(to: portB)
        await received.wait(for: rows)
        client.stop()
        _ = try await nodeB.stop(SIGTERM)  // ends the last session
        await running.value
        _ = try await writer.value

        #expect(received.errorFrames.isEmpty, "\(received.errorFrames)")
        let ids = received.ids
        #expect(ids == Array(1...rows), "missing \(Set(1...rows).subtracting(ids).sorted().prefix(20)), \(ids.count - Set(ids).count) repeated, \(client.sessionCount) sessions")
    }
}
