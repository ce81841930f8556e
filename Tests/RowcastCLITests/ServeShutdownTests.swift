import Foundation
import RowcastTestSupport
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization
import Testing

/// `rowcast serve` as users stop it: SIGTERM closes WebSocket clients with 1001 and
/// their last cursor, and in replication mode confirms to the slot only what the
/// resume window let go, so a restart rebuilds the window from the slot.
@Suite(
    .enabled(if: LiveDatabase.available, "needs the cluster that make test starts"),
    .timeLimit(.minutes(3))
)
struct ServeShutdownTests {
    @Test func sigtermClosesClientsWith1001AndConfirmsWhatTheWindowLogKept() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY, note text)")
        let slot = "shutdown_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let binary = Rowcast.binary.path
        // A status interval far longer than the test: only the shutdown can confirm.
        let server = try RunningProcess(binary, [
            "serve", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", slot,
            "--status-interval", "600", "--resume-window", "10", "--port", "0", "--db", url,
        ])
        let port = try await server.waitFor(#"serving replication mode on http://127\.0\.0\.1:(\d+)/"#)
        defer { try? LiveDatabase.psqlBlocking(url, "SELECT pg_drop_replication_slot('\(slot)')") }

        let logger = {
            var logger = Logger(label: "client")
            logger.logLevel = .warning
            return logger
        }()
        let lsns = Mutex<[String]>([])
        let lastCursor = Mutex<String?>(nil)
        let close = try await within(120, "a WebSocket session through serve's shutdown", seen: { "\(lsns.withLock { $0.count }) records; serve:\n\(server.output.suffix(1000))" }) {
          try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", configuration: .init(maxFrameSize: 1 << 24), logger: logger) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
            _ = try await messages.next()
            try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
            _ = try await messages.next()
            // Fifty transactions: the window keeps the last ten.
            // (psql -c runs a string as one transaction unless it says otherwise.)
            try await LiveDatabase.psql(url, (1...50).map { "BEGIN; INSERT INTO orders VALUES (\($0), 'x'); COMMIT;" }.joined(separator: "\n"))
            for _ in 0..<50 {
                guard case .text(let text) = try await messages.next(),
                    let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                    let record = frame["data"] as? [String: Any]
                else { continue }
                if let lsn = record["lsn"] as? String { lsns.withLock { $0.append(lsn) } }
                lastCursor.withLock { $0 = record["cursor"] as? String }
            }
            // /metrics in replication mode: what was captured and sent, and the slot's lag.
            let portNumber = try #require(Int(port))
            let metrics = String(decoding: try await onThread("GET /metrics", within: 60) { try RawClient.body(port: portNumber, path: "/metrics") }, as: UTF8.self)
            #expect(metrics.contains("rowcast_records_captured_total 50"), "\(metrics)")
            #expect(metrics.contains("rowcast_capture_lag_bytes "))
            // The window (and so the WAL the slot keeps) is visible: ten records.
            #expect(metrics.contains("rowcast_resume_window_records 10"), "\(metrics)")
            #expect(metrics.contains("rowcast_resume_window_oldest_seconds "))
            let status = try await ServeFaultTests.status(port: port)
            #expect(status["window_records"] as? Int == 10, "\(status)")
            #expect(status["lag_bytes"] is Int)
            #expect(try await server.stop(SIGTERM) == 0, "serve output:\n\(server.output)")
            while try await messages.next() != nil {}
          }
        }
        #expect(close?.closeCode == .goingAway)
        let cursor = try #require(lastCursor.withLock { $0 })
        #expect(close?.reason == "server shutting down; last cursor \(cursor)")

        let commits = lsns.withLock { $0 }
        try #require(commits.count == 50)
        // The slot is past all 50: the window log kept them (the slot no longer trails
        // the window, which kept ten), and only the shutdown could confirm.
        let confirmed = try await LiveDatabase.psql(
            url, "SELECT confirmed_flush_lsn > '\(commits[49])'::pg_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'"
        )
        let actual = try await LiveDatabase.psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(slot)'")
        #expect(confirmed == "t", "confirmed_flush_lsn \(actual) should be past the last commit \(commits[49])")
    }
}
