import Foundation
import RowcastTestSupport
import Synchronization
import Testing

/// A slot the server invalidates (`max_slot_wal_keep_size`) while `serve` cannot read:
/// named once with its fix, shown in `/status` and `slot status`; with
/// `--on-slot-lost recreate`, `serve` makes a new slot and carries on, and a client
/// whose cursor is from before it gets `cursor_expired` with reason `slot_lost`.
///
/// Part of ``WindowLogRestartTests``' suite, whose tests run one at a time: this one
/// starts a cluster of its own and writes WAL until its slot is invalidated.
extension WindowLogRestartTests {
    /// Pauses `server` (SIGSTOP) and writes WAL past the cap, then checkpoints until the
    /// server invalidates `slot`; `during` runs while it is paused.
    static func invalidate(_ slot: String, of server: RunningProcess, url: String, during: () async throws -> Void = {}) async throws {
        server.signal(SIGSTOP)
        defer { server.signal(SIGCONT) }
        try await during()
        try await eventually("slot \(slot) invalidated", within: 120, interval: .milliseconds(200)) {
            try await LiveDatabase.psql(url, "INSERT INTO churn SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 20000) g; SELECT pg_switch_wal(); CHECKPOINT;", seconds: 120)
            return try await LiveDatabase.psql(url, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '\(slot)'")
                .trimmingCharacters(in: .whitespacesAndNewlines) == "lost"
        }
    }

    @Test func aLostSlotIsNamedOnceAndRecreateCarriesOnFromANewOne() async throws {
        let own = try await Self.ownCluster(["max_slot_wal_keep_size=32MB"])
        defer { own.stop() }
        let url = own.url
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE churn (id int, pad text)")

        // 1. --on-slot-lost wait (the default): named once, shown in /status and slot status.
        let waiting = try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", "replication", "--table", "orders", "--slot", "waits", "--publication", "orders", "--status-interval", "1", "--port", "0", "--db", url,
        ])
        let waitingPort = try await waiting.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        try await Self.invalidate("waits", of: waiting, url: url)
        try await eventually("slot_lost in /status", within: 120, seen: { waiting.output.suffix(1000).description }) {
            (try await Self.status(waitingPort)["slot_lost"] as? String)?.contains("max_slot_wal_keep_size") == true
        }
        let health = try await onThread("GET /healthz", within: 60) { try RawClient.status(port: Int(waitingPort) ?? 0, path: "/healthz", host: "127.0.0.1") }
        #expect(health == "503")
        let slotStatus = try await Rowcast.run(["slot", "status", "--slot", "waits", "--db", url])
        #expect(slotStatus.stderr.contains("slot waits has lost WAL it needed") && slotStatus.stderr.contains("--on-slot-lost recreate"), "\(slotStatus.stdout)\(slotStatus.stderr)")
        // Several reconnection rounds later, still named once.
        try await pause(for: .seconds(3))
        let named = waiting.output.components(separatedBy: "replication slot waits is lost").count - 1
        #expect(named == 1, "named \(named) times:\n\(waiting.output.suffix(1500))")
        #expect(waiting.output.contains("fix: run serve with --on-slot-lost recreate"))
        #expect(try await waiting.stop(SIGTERM) == 0)

        // 2. --on-slot-lost recreate: a live client has 1...10; 11...20 commit while the
        //    slot is lost (never captured); the client's cursor is then refused with
        //    slot_lost, and a fresh client gets what commits after the new slot.
        let server = try RunningProcess(Rowcast.binary.path, [
            "serve", "--mode", "replication", "--table", "orders", "--slot", "recreates", "--publication", "orders", "--status-interval", "1",
            "--on-slot-lost", "recreate", "--port", "0", "--db", url,
        ])
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        let client = ResumingClient()
        client.move(to: port)
        client.run()
        try await client.waitUntilSubscribed()
        try await LiveDatabase.psql(url, (1...10).map { "INSERT INTO orders VALUES (\($0));" }.joined(separator: "\n"))
        try await client.received.wait(for: 10) { server.output.suffix(800).description }
        try await Self.invalidate("recreates", of: server, url: url) {
            try await LiveDatabase.psql(url, (11...20).map { "INSERT INTO orders VALUES (\($0));" }.joined(separator: "\n"))
        }
        _ = try await server.waitFor("streams again from", seconds: 120)
        try await eventually("the live client told slot_lost", within: 60, seen: { client.received.summary }) {
            !client.received.errorFrames.isEmpty
        }
        #expect(client.received.errorFrames.first?.contains("cursor_expired") == true && client.received.errorFrames.first?.contains("(reason slot_lost)") == true, "\(client.received.errorFrames)")
        #expect(client.received.ids == Array(1...10))
        try await client.finish()

        let fresh = ResumingClient()
        fresh.move(to: port)
        fresh.run()
        try await fresh.waitUntilSubscribed()
        try await LiveDatabase.psql(url, (21...30).map { "INSERT INTO orders VALUES (\($0));" }.joined(separator: "\n"))
        try await fresh.received.wait(for: 10) { server.output.suffix(800).description }
        try await fresh.finish()
        #expect(fresh.received.ids == Array(21...30), "\(fresh.received.summary)")
        let status = try await Self.status(port)
        #expect(status["slot_lost"] == nil, "\(status)")
        #expect(try await server.stop(SIGTERM) == 0)
    }
}
