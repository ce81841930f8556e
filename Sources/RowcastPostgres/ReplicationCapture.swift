import Foundation
import Logging
import RowcastCore
import Synchronization

/// Replication mode's capture source: consumes a logical slot with `pgoutput` over
/// the streaming replication protocol and turns its messages into records.
///
/// It confirms a position (the flush LSN of a standby status update) only after
/// every record up to it has been handed to the sink and the sink has flushed, so a
/// crash loses nothing: the slot resends from the last confirmed position. When no
/// transaction is in flight it confirms the WAL end that keepalives report, so a
/// quiet publication does not hold back WAL. It replies at once to keepalives that
/// ask, and reconnects with backoff, skipping what it already delivered.
public final class ReplicationCapture: CaptureSource {
    public struct Configuration: Sendable {
        public var connection: ConnectionSettings
        public var slot: String
        public var publication: String
        /// Tables to forward; empty forwards everything the publication sends.
        public var tables: Set<TableName>
        /// Deliver only records after this cursor.
        public var since: Cursor?
        /// How often to confirm progress when the server does not ask.
        public var statusInterval: Double
        /// Stop once everything up to this WAL position was delivered (and confirmed),
        /// as `pg_recvlogical --endpos` does.
        public var endPosition: UInt64?

        public init(
            connection: ConnectionSettings,
            slot: String = "rowcast",
            publication: String = "rowcast",
            tables: Set<TableName> = [],
            since: Cursor? = nil,
            statusInterval: Double = 10,
            endPosition: UInt64? = nil
        ) {
            self.connection = connection
            self.slot = slot
            self.publication = publication
            self.tables = tables
            self.since = since
            self.statusInterval = statusInterval
            self.endPosition = endPosition
        }
    }

    public let configuration: Configuration
    public let state = CaptureState()
    public var mode: CaptureMode { .replication }
    private let logger: Logger
    private let firstConnection: Mutex<PostgresConnection?>

    /// Creates the publication and slot when missing, checks the slot is free, and
    /// starts streaming. Errors here are the user's to fix, so they are thrown.
    public static func connect(configuration: Configuration, logger: Logger) throws(CaptureError) -> ReplicationCapture {
        let admin: PostgresConnection
        do {
            admin = try PostgresConnection(configuration.connection)
        } catch {
            throw .cannotConnect(error)
        }
        do {
            let done = try ReplicationSetup.install(
                on: admin,
                publication: configuration.publication,
                slot: configuration.slot,
                tables: configuration.tables.sorted { $0.description < $1.description }
            )
            for line in done { logger.info("\(line)") }
            if let slot = try SlotAdmin.status(on: admin, slot: configuration.slot).first {
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
        admin.close()
        let capture = ReplicationCapture(configuration: configuration, logger: logger)
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

    private init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.firstConnection = Mutex(nil)
    }

    public func run(sink: any RecordSink, stop: StopSignal) {
        var connection: PostgresConnection? = firstConnection.withLock { connection in
            defer { connection = nil }
            return connection
        }
        var session = StreamSession(configuration: configuration, logger: logger)
        var backoff = Backoff()
        while !stop.isStopped {
            guard let current = connection else {
                guard stop.sleep(seconds: backoff.take()) else { break }
                do {
                    connection = try startStream()
                    backoff.reset()
                    state.markConnected()
                    logger.info("resumed streaming from slot \(configuration.slot)")
                } catch {
                    state.markDisconnected("\(error)")
                    logger.warning("cannot resume streaming yet: \(error)")
                }
                continue
            }
            do {
                try session.stream(on: current, sink: sink, stop: stop, state: state)
                if !stop.isStopped { throw PostgresError.connectionLost("the server ended the replication stream") }
            } catch {
                logger.error("\(error); reconnecting")
                state.markDisconnected("\(error)")
                current.close()
                connection = nil
            }
        }
        if let connection {
            // Confirm what was delivered before leaving, so a restart resumes right after it.
            try? session.sendStatus(on: connection, sink: sink, state: state, replyRequested: false)
            connection.close()
        }
        state.markDisconnected("stopped")
    }

    /// Opens the replication connection, pins the output settings, and starts streaming.
    private func startStream() throws(PostgresError) -> PostgresConnection {
        let connection = try PostgresConnection(configuration.connection, replication: true)
        // The settings that shape text output: database or role defaults must not change records.
        // (A replication connection speaks the simple query protocol only.)
        for setting in ["TimeZone = 'UTC'", "DateStyle = 'ISO, MDY'", "IntervalStyle = 'postgres'", "bytea_output = 'hex'", "extra_float_digits = 1"] {
            try connection.executeScript("SET " + setting)
        }
        let publication = configuration.publication.replacingOccurrences(of: "'", with: "''").replacingOccurrences(of: "\"", with: "\"\"")
        try connection.startCopyBoth(
            "START_REPLICATION SLOT \(TableName.quoteIdentifier(configuration.slot)) LOGICAL 0/0 (proto_version '1', publication_names '\"\(publication)\"', messages 'true')"
        )
        return connection
    }
}

/// The state of one replication stream: relations seen, the transaction in flight,
/// and the positions received, delivered and confirmed. Survives reconnects, so
/// records the slot resends are skipped by cursor.
struct StreamSession {
    let configuration: ReplicationCapture.Configuration
    let logger: Logger
    private var relations: [UInt32: Relation] = [:]
    private let types: TypeCatalog
    /// The transaction being received: its commit LSN, xid, time, and next index.
    private var transaction: (commitLSN: UInt64, xid: UInt32, time: String, index: UInt32)?
    /// The highest WAL position received.
    private var received: UInt64 = 0
    /// Everything up to here has been handed to the sink.
    private var delivered: UInt64 = 0
    private var lastStatus = Date.distantPast
    /// The last cursor delivered: anything not after it is a resend.
    private var lastCursor: Cursor?

    init(configuration: ReplicationCapture.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.types = TypeCatalog(settings: configuration.connection)
        self.lastCursor = configuration.since
    }

    /// Streams until the connection fails, the server ends the stream, or `stop` fires.
    mutating func stream(on connection: PostgresConnection, sink: any RecordSink, stop: StopSignal, state: CaptureState) throws(PostgresError) {
        relations.removeAll()
        transaction = nil
        while !stop.isStopped {
            switch try connection.readCopyData() {
            case .data(let bytes):
                try handle(bytes, on: connection, sink: sink, state: state)
                if reachedEnd {
                    stop.stop()  // run() confirms what was delivered and closes
                    return
                }
                // A long drain never waits on the socket: confirm progress on the timer here too.
                if Date().timeIntervalSince(lastStatus) >= configuration.statusInterval {
                    try sendStatus(on: connection, sink: sink, state: state, replyRequested: false)
                }
            case .wouldBlock:
                sink.endOfBatch()
                if Date().timeIntervalSince(lastStatus) >= configuration.statusInterval {
                    try sendStatus(on: connection, sink: sink, state: state, replyRequested: false)
                }
                let wait = max(0.05, configuration.statusInterval - Date().timeIntervalSince(lastStatus))
                if connection.waitReadable(milliseconds: Int32(min(wait, 0.25) * 1000)) {
                    try connection.consumeInput()
                }
            case .ended:
                return
            }
        }
    }

    /// Whether `endPosition` is reached, between transactions.
    private var reachedEnd: Bool {
        guard let end = configuration.endPosition else { return false }
        return transaction == nil && delivered >= end
    }

    /// Flushes the sink, then confirms everything delivered.
    mutating func sendStatus(on connection: PostgresConnection, sink: any RecordSink, state: CaptureState? = nil, replyRequested: Bool) throws(PostgresError) {
        sink.endOfBatch()
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000) - postgresEpochOffsetMicroseconds
        let update = StandbyStatusUpdate(written: max(received, delivered), flushed: delivered, applied: delivered, clock: now, replyRequested: replyRequested)
        try connection.writeCopyData(update.bytes)
        lastStatus = Date()
        state?.recordPositions(confirmed: delivered, server: max(received, delivered))
    }

    private mutating func handle(_ bytes: [UInt8], on connection: PostgresConnection, sink: any RecordSink, state: CaptureState) throws(PostgresError) {
        let message: ReplicationMessage
        do {
            message = try ReplicationMessage.decode(bytes[...])
        } catch {
            throw .protocolViolation("\(error)")
        }
        switch message {
        case .keepalive(let keepalive):
            received = max(received, keepalive.walEnd)
            if transaction == nil { delivered = max(delivered, keepalive.walEnd) }
            if keepalive.replyRequested { try sendStatus(on: connection, sink: sink, state: state, replyRequested: false) }
        case .xLogData(let data):
            received = max(received, data.walEnd, data.walStart)
            let decoded: PgOutputMessage
            do {
                decoded = try PgOutputMessage.decode(data.data)
            } catch {
                throw .protocolViolation("\(error)")
            }
            try apply(decoded, sink: sink, state: state)
        }
    }

    private mutating func apply(_ message: PgOutputMessage, sink: any RecordSink, state: CaptureState) throws(PostgresError) {
        switch message {
        case .begin(let begin):
            transaction = (begin.finalLSN, begin.xid, CommitTime.rfc3339(postgresMicroseconds: begin.commitTime), 0)
        case .commit(let commit):
            transaction = nil
            delivered = max(delivered, commit.endLSN)
        case .origin, .type:
            break
        case .relation(let relation):
            relations[relation.oid] = relation
            types.invalidate()
        case .insert(let insert):
            let relation = try relationFor(insert.relationOID)
            var record = try makeRecord(.insert, relation: relation)
            record.row = try rowJSON(insert.new, relation: relation, keysOnly: false).row
            emit(record, sink: sink, state: state)
        case .update(let update):
            let relation = try relationFor(update.relationOID)
            var record = try makeRecord(.update, relation: relation)
            let new = try rowJSON(update.new, relation: relation, keysOnly: false)
            record.row = new.row
            if !new.unchanged.isEmpty { record.unchanged = new.unchanged }
            switch update.old {
            case .key(let tuple): record.old = try rowJSON(tuple, relation: relation, keysOnly: true).row
            case .row(let tuple): record.old = try rowJSON(tuple, relation: relation, keysOnly: false).row
            case nil: break
            }
            emit(record, sink: sink, state: state)
        case .delete(let delete):
            let relation = try relationFor(delete.relationOID)
            var record = try makeRecord(.delete, relation: relation)
            switch delete.old {
            case .key(let tuple): record.old = try rowJSON(tuple, relation: relation, keysOnly: true).row
            case .row(let tuple): record.old = try rowJSON(tuple, relation: relation, keysOnly: false).row
            }
            emit(record, sink: sink, state: state)
        case .truncate(let truncate):
            for oid in truncate.relationOIDs {
                let relation = try relationFor(oid)
                emit(try makeRecord(.truncate, relation: relation), sink: sink, state: state)
            }
        case .message(let logical):
            var record = ChangeRecord(cursor: nextCursor(fallbackLSN: logical.lsn), source: .replication, op: .message)
            stamp(&record, fallbackLSN: logical.lsn)
            record.prefix = logical.prefix
            record.transactional = logical.transactional
            if let text = String(validating: logical.content, as: UTF8.self) {
                record.content = text
            } else {
                record.content = Base64.encode(logical.content)
                record.contentIsBase64 = true
            }
            emit(record, sink: sink, state: state, filtered: false)
            if !logical.transactional, transaction == nil { delivered = max(delivered, logical.lsn) }
        }
    }

    private func relationFor(_ oid: UInt32) throws(PostgresError) -> Relation {
        guard let relation = relations[oid] else {
            throw .protocolViolation("a change for relation \(oid) arrived before its Relation message")
        }
        return relation
    }

    private mutating func makeRecord(_ op: RowcastCore.Operation, relation: Relation) throws(PostgresError) -> ChangeRecord {
        guard let transaction else { throw .protocolViolation("a \(op.rawValue) arrived outside a transaction") }
        var record = ChangeRecord(cursor: nextCursor(fallbackLSN: transaction.commitLSN), source: .replication, op: op)
        stamp(&record, fallbackLSN: transaction.commitLSN)
        record.schema = relation.namespace
        record.table = relation.name
        return record
    }

    /// The cursor of the next record: the commit LSN and its index in the transaction.
    private mutating func nextCursor(fallbackLSN: UInt64) -> Cursor {
        guard let current = transaction else { return .replication(commitLSN: fallbackLSN, index: 0) }
        transaction?.index += 1
        return .replication(commitLSN: current.commitLSN, index: current.index)
    }

    private func stamp(_ record: inout ChangeRecord, fallbackLSN: UInt64) {
        if let transaction {
            record.xid = transaction.xid
            record.lsn = formatLSN(transaction.commitLSN)
            record.commitTime = transaction.time
        } else {
            record.lsn = formatLSN(fallbackLSN)
        }
    }

    private mutating func emit(_ record: ChangeRecord, sink: any RecordSink, state: CaptureState, filtered: Bool = true) {
        if let lastCursor, record.cursor.kind == lastCursor.kind, record.cursor <= lastCursor { return }
        if filtered, !configuration.tables.isEmpty,
            let schema = record.schema, let table = record.table,
            !configuration.tables.contains(TableName(schema: schema, name: table))
        {
            return
        }
        lastCursor = record.cursor
        sink.deliver(record)
        state.count(1)
    }

    /// A tuple as the JSON object `to_jsonb` gives, and the columns the server did
    /// not send (unchanged TOASTed values). `keysOnly` keeps the replica identity's columns.
    private func rowJSON(_ tuple: TupleData, relation: Relation, keysOnly: Bool) throws(PostgresError) -> (row: RawJSON, unchanged: [String]) {
        var unchanged: [String] = []
        guard tuple.values.count == relation.columns.count else {
            throw .protocolViolation("a tuple of \(tuple.values.count) columns for \(relation.namespace).\(relation.name), which has \(relation.columns.count)")
        }
        var writer = JSONWriter(capacity: 64 + tuple.values.reduce(0) { total, value in
            if case .text(let bytes) = value { return total + bytes.count + 16 }
            return total + 16
        })
        writer.append(byte: UInt8(ascii: "{"))
        var first = true
        for (column, value) in zip(relation.columns, tuple.values) {
            if keysOnly && !column.isKey { continue }
            if case .unchangedToast = value {
                unchanged.append(column.name)
                continue
            }
            if !first { writer.append(byte: UInt8(ascii: ",")) }
            first = false
            writer.appendString(column.name)
            writer.append(byte: UInt8(ascii: ":"))
            switch value {
            case .null, .unchangedToast:
                writer.appendASCII("null")
            case .text(let text):
                let shape = try types.shape(of: column.typeOID)
                let mark = writer.bytes.count
                do {
                    try ValueJSON.append(text, shape: shape, to: &writer)
                } catch {
                    writer.truncate(to: mark)
                    logger.error("\(relation.namespace).\(relation.name).\(column.name): \(error); sending its text instead")
                    writer.appendString(utf8: text)
                }
            }
        }
        writer.append(byte: UInt8(ascii: "}"))
        return (RawJSON(trusted: writer.bytes), unchanged)
    }
}
