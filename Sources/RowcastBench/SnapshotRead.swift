import ArgumentParser
import Foundation
import HummingbirdWSClient
import Logging
import Synchronization

/// Reads one snapshot and says how long its first row and all of it took, as one JSON
/// line: from `rowcast serve` over WebSocket (`subscribe` with `"snapshot": true`), or,
/// for the baseline, from `psql -c "copy (select to_jsonb(t) from t) to stdout"`
/// (`--psql`), timing the first bytes and the end of its output.
struct SnapshotRead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot-read", abstract: "Read one snapshot (rowcast over WebSocket, or psql's copy) and time its first row and its end."
    )

    @Option(help: "WebSocket URL of rowcast serve.") var url = "ws://127.0.0.1:8080/ws"
    @Option(help: "The table to read.") var table = "public.snap"
    @Option(help: "psql to run instead (with --db): the baseline.") var psql: String?
    @Option(help: "The database, for --psql.") var db: String?

    func run() async throws {
        let started = ContinuousClock.now
        let (first, rows): (Duration?, Int)
        if let psql { (first, rows) = try readPSQL(psql) } else { (first, rows) = try await readRowcast() }
        let seconds = (ContinuousClock.now - started) / .seconds(1)
        print(#"{"first_row_seconds":\#(first.map { $0 / .seconds(1) } ?? -1),"seconds":\#(seconds),"rows":\#(rows)}"#)
    }

    private func readRowcast() async throws -> (Duration?, Int) {
        let started = ContinuousClock.now
        let seen = Mutex<(first: Duration?, rows: Int, end: String?)>((nil, 0, nil))
        var logger = Logger(label: "snapshot-read")
        logger.logLevel = .critical
        let subscribe = #"{"event":"subscribe","data":{"tables":["\#(table)"],"snapshot":true}}"#
        _ = try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: 1 << 26), logger: logger) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 1 << 26).makeAsyncIterator()
            _ = try await messages.next()  // connected
            try await outbound.write(.text(subscribe))
            while case .text(let text)? = try await messages.next() {
                if text.hasPrefix(#"{"event":"update""#) {
                    seen.withLock { seen in
                        if seen.first == nil { seen.first = ContinuousClock.now - started }
                        seen.rows += 1
                    }
                } else if text.hasPrefix(#"{"event":"snapshot_end""#) || text.hasPrefix(#"{"event":"error""#) {
                    seen.withLock { $0.end = text }
                    break
                }
            }
            try await outbound.close(.normalClosure, reason: nil)
        }
        let (first, rows, end) = seen.withLock { ($0.first, $0.rows, $0.end) }
        guard let end, end.hasPrefix(#"{"event":"snapshot_end""#) else { throw ValidationError("the snapshot did not end: \(end ?? "the connection closed")") }
        return (first, rows)
    }

    private func readPSQL(_ program: String) throws -> (Duration?, Int) {
        guard let db else { throw ValidationError("--psql needs --db") }
        let started = ContinuousClock.now
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = ["-X", "-q", "-d", db, "-c", "copy (select to_jsonb(t) from \(table) t) to stdout"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        var first: Duration?
        var rows = 0
        let reader = pipe.fileHandleForReading
        while case let data = reader.availableData, !data.isEmpty {
            if first == nil { first = ContinuousClock.now - started }
            rows += data.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ValidationError("psql exited \(process.terminationStatus)") }
        return (first, rows)
    }
}
