import Foundation
import RowcastTestSupport
import Synchronization
import Testing

/// Replication mode's resume window lives in the slot: a client that reconnects with
/// its last cursor gets every row exactly once, whether `serve` was stopped with
/// SIGTERM, killed with SIGKILL, or the client moved to another node.
@Suite(
    .enabled(if: LiveDatabase.available, "needs the cluster that make test starts"),
    .timeLimit(.minutes(5))
)
struct ResumeAcrossRestartTests {
    static func serve(slot: String, url: String) async throws -> (RunningProcess, String) {
        let server = try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders",
            "--status-interval", "1", "--port", "0", "--db", url,
        ])
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        return (server, port)
    }

    /// One transaction per row, 10 ms apart. (psql -c runs a string as one
    /// transaction unless it says otherwise.)
    static func script(_ ids: ClosedRange<Int>) -> String {
        ids.map { "BEGIN; INSERT INTO orders VALUES (\($0)); COMMIT; SELECT pg_sleep(0.01);" }.joined(separator: "\n")
    }

    /// Each disruption happens while rows flow, and rows are also committed while the
    /// client cannot read them (the node down, or the client between nodes), so every
    /// reconnection has rows to replay however fast this machine is. (When all rows
    /// could arrive before the node switch, the client once sat on the old node with
    /// nothing to read and the test waited for ever.)
    @Test func aClientResumesExactlyOnceAcrossSigtermAKillAndANodeSwitch() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY)")
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (slotA, slotB) = ("resume_a_" + suffix, "resume_b_" + suffix)
        for slot in [slotA, slotB] {
            let setup = try await Rowcast.run(["setup", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders", "--db", url])
            #expect(setup.status == 0, "\(setup.stderr)")
        }
        defer {
            for slot in [slotA, slotB] { _ = try? LiveDatabase.psqlBlocking(url, "SELECT pg_drop_replication_slot('\(slot)')", seconds: 30) }
        }
        // Both nodes run from the start; a node that exits early is killed when the
        // test lets go of it.
        var (nodeA, portA) = try await Self.serve(slot: slotA, url: url)
        let (nodeB, portB) = try await Self.serve(slot: slotB, url: url)

        let client = ResumingClient()
        let received = client.received
        client.move(to: portA)
        client.run()
        try await client.waitUntilSubscribed()
        let currentA = Mutex(nodeA)
        let nodes = { @Sendable in "node A:\n\(currentA.withLock { $0 }.output.suffix(1500))\nnode B:\n\(nodeB.output.suffix(1500))" }

        // 1. SIGTERM node A while rows flow, and write more while it is down; a new A
        //    rebuilds its window from the slot.
        let first = Task { try await LiveDatabase.psql(url, Self.script(1...200)) }
        try await received.wait(for: 50, nodes)
        #expect(try await nodeA.stop(SIGTERM) == 0)
        // One writer at a time, so that commit order is id order.
        try await within(120, "the first writer") { try await first.value }
        try await LiveDatabase.psql(url, Self.script(201...250))
        (nodeA, portA) = try await Self.serve(slot: slotA, url: url)
        currentA.withLock { $0 = nodeA }
        client.move(to: portA)
        try await received.wait(for: 250, nodes)

        // 2. SIGKILL it: no shutdown at all.
        let second = Task { try await LiveDatabase.psql(url, Self.script(251...450)) }
        try await received.wait(for: 300, nodes)
        _ = try await nodeA.stop(SIGKILL)
        try await within(120, "the second writer") { try await second.value }
        try await LiveDatabase.psql(url, Self.script(451...500))
        (nodeA, portA) = try await Self.serve(slot: slotA, url: url)
        currentA.withLock { $0 = nodeA }
        client.move(to: portA)
        try await received.wait(for: 500, nodes)

        // 3. Move to node B, which reads its own slot, with the cursor from A: rows
        //    committed while the client is between nodes come from B's window, then
        //    B's live stream.
        let subscriptions = client.subscriptionCount
        client.hold()
        try await LiveDatabase.psql(url, Self.script(501...550))
        client.move(to: portB)
        try await client.waitUntilSubscribed(times: subscriptions + 1)
        try await received.wait(for: 550, nodes)
        try await LiveDatabase.psql(url, Self.script(551...600))
        try await received.wait(for: 600, nodes)
        try await client.finish()
        _ = try await nodeB.stop(SIGTERM)

        #expect(received.errorFrames.isEmpty, "\(received.errorFrames)")
        let ids = received.ids
        let inOrder = ids == Array(1...600)
        #expect(inOrder, "\(ids.count) rows; the first out of place at \(zip(ids, 1...).first { $0 != $1 }.map { "position \($1): \($0)" } ?? "the end"); missing \(Set(1...600).subtracting(ids).sorted().prefix(20)), \(ids.count - Set(ids).count) repeated, \(client.sessionCount) sessions")
    }
}
