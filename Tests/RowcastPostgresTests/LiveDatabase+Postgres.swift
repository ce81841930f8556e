import Foundation
import Logging
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Synchronization
import Testing

/// What the Postgres tests add to the live database's gate: libpq connections.
extension LiveDatabase {
    static var settings: ConnectionSettings { ConnectionSettings(conninfo: url ?? "") }

    static func connect(applicationName: String = "rowcast-tests") throws -> PostgresConnection {
        try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url ?? ""), applicationName: applicationName))
    }

    /// The settings under which the contract defines row JSON: UTC and the defaults.
    static let referenceSettings = """
        SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres';
        SET bytea_output = 'hex'; SET extra_float_digits = 1;
        """

    static let logger: Logger = {
        var logger = Logger(label: "rowcast-tests")
        logger.logLevel = .warning
        return logger
    }()
}

/// Collects what a capture delivers, for tests to wait on.
final class CollectingSink: RecordSink {
    private let records = Mutex<[ChangeRecord]>([])
    /// Held in a class, not as a function value in the Mutex: a closure built in a
    /// nested function recursed without end through the compiler's reabstraction
    /// thunks when taken back out of `Mutex<Optional<function>>`.
    private final class Hook: Sendable {
        let action: @Sendable (ChangeRecord) -> Void
        init(_ action: @escaping @Sendable (ChangeRecord) -> Void) { self.action = action }
    }
    private let hook = Mutex<Hook?>(nil)

    func deliver(_ record: ChangeRecord) {
        records.withLock { $0.append(record) }
        hook.withLock { $0 }?.action(record)
    }

    /// Runs `action` on the capture's thread with every record it delivers from now on.
    func onDeliver(_ action: @escaping @Sendable (ChangeRecord) -> Void) { hook.withLock { $0 = Hook(action) } }
    func flush() -> SinkProgress { .delivered(through: records.withLock { $0.last?.cursor }) }

    var snapshot: [ChangeRecord] { records.withLock { $0 } }

    /// Waits until `count` records matching `filter` arrived, or `seconds` pass.
    func wait(for count: Int, seconds: Double = 60, where filter: (ChangeRecord) -> Bool = { _ in true }) async -> [ChangeRecord] {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let matching = snapshot.filter(filter)
            if matching.count >= count || Date() > deadline { return matching }
            try? await pause(for: .milliseconds(50))
        }
    }
}

/// A capture running on its own thread for the duration of a test.
struct RunningCapture {
    let capture: any CaptureSource
    let sink = CollectingSink()
    let stop = StopSignal()

    /// `prepare` runs before the capture does (a hook on the sink, say).
    init(source: any BlockingCaptureSource, prepare: (CollectingSink, StopSignal) -> Void = { _, _ in }) {
        capture = source
        let sink = sink, stop = stop
        prepare(sink, stop)
        // A thread of its own: a busy cooperative pool must not delay the capture.
        Thread { source.runBlocking(sink: sink, stop: stop) }.start()
    }

    init(_ configuration: TriggerCapture.Configuration) throws {
        self.init(source: try TriggerCapture.connect(configuration: configuration, logger: LiveDatabase.logger))
    }

    init(replication configuration: ReplicationCapture.Configuration) throws {
        self.init(source: try ReplicationCapture.connect(configuration: configuration, logger: LiveDatabase.logger))
    }

    /// A replication capture, connected on a thread of its own: making its slot waits
    /// for every transaction of the cluster that holds an id, which must not hold one of
    /// the cooperative pool's two threads (it starved unrelated tests under load).
    static func replication(_ configuration: ReplicationCapture.Configuration) async throws -> RunningCapture {
        try await onThread("a replication capture to connect and make its slot", within: 300) {
            try RunningCapture(replication: configuration)
        }
    }

    init(tables: [TableName], channels: [String] = [], applicationName: String = "rowcast-tests") throws {
        try self.init(.init(
            connection: ConnectionSettings(conninfo: LiveDatabase.url ?? "", applicationName: applicationName),
            tables: Set(tables),
            channels: channels
        ))
    }

    func finish() { stop.stop() }

    /// Stops the capture and drops its slot (replication mode), so tests leave no slot behind.
    func finish(droppingSlotIn url: String) {
        stop.stop()
        guard let replication = capture as? ReplicationCapture,
            let connection = try? PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        else { return }
        try? SlotAdmin.drop(on: connection, slot: replication.configuration.slot, force: true)
    }
}

/// Asks the server whether `row` is exactly `to_jsonb` of the row of `table` whose
/// `key` column equals the row's, under TimeZone=UTC; returns (expected, actual) as
/// jsonb text, which normalises key order and whitespace but keeps numeric scale.
func serverView(of row: RawJSON, table: TableName, key: String = "id", on connection: PostgresConnection) throws -> (expected: String?, actual: String?) {
    let result = try connection.execute(
        """
        SELECT (SELECT to_jsonb(rowcast_row)::text FROM \(table.quoted) rowcast_row WHERE to_jsonb(rowcast_row)->\(quoteLiteral(key)) = $1::jsonb->\(quoteLiteral(key))),
               $1::jsonb::text
        """,
        [row.text]
    )
    return (result.rows.first?[0] ?? nil, result.rows.first?[1] ?? nil)
}

func quoteLiteral(_ text: String) -> String {
    "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
}
