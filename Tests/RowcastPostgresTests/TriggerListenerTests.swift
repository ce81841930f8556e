import Foundation
import Logging
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Synchronization
import Testing

/// Listeners known to the database (`rowcast.listeners`): a listener that stops or falls
/// behind misses nothing within its timeout, a change is deleted once every live
/// listener read it, and with no listener the trigger writes nothing.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(5)))
struct TriggerListenerTests {
    static func configuration(_ url: String, tables: Set<TableName>, name: String) -> TriggerCapture.Configuration {
        .init(connection: ConnectionSettings(conninfo: url), tables: tables, listenerName: name, maintenanceSeconds: 1)
    }

    /// Stops a capture and waits until its connection (and the name's lock) is gone.
    static func stop(_ capture: RunningCapture) async throws {
        capture.finish()
        try await eventually("the capture stopped", within: 60, seen: { "\(capture.capture.state.lastError ?? "running")" }) {
            !capture.capture.state.isConnected && capture.capture.state.lastError == "stopped"
        }
    }

    static func ids(_ records: [ChangeRecord]) -> [Int] {
        records.compactMap { record in
            (record.row ?? record.old).flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }?["id"] as? Int
        }
    }

    /// Two listeners with different tables. One stops while transactions (one of 5,000
    /// rows) write to both tables and the other reads and deletes what it read; back
    /// under its name, the first gets exactly what was committed meanwhile, once (it
    /// used to miss all of it, and a listener that fell behind lost what another
    /// process deleted). A notification replayed afterwards delivers nothing again.
    @Test func aListenerThatStopsCatchesUpOnEveryChangeOnceAndAReplayDeliversNothing() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let a = TableName(schema: "public", name: "a"), b = TableName(schema: "public", name: "b")
        for table in [a, b] { try admin.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, v text)") }
        try TriggerSetup.install(on: admin, tables: [a, b])
        let other = try RunningCapture(Self.configuration(url, tables: [b], name: "other"))
        defer { other.finish() }
        var first = try RunningCapture(Self.configuration(url, tables: [a], name: "first"))
        try admin.execute("INSERT INTO a VALUES (1, 'before')")
        #expect(Self.ids(await first.sink.wait(for: 1)) == [1])
        try await Self.stop(first)

        try admin.execute("INSERT INTO a SELECT n, 'while away' FROM generate_series(2, 5001) n")
        for n in 5002...5051 { try admin.executeScript("BEGIN; INSERT INTO a VALUES (\(n), 'one'); INSERT INTO b VALUES (\(n), 'both'); COMMIT;") }
        let xid = try admin.execute("SELECT max(batch) FROM rowcast.changes").scalar ?? "0"
        // The other listener reads its table and trims: rows of `a` stay for `first`.
        #expect(Self.ids(await other.sink.wait(for: 50)).count == 50)
        try await pause(for: .seconds(2))

        first = try RunningCapture(Self.configuration(url, tables: [a], name: "first"))
        defer { first.finish() }
        let caught = await first.sink.wait(for: 5050, seconds: 120)
        #expect(Self.ids(caught) == Array(2...5051), "caught up: \(caught.count) of 5050")
        try admin.execute("SELECT pg_notify('rowcast', $1)", [xid])
        try admin.execute("INSERT INTO a VALUES (6000, 'after')")
        _ = await first.sink.wait(for: 5051)
        try await pause(for: .milliseconds(500))
        #expect(Self.ids(first.sink.snapshot).suffix(2) == [5051, 6000] && first.sink.snapshot.count == 5051, "a replayed notification delivered again")
    }

    /// Once every live listener read a change it is deleted; with no live listener (the
    /// last one's registration expired) the trigger writes nothing at all.
    /// The connection lost in the middle of a window, after part of a transaction was
    /// delivered and before the position moved: the window is read again on the next
    /// connection, from after the last change delivered. It used to be read again
    /// whole (200 of 1,000 rows came twice), then from the start of the page a large
    /// row's own read failed in.
    @Test func aConnectionLostMidWindowDeliversNothingTwice() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("midwindow"))
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY, body text)")
        try TriggerSetup.install(on: database, tables: [table])
        let applicationName = LiveDatabase.uniqueName("rowcast-midwindow")
        let capture = try RunningCapture(tables: [table], applicationName: applicationName)
        defer { capture.finish() }
        // At the first record, the reader's backend is terminated (waiting until it is
        // gone): its next page, or its position's update, fails.
        let killer = try LiveDatabase.connect()
        let killed = Mutex<String?>(nil)
        capture.sink.onDeliver { _ in
            guard killed.withLock({ $0 == nil }) else { return }
            let outcome = try? killer.execute(
                "SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity WHERE application_name = $1", [applicationName]
            ).scalar
            killed.withLock { $0 = outcome ?? "error" }
        }
        // 1,000 rows in one transaction: five pages; and rows over 1 MB (incompressible:
        // md5 text), each read on its own (the read that fails first, right after the
        // first record).
        try database.execute("INSERT INTO \(table.quoted) SELECT n, CASE WHEN n % 2 = 0 AND n < 10 THEN (SELECT string_agg(md5(k::text), '') FROM generate_series(1, 40000) k) END FROM generate_series(1, 1000) n")
        // One more, after the reconnect: everything before it has arrived once it does.
        let deadline = Date().addingTimeInterval(60)
        var sentinel = 1_000
        var arrived = false
        while !arrived, Date() < deadline {
            sentinel += 1
            try database.execute("INSERT INTO \(table.quoted) VALUES (\(sentinel), 'last')")
            arrived = await capture.sink.wait(for: 1, seconds: 2) { $0.row?.text.hasPrefix(#"{"id":\#(sentinel),"#) == true }.count == 1
        }
        #expect(killed.withLock { $0 } == "t", "the reader's backend was terminated mid-window")
        let ids = Self.ids(capture.sink.snapshot).map(String.init)
        let repeated = Dictionary(grouping: ids, by: { $0 }).filter { $0.value.count > 1 }.count
        #expect(arrived && repeated == 0 && Set(ids).count == sentinel, "\(ids.count) records, \(Set(ids).count) distinct of \(sentinel), \(repeated) repeated")
    }

    /// A listener whose registration is gone when it comes back (lost in a crash,
    /// rowcast.listeners being unlogged, or dropped by another listener after the
    /// timeout) warns that changes committed meanwhile may be missing. It used to say
    /// only, at info, that it delivers changes from now on.
    @Test func aListenerWhoseRegistrationIsGoneWarnsOfWhatItMayHaveMissed() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("gone"))
        let url = try #require(LiveDatabase.url)
        let database = try LiveDatabase.connect()
        try database.execute("CREATE TABLE \(table.quoted) (id int PRIMARY KEY)")
        try TriggerSetup.install(on: database, tables: [table])
        let (name, applicationName) = (LiveDatabase.uniqueName("gone"), LiveDatabase.uniqueName("rowcast-gone"))
        let messages = LogCollector()
        var logger = Logger(label: "rowcast-tests") { _ in messages }
        logger.logLevel = .info
        var configuration = Self.configuration(url, tables: [table], name: name)
        configuration.connection = ConnectionSettings(conninfo: url, applicationName: applicationName)
        let capture = RunningCapture(source: try TriggerCapture.connect(configuration: configuration, logger: logger))
        defer { capture.finish() }
        try database.execute("INSERT INTO \(table.quoted) VALUES (1)")
        #expect(await capture.sink.wait(for: 1).count == 1)
        // As a crash leaves it: no registration, and the connection gone.
        try database.execute("DELETE FROM rowcast.listeners WHERE name = $1", [name])
        try database.execute("SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity WHERE application_name = $1", [applicationName])
        try await eventually("a warning that changes may be missing", within: 60, seen: { messages.lines.suffix(3).joined(separator: " | ") }) {
            messages.lines.contains { $0.hasPrefix("warning ") && $0.contains("may be missing") }
        }
    }

    /// A process started again under a name whose registration is gone (dropped past
    /// --listener-timeout, or lost when PostgreSQL restarted after a crash) warns that
    /// changes committed meanwhile may be missing: the database remembers the names
    /// that registered. It used to say, at info, only that changes from now on are
    /// delivered, as for a name never seen.
    @Test func aProcessStartedUnderANameWhoseRegistrationIsGoneWarns() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(Self.configuration(url, tables: [table], name: "returning"))
        try admin.execute("INSERT INTO t VALUES (1)")
        #expect(await capture.sink.wait(for: 1).count == 1)
        try await Self.stop(capture)
        try admin.execute("DELETE FROM rowcast.listeners")

        let start = { (name: String) throws -> (RunningCapture, LogCollector) in
            let messages = LogCollector()
            var logger = Logger(label: "rowcast-tests") { _ in messages }
            logger.logLevel = .info
            let source = try TriggerCapture.connect(configuration: Self.configuration(url, tables: [table], name: name), logger: logger)
            return (RunningCapture(source: source), messages)
        }
        let (back, messages) = try start("returning")
        defer { back.finish() }
        try await eventually("a warning that changes may be missing", within: 60, seen: { messages.lines.suffix(3).joined(separator: " | ") }) {
            messages.lines.contains { $0.hasPrefix("warning ") && $0.contains("may be missing") }
        }
        // A name never registered before is told nothing of the kind.
        let (fresh, freshMessages) = try start("fresh")
        defer { fresh.finish() }
        try await eventually("the new listener registered", within: 60, seen: { freshMessages.lines.joined(separator: " | ") }) {
            freshMessages.lines.contains { $0.contains("listening as fresh") }
        }
        #expect(!freshMessages.lines.contains { $0.hasPrefix("warning ") }, "\(freshMessages.lines)")
    }

    /// A listener whose registration runs out while it reads a window (its sink
    /// stalled past --listener-timeout; nothing heartbeats mid-window) has expired, and
    /// the trigger wrote nothing meanwhile. Moving its position at the end of that
    /// window used to renew the registration from the window's start as if nothing
    /// happened, the change written while it was expired lost without a word; now the
    /// window's end finds it expired, and it says what it may have missed.
    @Test func aListenerThatExpiresWhileReadingAWindowSaysWhatItMissed() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        let messages = LogCollector()
        var logger = Logger(label: "rowcast-tests") { _ in messages }
        logger.logLevel = .info
        // No heartbeat during the test: only the window's end renews the registration.
        var configuration = Self.configuration(url, tables: [table], name: "stalled")
        configuration.maintenanceSeconds = 600
        let capture = RunningCapture(source: try TriggerCapture.connect(configuration: configuration, logger: logger))
        defer { capture.finish() }
        // Running: it has taken up its registration and delivers.
        try admin.execute("INSERT INTO t VALUES (0)")
        #expect(await capture.sink.wait(for: 1).count == 1)
        // The first record stalls the sink, in the window, until the test says so.
        let released = Mutex(false)
        capture.sink.onDeliver { _ in
            let deadline = Date().addingTimeInterval(60)
            while !released.withLock({ $0 }), Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        }
        try admin.execute("INSERT INTO t VALUES (1)")
        #expect(await capture.sink.wait(for: 2).count == 2)
        // Stalled in that window: its time runs out there (as after --listener-timeout),
        // and a write then finds no live listener. Set before the stall, the end of the
        // first record's window, late on a loaded machine, renewed it for minutes.
        try admin.execute("UPDATE rowcast.listeners SET expires = now() + interval '2 seconds' WHERE name = 'stalled'")
        try await eventually("the registration expired", within: 60, seen: { (try? admin.execute("SELECT expires - now() FROM rowcast.listeners").scalar) ?? "" }) {
            try admin.execute("SELECT count(*) FROM rowcast.listeners WHERE expires > now()").scalar == "0"
        }
        try admin.execute("INSERT INTO t VALUES (2)")
        released.withLock { $0 = true }
        try await eventually("a warning that changes were missed", within: 60, seen: { messages.lines.suffix(3).joined(separator: " | ") }) {
            messages.lines.contains { $0.hasPrefix("warning ") && $0.contains("--listener-timeout") }
        }
    }

    /// A listener that runs for good keeps its name known: the time it was last seen
    /// moves on with its heartbeat, so the 30-day forgetting never drops a live name
    /// (it used to be set at registration only, and a listener running a month lost
    /// its warning after a crash).
    @Test func aRunningListenersNameStaysKnown() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(Self.configuration(url, tables: [table], name: "lasting"))
        defer { capture.finish() }
        try admin.execute("INSERT INTO t VALUES (1)")
        #expect(await capture.sink.wait(for: 1).count == 1)
        // As if registered 31 days ago and running since.
        try admin.execute("UPDATE rowcast.listener_names SET seen = now() - interval '31 days' WHERE name = 'lasting'")
        try await eventually("the name seen again", within: 60, seen: { (try? admin.execute("SELECT seen::text FROM rowcast.listener_names").scalar) ?? "gone" }) {
            try admin.execute("SELECT count(*) FROM rowcast.listener_names WHERE name = 'lasting' AND seen > now() - interval '1 day'").scalar == "1"
        }
    }

    /// Stopped while it catches up on a backlog, a listener finishes the transaction it
    /// is reading and stops there, its position past what it delivered and no further;
    /// it used to read the whole backlog first (a `tail` killed 10 s after SIGTERM in
    /// `make bench`). Started again, it delivers the rest, each change once.
    @Test func aListenerStoppedWhileCatchingUpStopsAfterTheTransactionItReads() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        let first = try RunningCapture(Self.configuration(url, tables: [table], name: "backlog"))
        try admin.execute("INSERT INTO t VALUES (0)")
        #expect(await first.sink.wait(for: 1).count == 1)
        try await Self.stop(first)
        for batch in 0..<300 {
            try admin.execute("INSERT INTO t SELECT g FROM generate_series(\(batch * 10 + 1), \(batch * 10 + 10)) g")
        }
        // Stopped at its fifth record.
        let stopped = RunningCapture(
            source: try TriggerCapture.connect(configuration: Self.configuration(url, tables: [table], name: "backlog"), logger: LiveDatabase.logger)
        ) { sink, stop in
            sink.onDeliver { _ in if sink.snapshot.count == 5 { stop.stop() } }
        }
        try await eventually("the capture stopped itself", within: 120, seen: { "\(stopped.sink.snapshot.count) records" }) {
            !stopped.capture.state.isConnected && stopped.capture.state.lastError == "stopped"
        }
        let early = Self.ids(stopped.sink.snapshot)
        #expect(early.count < 3_000 && early.count % 10 == 0, "delivered \(early.count) of 3000 after the stop")
        let rest = try RunningCapture(Self.configuration(url, tables: [table], name: "backlog"))
        defer { rest.finish() }
        let late = Self.ids(await rest.sink.wait(for: 3_000 - early.count, seconds: 120))
        #expect((early + late).sorted() == Array(1...3_000), "\(early.count) then \(late.count) records")
    }

    /// Once stopping, a listener reads nothing more: a transaction committed while it
    /// stopped in the middle of a backlog (its notification arriving after that
    /// window) used to be delivered ahead of the backlog it follows, the row's
    /// history out of order.
    @Test func aStopWhileCatchingUpLetsNoLaterTransactionJumpAhead() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let writer = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "h")
        try admin.execute("CREATE TABLE h (id int PRIMARY KEY, v int)")
        try admin.execute("INSERT INTO h VALUES (1, 0)")
        try TriggerSetup.install(on: admin, tables: [table])
        var configuration = Self.configuration(url, tables: [table], name: "jump")
        let first = try RunningCapture(configuration)
        try admin.execute("UPDATE h SET v = v + 1")
        #expect(await first.sink.wait(for: 1).count == 1)
        try await Self.stop(first)
        for _ in 0..<200 { try admin.execute("UPDATE h SET v = v + 1") }
        // Every round of the loop queries the server, which brings the notification in.
        configuration.maintenanceSeconds = 0
        let stopped = RunningCapture(source: try TriggerCapture.connect(configuration: configuration, logger: LiveDatabase.logger)) { sink, stop in
            sink.onDeliver { _ in
                guard sink.snapshot.count == 5 else { return }
                stop.stop()
                _ = try? writer.execute("UPDATE h SET v = v + 1")
            }
        }
        try await eventually("the capture stopped itself", within: 120, seen: { "\(stopped.sink.snapshot.count) records" }) {
            !stopped.capture.state.isConnected && stopped.capture.state.lastError == "stopped"
        }
        let values = stopped.sink.snapshot.compactMap { record in
            record.row.flatMap { try? JSONSerialization.jsonObject(with: Data($0.bytes)) as? [String: Any] }?["v"] as? Int
        }
        #expect(values == Array(2...(values.count + 1)), "v arrived as \(values)")
    }

    /// rowcast.listener_names is bookkeeping for one warning: a table in an earlier
    /// shape (its column named `registered`), or missing, never keeps a listener from
    /// registering, delivering and trimming; set-up brings it to today's shape.
    @Test func theNamesTableInAnEarlierShapeKeepsNoListenerFromWorking() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        try admin.execute("ALTER TABLE rowcast.listener_names RENAME COLUMN seen TO registered")
        let capture = try RunningCapture(Self.configuration(url, tables: [table], name: "early"))
        try admin.execute("INSERT INTO t VALUES (1)")
        #expect(await capture.sink.wait(for: 1).count == 1)
        try await eventually("what it read trimmed", within: 60, seen: { capture.capture.state.lastError ?? "" }) {
            try admin.execute("SELECT count(*) FROM rowcast.changes").scalar == "0"
        }
        try await Self.stop(capture)
        try TriggerSetup.install(on: admin, tables: [table])
        #expect(try admin.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'rowcast.listener_names'::regclass AND attname = 'seen'").scalar == "1")
    }

    @Test func changesAreDeletedOnceReadAndNotWrittenWithNoListener() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "t")
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [table])
        var configuration = Self.configuration(url, tables: [table], name: "short")
        configuration.listenerTimeoutSeconds = 2
        let capture = try RunningCapture(configuration)
        try admin.execute("INSERT INTO t SELECT generate_series(1, 100)")
        #expect(await capture.sink.wait(for: 100).count == 100)
        let left = Mutex("?")
        try await eventually("rowcast.changes empty after the read", within: 60, seen: { "\(left.withLock { $0 }) rows left" }) {
            let count = try admin.execute("SELECT count(*) FROM rowcast.changes").scalar ?? "?"
            left.withLock { $0 = count }
            return count == "0"
        }
        try await Self.stop(capture)
        // Registered until its timeout: kept for it; after: nothing is written.
        try await eventually("the registration expired", within: 20, seen: { (try? admin.execute("SELECT name, expires, now(), position FROM rowcast.listeners").rows.description) ?? "" }) {
            try admin.execute("SELECT count(*) FROM rowcast.listeners WHERE expires > now()").scalar == "0"
        }
        try admin.execute("INSERT INTO t SELECT generate_series(101, 200)")
        #expect(try admin.execute("SELECT count(*) FROM rowcast.changes").scalar == "0", "the trigger wrote with no listener")
    }

    /// A transaction open when the first listener registers is never delivered in half
    /// (the first window's snapshot listed it as running, and its later statements
    /// were read); the next one arrives whole.
    @Test func aTransactionOpenAtRegistrationIsNeverDeliveredInHalf() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let writer = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        try admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        try TriggerSetup.install(on: admin, tables: [TableName(schema: "public", name: "t")])
        try writer.execute("BEGIN")
        try writer.execute("INSERT INTO t VALUES (1)")
        let capture = try RunningCapture(Self.configuration(url, tables: [TableName(schema: "public", name: "t")], name: "half"))
        defer { capture.finish() }
        try writer.execute("INSERT INTO t VALUES (2)")
        try writer.execute("COMMIT")
        try admin.execute("INSERT INTO t VALUES (3), (4)")
        _ = await capture.sink.wait(for: 2)
        try await pause(for: .milliseconds(500))
        #expect(Self.ids(capture.sink.snapshot) == [3, 4], "delivered \(Self.ids(capture.sink.snapshot))")
    }

    /// A `json` value with line breaks (`to_json` embeds it as written) arrives on one
    /// line: NDJSON and SSE frame records by lines.
    @Test func aJSONValueWithLineBreaksArrivesOnOneLine() async throws {
        let url = try await LiveDatabase.freshDatabase()
        let admin = try PostgresConnection(ConnectionSettings(conninfo: boundedConninfo(url)))
        let table = TableName(schema: "public", name: "docs")
        try admin.execute("CREATE TABLE docs (id int PRIMARY KEY, doc json)")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(Self.configuration(url, tables: [table], name: "lines"))
        defer { capture.finish() }
        try admin.execute("INSERT INTO docs VALUES (1, E'{\"a\":\\n1,\\r\\n\"b\": \"x\\\\ny\"}')")
        let record = try #require(await capture.sink.wait(for: 1).first)
        let text = record.row?.text ?? ""
        #expect(!text.contains("\n") && !text.contains("\r"), "\(text)")
        let doc = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["doc"] as? [String: Any]
        #expect(doc?["a"] as? Int == 1 && doc?["b"] as? String == "x\ny", "\(text)")
    }
}

/// Keeps what a logger says, as `level message` lines.
final class LogCollector: LogHandler, @unchecked Sendable {
    private let stored = Mutex<[String]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        stored.withLock { $0.append("\(event.level) \(event.message)") }
    }
    var lines: [String] { stored.withLock { $0 } }
}
