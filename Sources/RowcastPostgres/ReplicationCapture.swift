import Foundation
import Logging
import RowcastCore
import Synchronization

/// Replication mode's capture source: consumes a logical slot with `pgoutput` over
/// the streaming replication protocol.
///
/// This is the I/O shell around ``ReplicationSession``, which holds every rule (what
/// a record is, when to send a status update, what may be confirmed, `--endpos`,
/// skipping resends): the shell reads the socket, feeds the session events, and
/// performs the actions it returns, in order. It also reconnects with backoff.
package final class ReplicationCapture: BlockingCaptureSource {
    package struct Configuration: Sendable {
        package var connection: ConnectionSettings
        package var slot: String
        package var publication: String
        /// The session's rules: tables, `since`, status interval, `--endpos`.
        package var session: ReplicationSession.Configuration
        /// What to do when the slot is lost (`--on-slot-lost`).
        package var onSlotLost: SlotLostPolicy = .wait

        package init(connection: ConnectionSettings, slot: String = "rowcast", publication: String = "rowcast", session: ReplicationSession.Configuration = .init()) {
            self.connection = connection
            self.slot = slot
            self.publication = publication
            self.session = session
        }

        /// The same, with the session's settings spelled out.
        package init(
            connection: ConnectionSettings, slot: String = "rowcast", publication: String = "rowcast",
            tables: Set<TableName>, since: Cursor? = nil, statusInterval: Double = 10, endPosition: UInt64? = nil
        ) {
            self.init(
                connection: connection, slot: slot, publication: publication,
                session: .init(tables: tables, since: since, statusInterval: statusInterval, endPosition: endPosition)
            )
        }
    }

    /// What `serve` does when its slot is lost: invalidated by the server
    /// (`max_slot_wal_keep_size`) or dropped.
    package enum SlotLostPolicy: String, Sendable, CaseIterable {
        /// Name it once, capture nothing, and go on when a usable slot of that name
        /// appears (made by hand): from its position, as after `recreate`.
        case wait
        /// Drop what is left of it, make a new one, and carry on from there.
        case recreate
    }

    package let configuration: Configuration
    package let state = CaptureState()
    package var mode: CaptureMode { .replication }
    /// Just before the slot's confirmed position when streaming began: the slot
    /// delivers only transactions that commit at or after it.
    package let origin: Cursor
    private let logger: Logger
    private let firstConnection: Mutex<PostgresConnection?>
    /// The slot's confirmed position when streaming began.
    package let startConfirmed: UInt64
    /// The slot did not exist before this start (made now): nothing kept from an
    /// earlier stream continues it.
    package let slotIsNew: Bool
    /// The slot was lost and `--on-slot-lost recreate` made it again at start.
    package let slotRecreated: Bool
    /// The cluster's system identifier, timeline and database (`IDENTIFY_SYSTEM`), and
    /// the slot: whose stream this is. A promoted standby or a restore to a point in
    /// time has a new timeline.
    package var streamIdentity: String { identity.withLock { $0.full } }
    /// The same without the timeline: where the stream's files live across failovers.
    package var streamName: String { identity.withLock { $0.name } }
    /// The server's WAL position when streaming began.
    package var serverWALAtStart: UInt64 { identity.withLock { $0.wal } }
    private let identity = Mutex((full: "", name: "", wal: UInt64(0)))

    /// Checks the publication and the slot (creating what is missing, see
    /// ``ReplicationSetup``), checks the slot is free, and starts streaming. Errors
    /// here are the user's to fix, so they are thrown.
    package static func connect(configuration: Configuration, allTables: ReplicationSetup.AllTables = .no, logger: Logger) throws(CaptureError) -> ReplicationCapture {
        let admin: PostgresConnection
        var confirmed: UInt64 = 0
        var captured: Set<TableName>?
        var columns: [TableName: [String: ColumnKind]] = [:]
        var wholeOldRows: Set<TableName> = []
        var ancestors: [TableName: Set<TableName>] = [:]
        do {
            admin = try PostgresConnection(configuration.connection)
        } catch {
            throw .cannotConnect(error)
        }
        defer { admin.close() }
        var slotIsNew = false
        var recreated = false
        do {
            slotIsNew = try SlotAdmin.status(on: admin, slot: configuration.slot).isEmpty
            let done = try ReplicationSetup.install(
                on: admin,
                publication: configuration.publication,
                slot: configuration.slot,
                tables: configuration.session.tables.sorted { $0.description < $1.description },
                allTables: allTables
            )
            for line in done { logger.info("\(line)") }
            captured = try capturedTables(on: admin, publication: configuration.publication, named: configuration.session.tables)
            columns = try CatalogColumns.kinds(of: captured ?? [], on: admin)
            wholeOldRows = try CatalogColumns.fullIdentity(of: captured ?? [], on: admin)
            ancestors = try CatalogColumns.partitionAncestors(of: captured ?? [], on: admin)
            if let lost = try SlotAdmin.status(on: admin, slot: configuration.slot).first, lost.walStatus == "lost" {
                guard configuration.onSlotLost == .recreate else {
                    throw CaptureError.notSetUp(
                        "replication slot \(lost.name) is lost: the server invalidated it (it held back more WAL than max_slot_wal_keep_size allows) (fix: run serve with --on-slot-lost recreate, or rowcast slot drop \(lost.name) and start again; clients resuming from before get cursor_expired)"
                    )
                }
                try SlotAdmin.drop(on: admin, slot: lost.name, force: false)
                try SlotAdmin.create(on: admin, slot: lost.name)
                recreated = true
                logger.warning("replication slot \(lost.name) was lost (invalidated by the server): made a new one; changes committed while it was lost were not captured")
            }
            if let slot = try SlotAdmin.status(on: admin, slot: configuration.slot).first {
                confirmed = slot.confirmedFlushLSN.flatMap(parseLSN) ?? 0
                if slot.plugin != "pgoutput" {
                    throw CaptureError.notSetUp("replication slot \"\(slot.name)\" uses plugin \(slot.plugin ?? "?"), not pgoutput (fix: rowcast slot drop \(slot.name), or choose another with --slot)")
                }
                if slot.active {
                    throw CaptureError.notSetUp(SlotError.active(slot.name, pid: slot.activePID).description)
                }
            }
        } catch let error as CaptureError {
            throw error
        } catch let error as SetupError {
            if case .database(.cannotConnect(let why)) = error { throw .cannotConnect(.cannotConnect(why)) }
            throw .notSetUp(error.description)
        } catch {
            throw .notSetUp("\(error)")
        }
        let origin = Cursor.replication(commitLSN: confirmed > 0 ? confirmed - 1 : 0, index: confirmed > 0 ? .max : 0)
        let capture = ReplicationCapture(
            configuration: configuration, origin: origin, startConfirmed: confirmed, slotIsNew: slotIsNew, slotRecreated: recreated, logger: logger
        )
        capture.state.setCapturedTables(captured)
        capture.state.setColumns(columns)
        capture.state.setWholeOldRows(wholeOldRows)
        capture.state.setPartitionAncestors(ancestors, of: captured ?? [])
        let stream: PostgresConnection
        do {
            stream = try capture.startStream()
        } catch {
            if case .cannotConnect = error { throw .cannotConnect(error) }
            throw .notSetUp(error.description)
        }
        capture.firstConnection.withLock { $0 = stream }
        capture.state.markConnected()
        return capture
    }

    private init(configuration: Configuration, origin: Cursor, startConfirmed: UInt64, slotIsNew: Bool, slotRecreated: Bool, logger: Logger) {
        self.configuration = configuration
        self.origin = origin
        self.startConfirmed = startConfirmed
        self.slotIsNew = slotIsNew
        self.slotRecreated = slotRecreated
        self.logger = logger
        self.firstConnection = Mutex(nil)
    }

    package func run(sink: any RecordSink, stop: StopSignal) async {
        await runBlockingOnThread(named: "rowcast-replication", stop: stop) { stop in
            self.runBlocking(sink: sink, stop: stop)
        }
    }

    /// The capture loop, on a thread of its own: stream, and reconnect until the
    /// session finishes (stop, `--endpos`, or a failed sink).
    package func runBlocking(sink: any RecordSink, stop: StopSignal) {
        let connection: PostgresConnection? = firstConnection.withLock { connection in
            defer { connection = nil }
            return connection
        }
        var driver = Driver(
            session: ReplicationSession(configuration: configuration.session),
            types: TypeCatalog(settings: configuration.connection),
            sink: sink, state: state, logger: logger
        )
        var slotLostSaid = false
        ReconnectLoop(state: state, logger: logger, stop: stop).run(
            connection: connection,
            reconnect: {
                try checkSlot(driver: &driver, sink: sink, said: &slotLostSaid)
                return try startStream()
            },
            reconnected: "resumed streaming from slot \(configuration.slot)",
            finished: { driver.session.finished != nil },
            work: { current in try driver.stream(on: current, stop: stop) },
            lost: { try? driver.feed(.disconnected, on: nil) }
        )
    }

    /// Before each reconnection: is the slot still the one streamed from? A slot the
    /// server invalidated or someone dropped is named once (with the fix) and, with
    /// `--on-slot-lost recreate`, made again; a slot ahead of everything this process
    /// received was made again by someone else. Either way the stream starts over at
    /// the new slot's position, and the sink is told (``RecordSink/streamRestarted(after:)``).
    private func checkSlot(driver: inout Driver, sink: any RecordSink, said: inout Bool) throws(SlotLost) {
        let slot = configuration.slot
        let connection: PostgresConnection
        do {
            connection = try PostgresConnection(configuration.connection)
        } catch {
            return  // the reconnection itself says why
        }
        defer { connection.close() }
        guard let current = try? SlotAdmin.status(on: connection, slot: slot) else { return }
        let reason: String? =
            if let found = current.first {
                found.walStatus == "lost" ? "the server invalidated it: it held back more WAL than max_slot_wal_keep_size allows" : nil
            } else {
                "it no longer exists (dropped)"
            }
        if let reason {
            state.setSlotLost(reason)
            if !said {
                said = true
                if configuration.onSlotLost == .recreate {
                    logger.error("replication slot \(slot) is lost: \(reason); making a new one (--on-slot-lost recreate): changes committed meanwhile are not captured (fix: raise max_slot_wal_keep_size)")
                } else {
                    let remake = current.isEmpty ? "restart serve, which makes it again" : "rowcast slot drop \(slot) and restart serve"
                    logger.error(
                        "replication slot \(slot) is lost: \(reason). serve captures nothing until it is made again (fix: run serve with --on-slot-lost recreate, or \(remake); and raise max_slot_wal_keep_size)"
                    )
                }
            }
            guard configuration.onSlotLost == .recreate else { throw SlotLost(slot: slot, reason: reason) }
            do {
                if !current.isEmpty { try SlotAdmin.drop(on: connection, slot: slot, force: true) }
                try SlotAdmin.create(on: connection, slot: slot)
            } catch {
                throw SlotLost(slot: slot, reason: "\(reason); making it again failed: \(error)")
            }
        }
        guard let made = try? SlotAdmin.status(on: connection, slot: slot).first, made.walStatus != "lost",
            let position = made.confirmedFlushLSN.flatMap(parseLSN)
        else { return }
        // A usable slot: the same one unless it is ahead of anything this process saw.
        let seen = max(driver.session.acknowledgement.received, startConfirmed)
        guard reason != nil || said || position > seen else { return }
        let origin = Cursor.replication(commitLSN: position > 0 ? position - 1 : 0, index: position > 0 ? .max : 0)
        logger.warning(
            "replication slot \(slot) streams again from \(formatLSN(position)), a new slot: changes committed between \(formatLSN(driver.session.acknowledgement.confirmed)) and it were not captured; clients resuming from before it get cursor_expired (slot_lost)"
        )
        sink.streamRestarted(after: origin)
        var session = configuration.session
        session.since = nil
        driver.session = ReplicationSession(configuration: session)
        state.setSlotLost(nil)
        said = false
    }

    /// The tables the publication sends that the session forwards; nil for a
    /// publication FOR ALL TABLES with no table named.
    private static func capturedTables(on connection: PostgresConnection, publication: String, named: Set<TableName>) throws -> Set<TableName>? {
        if try connection.execute("SELECT puballtables FROM pg_publication WHERE pubname = $1", [publication]).scalar == "t" {
            return named.isEmpty ? nil : named
        }
        let published = Set(try connection.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", [publication]
        ).rows.compactMap { row in row[0].flatMap { schema in row[1].map { TableName(schema: schema, name: $0) } } })
        return named.isEmpty ? published : published.intersection(named)
    }

    /// Opens the replication connection, pins the output settings, and starts streaming.
    private func startStream() throws(PostgresError) -> PostgresConnection {
        let connection = try PostgresConnection(configuration.connection, replication: true)
        // The settings that shape text output: database or role defaults must not change records.
        // (A replication connection speaks the simple query protocol only.)
        for setting in ["TimeZone = 'UTC'", "DateStyle = 'ISO, MDY'", "IntervalStyle = 'postgres'", "bytea_output = 'hex'", "extra_float_digits = 1"] {
            try connection.executeScript("SET " + setting)
        }
        let system = try connection.simpleQuery("IDENTIFY_SYSTEM")
        if let row = system.rows.first, row.count > 3, let systemID = row[0] {
            let (timeline, database) = (row[1] ?? "", row[3] ?? "")
            let wal = row[2].flatMap(parseLSN) ?? 0
            identity.withLock { $0 = ("\(systemID)/\(timeline)/\(database)/\(configuration.slot)", "\(systemID)/\(database)/\(configuration.slot)", wal) }
        }
        let publication = configuration.publication.replacingOccurrences(of: "'", with: "''").replacingOccurrences(of: "\"", with: "\"\"")
        try connection.startCopyBoth(
            "START_REPLICATION SLOT \(TableName.quoteIdentifier(configuration.slot)) LOGICAL 0/0 (proto_version '1', publication_names '\"\(publication)\"', messages 'true')"
        )
        return connection
    }
}

/// Carries out a ``ReplicationSession``'s actions: the only place that touches the
/// socket, the sink and the catalog for replication mode.
struct Driver {
    var session: ReplicationSession
    let types: TypeCatalog
    let sink: any RecordSink
    let state: CaptureState
    let logger: Logger
    private var actions: [ReplicationSession.Action] = []
    /// How often the captured tables' columns are read from the catalog again: a DDL
    /// on a table with no change since sends no Relation message, and row rules would
    /// go on resolving against the table as it was (a replay of its older records too).
    static let catalogSeconds = 10.0
    private var catalogReadAt: Double

    init(session: ReplicationSession, types: TypeCatalog, sink: any RecordSink, state: CaptureState, logger: Logger) {
        self.session = session
        self.types = types
        self.sink = sink
        self.state = state
        self.logger = logger
        catalogReadAt = Self.now()
        actions.reserveCapacity(16)
    }

    /// Every ``catalogSeconds``: the captured tables' columns and partitioned tables as
    /// the catalog has them now, wherever they differ from what the capture holds (a
    /// Relation message's view of a table the stream was behind on, say: rules hold as
    /// the catalog is when a record is sent). Two queries, however many tables.
    private mutating func readCatalogIfDue() throws(PostgresError) {
        let now = Self.now()
        guard now - catalogReadAt >= Self.catalogSeconds else { return }
        catalogReadAt = now
        let tables = state.capturedTables ?? Set(state.columns.keys)
        guard !tables.isEmpty else { return }
        let read = try types.tables(tables)
        let held = state.columns
        for (table, kinds) in read.kinds where held[table] != kinds { state.capture(table, columns: kinds) }
        state.setPartitionAncestors(read.ancestors, of: tables.union(state.ancestryKnown ?? []))
    }

    /// Streams until the session finishes; throws when the connection fails or the
    /// server breaks the protocol (the caller reconnects).
    mutating func stream(on connection: PostgresConnection, stop: StopSignal) throws(PostgresError) {
        var stopFed = false
        /// The last wait found data at once: the stream is flowing.
        var busy = false
        while session.finished == nil {
            if stop.isStopped, !stopFed {
                stopFed = true
                try feed(.stop, on: connection)
                continue
            }
            let read = try connection.readCopyData()
            if case .data = read {
                try feed(receiving: consume read, on: connection)
                continue
            }
            switch read {
            case .data:
                break  // fed above
            case .wouldBlock:
                try feed(.caughtUp(at: Self.now()), on: connection)
                if session.finished != nil { break }
                try readCatalogIfDue()
                // Read the moment each message arrives, a busy stream comes a message
                // per wakeup, and the system calls on both ends of the socket slow the
                // walsender itself (1M small rows: 2 s of 4 s in the kernel). So after
                // a busy stretch, let it gather for half a millisecond and take what
                // came in a few large reads. An idle stream still wakes at once.
                if busy { usleep(500) }
                if connection.waitReadable(milliseconds: 250) {
                    try connection.consumeInput()
                    var reads = 0
                    while reads < 32, connection.waitReadable(milliseconds: 0) {
                        try connection.consumeInput()
                        reads += 1
                    }
                    busy = true
                } else {
                    busy = false
                    try feed(.tick(at: Self.now()), on: connection)
                }
            case .ended:
                throw .connectionLost("the server ended the replication stream")
            }
        }
        // Finished (stop, --endpos, a failed sink): the final status update went out
        // above; end the stream cleanly so the server applies it before the socket closes.
        connection.endCopyBoth()
    }

    /// Feeds one event and performs what it asks, in order; answers to flushes and
    /// catalog look-ups are fed back at once.
    mutating func feed(_ event: ReplicationSession.Event, on connection: PostgresConnection?) throws(PostgresError) {
        actions.removeAll(keepingCapacity: true)
        session.handle(event, into: &actions)
        try perform(on: connection)
    }

    /// Feeds one CopyData message. The message is released before its records go to the
    /// sink, so a huge row is not held twice (as the server's bytes and as JSON) while
    /// the sink writes it.
    mutating func feed(receiving read: consuming CopyDataRead, on connection: PostgresConnection?) throws(PostgresError) {
        actions.removeAll(keepingCapacity: true)
        decide(consume read)
        try perform(on: connection)
    }

    private mutating func decide(_ read: consuming CopyDataRead) {
        guard case .data(let bytes) = consume read else { return }
        session.handle(.received(bytes, at: Self.now()), into: &actions)
    }

    private mutating func perform(on connection: PostgresConnection?) throws(PostgresError) {
        var next = 0
        while next < actions.count {
            let action = actions[next]
            next += 1
            switch action {
            case .deliver(let record):
                sink.deliver(record)
                state.count(1)
            case .flushSink:
                sink.passed(session.acknowledgement.reached)
                let progress = sink.flush()
                session.handle(.sinkProgress(progress, kept: sink.keptPosition, at: Self.now()), into: &actions)
            case .lookUpTypes(let oids):
                var learned: [UInt32: ValueShape] = [:]
                types.invalidate()
                for oid in oids { learned[oid] = try types.shape(of: oid) }
                session.handle(.typesLearned(learned), into: &actions)
            case .sendStatus(let written, let flushed):
                guard let connection else { continue }
                let clock = Int64(Date().timeIntervalSince1970 * 1_000_000) - postgresEpochOffsetMicroseconds
                let update = StandbyStatusUpdate(written: max(written, flushed), flushed: flushed, applied: flushed, clock: clock)
                try connection.writeCopyData(update.bytes)
                state.recordPositions(confirmed: flushed, server: written)
            case .lookUpGenerated(let oid):
                session.handle(.generatedLearned(oid, columns: try types.generatedColumns(of: oid)), into: &actions)
            case .tableSeen(let table, let columns, let wholeOldRows, let relation, let typeOIDs):
                // A Relation message comes first and after every change to the table's
                // definition: what the catalog says of it now, for row rules (a domain's
                // base type, a collation, a partition attached), before any later record.
                let catalog = try types.columns(ofRelation: relation)
                state.learnAncestors(of: table, try types.partitionAncestors(ofRelation: relation))
                state.capture(table, columns: ReplicationCapture.kinds(columns, types: typeOIDs, catalog: catalog))
                state.setReplicaIdentity(of: table, full: wholeOldRows)
            case .warn(let line):
                logger.error("\(line)")
            case .reconnect(let violation):
                throw .protocolViolation(violation.description)
            case .finish(let finish):
                if case .sinkFailed(let reason) = finish { logger.debug("stopping: \(reason)") }
            }
        }
        // Do not keep the last records (and their rows) alive until the next event.
        actions.removeAll(keepingCapacity: actions.capacity <= 64)
    }

    private static func now() -> Double { ProcessInfo.processInfo.systemUptime }
}

/// The slot cannot be used (and `--on-slot-lost wait`): the reconnection waits.
struct SlotLost: Error, CustomStringConvertible {
    let slot: String
    let reason: String
    var description: String { "replication slot \(slot) is lost: \(reason)" }
}

extension ReplicationCapture {
    /// How a table's columns compare when a Relation message names it: as the catalog
    /// says now (it knows domains, collations and generated columns, which the message
    /// does not carry: rules hold as the catalog is when a record is sent), but `other`
    /// for a column of the message whose type the catalog does not have (the stream is
    /// before or after a change of type: no rule may rely on it until they agree again,
    /// at the next periodic read) or that the catalog lacks (dropped or renamed since).
    /// A table the catalog no longer has: as the message says, every column `other`.
    package static func kinds(
        _ told: [String: ColumnKind], types: [String: UInt32], catalog: [String: (type: UInt32, kind: ColumnKind)]
    ) -> [String: ColumnKind] {
        var kinds = catalog.mapValues(\.kind)
        for name in told.keys {
            if let known = catalog[name], known.type == types[name] { continue }
            kinds[name] = .other
        }
        return kinds
    }
}
