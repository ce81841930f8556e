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

        let client = ResumingClient()
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
