/// The rules of one replication stream, as a value: events in, actions out.
///
/// It decodes what the server sends, turns changes into records, decides when to
/// send a standby status update and with which positions, when `--endpos` is
/// reached, and which resent records to skip after a reconnect. It performs no I/O:
/// the loop around it (``ReplicationCapture`` in RowcastPostgres) reads the socket,
/// feeds events, and carries out the actions in order. So every rule here is tested
/// without a database, as postgres-nio tests its `ConnectionStateMachine`.
///
/// What may be confirmed is owned by ``Acknowledgement``: a position is confirmed only
/// after the sink reported delivered every record handed before it.
package struct ReplicationSession: Sendable {
    package struct Configuration: Sendable {
        /// Tables to forward; empty forwards everything the publication sends.
        package var tables: Set<TableName>
        /// Deliver only records after this cursor.
        package var since: Cursor?
        /// Seconds between status updates when the server does not ask for one.
        package var statusInterval: Double
        /// Stop once everything committed before this WAL position is delivered and
        /// confirmed, as `pg_recvlogical --endpos` does.
        package var endPosition: UInt64?

        package init(tables: Set<TableName> = [], since: Cursor? = nil, statusInterval: Double = 10, endPosition: UInt64? = nil) {
            self.tables = tables
            self.since = since
            self.statusInterval = statusInterval
            self.endPosition = endPosition
        }
    }

    /// Something that happened; `at` is a monotonic clock in seconds.
    package enum Event: Sendable {
        /// One CopyData payload from the server.
        case received([UInt8], at: Double)
        /// The socket has nothing more to read for now.
        case caughtUp(at: Double)
        /// Time passed (the loop calls this while it waits).
        case tick(at: Double)
        /// The answer to ``Action/flushSink``; `kept` is the sink's ``RecordSink/keptPosition``.
        case sinkProgress(SinkProgress, kept: UInt64? = nil, at: Double)
        /// The answer to ``Action/lookUpTypes(_:)``.
        case typesLearned([UInt32: ValueShape])
        /// The answer to ``Action/lookUpGenerated(_:)``: the relation's stored generated columns.
        case generatedLearned(UInt32, columns: [String])
        /// The user asked to stop (SIGINT, SIGTERM, shutdown).
        case stop
        /// The connection was lost; the loop will reconnect and the slot resends.
        case disconnected
    }

    /// What the loop must do, in order.
    package enum Action: Sendable, Equatable {
        /// Hand this record to the sink.
        case deliver(ChangeRecord)
        /// Look up these types' shapes in the catalog, then feed ``Event/typesLearned(_:)``.
        case lookUpTypes([UInt32])
        /// Look up the relation's stored generated columns in the catalog, then feed
        /// ``Event/generatedLearned(_:columns:)``.
        case lookUpGenerated(UInt32)
        /// Call the sink's `flush()`, then feed ``Event/sinkProgress(_:at:)``.
        case flushSink
        /// Send a standby status update with these positions.
        case sendStatus(written: UInt64, flushed: UInt64)
        /// The server described a table the session forwards (it may be new to the
        /// publication): its columns and how they compare, for subscriptions and filters.
        /// `wholeOldRows`: its replica identity is FULL (updates and deletes carry the old row).
        /// `relation` and `types`: its OID and each column's type OID, with which the
        /// catalog tells what the message cannot (a domain's base type, a collation).
        case tableSeen(TableName, columns: [String: ColumnKind], wholeOldRows: Bool, relation: UInt32, types: [String: UInt32])
        /// Log a value that was sent as text because it could not be converted.
        case warn(String)
        /// The stream broke the protocol: log it, drop the connection and reconnect.
        case reconnect(Violation)
        /// Stop streaming (after the status update before it was sent).
        case finish(Finish)
    }

    /// Why the session ends.
    package enum Finish: Sendable, Equatable {
        /// A stop was asked for.
        case stopped
        /// Everything before `--endpos` was delivered and confirmed.
        case reachedEnd
        /// The sink failed; `reason` is its one line for the user.
        case sinkFailed(String)
    }

    /// A message the session cannot accept.
    package struct Violation: Error, Sendable, Equatable, CustomStringConvertible {
        package let description: String
        init(_ description: String) { self.description = description }
    }

    private struct Transaction {
        let commitLSN: UInt64
        let xid: UInt32
        let time: String
        var index: UInt32 = 0
    }

    package let configuration: Configuration
    /// What may be confirmed; read by the loop for `/status` and `/metrics`.
    package private(set) var acknowledgement = Acknowledgement()
    private var relations: [UInt32: Relation] = [:]
    /// Each relation's stored generated columns the server does not send.
    private var generated: [UInt32: [String]] = [:]
    private var shapes: [UInt32: ValueShape] = [:]
    /// Each relation's encoding plan, made on first use after its Relation message or
    /// after shapes were learned.
    private var plans: [UInt32: TupleJSON.Plan] = [:]
    private var transaction: Transaction?
    /// The last record handed to the sink, or `since`: anything not after it is a resend.
    private var lastCursor: Cursor?
    /// The last record handed to the sink in this run.
    private var lastHanded: Cursor?
    private var lastStatus: Double = -.infinity
    /// A flush was asked for and its answer is awaited.
    private var flushing = false
    /// A status update is due after the flush answers.
    private var statusDue = false
    /// The session ends after the flush answers.
    private var ending: Finish?
    /// Set once `finish` was returned: later events are ignored.
    package private(set) var finished: Finish?

    package init(configuration: Configuration) {
        self.configuration = configuration
        self.lastCursor = configuration.since
    }

    /// Feeds one event; appends what to do to `actions` (the caller reuses the array).
    package mutating func handle(_ event: Event, into actions: inout [Action]) {
        guard finished == nil else { return }
        switch event {
        case .received(let bytes, let now):
            receive(bytes, into: &actions)
            if ending == nil, now - lastStatus >= configuration.statusInterval { requestStatus(into: &actions) }
        case .caughtUp(let now), .tick(let now):
            if case .caughtUp = event, !flushing {
                flushing = true
                actions.append(.flushSink)
            }
            if now - lastStatus >= configuration.statusInterval { requestStatus(into: &actions) }
        case .sinkProgress(let progress, let kept, let now):
            flushing = false
            acknowledgement.sinkKept(kept)
            switch progress {
            case .delivered(let through):
                acknowledgement.sinkDelivered(through: through)
            case .failed(let through, let reason):
                acknowledgement.sinkDelivered(through: through)
                ending = .sinkFailed(reason)
            }
            if statusDue || ending != nil {
                statusDue = false
                lastStatus = now
                actions.append(.sendStatus(written: acknowledgement.received, flushed: acknowledgement.confirmed))
            }
            if let ending {
                finished = ending
                actions.append(.finish(ending))
            }
        case .typesLearned(let learned):
            shapes.merge(learned) { _, new in new }
            plans.removeAll()
        case .generatedLearned(let oid, let columns):
            // Those the server did send (a PostgreSQL 18 publication may) are in the row.
            let sent = Set(relations[oid]?.columns.map(\.name) ?? [])
            let missing = columns.filter { !sent.contains($0) }
            generated[oid] = missing.isEmpty ? nil : missing
        case .stop:
            finishAfterFlush(.stopped, into: &actions)
        case .disconnected:
            // The slot resends from the confirmed position: relations come again, and
            // records already handed are skipped by cursor.
            relations.removeAll()
            plans.removeAll()
            transaction = nil
            flushing = false
        }
    }

    /// A status update on the timer, after the sink flushed.
    private mutating func requestStatus(into actions: inout [Action]) {
        statusDue = true
        if !flushing {
            flushing = true
            actions.append(.flushSink)
        }
    }

    private mutating func finishAfterFlush(_ finish: Finish, into actions: inout [Action]) {
        guard ending == nil else { return }
        ending = finish
        if !flushing {
            flushing = true
            actions.append(.flushSink)
        }
    }

    private mutating func receive(_ bytes: [UInt8], into actions: inout [Action]) {
        guard ending == nil else { return }  // past --endpos or stopping: read nothing more
        let message: ReplicationMessage
        do {
            message = try ReplicationMessage.decode(bytes[...])
        } catch {
            actions.append(.reconnect(Violation("\(error)")))
            return
        }
        switch message {
        case .keepalive(let keepalive):
            acknowledgement.receive(keepalive.walEnd)
            if transaction == nil {
                if let end = configuration.endPosition, keepalive.walEnd >= end {
                    // Nothing committed before `end` is still to come.
                    acknowledgement.reach(end, after: lastHanded)
                    finishAfterFlush(.reachedEnd, into: &actions)
                    return
                }
                // Nothing in flight: a quiet publication must not hold back WAL.
                acknowledgement.reach(keepalive.walEnd, after: lastHanded)
            }
            if keepalive.replyRequested { requestStatus(into: &actions) }
        case .xLogData(let data):
            acknowledgement.receive(max(data.walStart, data.walEnd))
            do {
                try apply(try PgOutputMessage.decode(data.data), into: &actions)
            } catch let violation as Violation {
                actions.append(.reconnect(violation))
            } catch {
                actions.append(.reconnect(Violation("\(error)")))
            }
        }
    }

    private mutating func apply(_ message: PgOutputMessage, into actions: inout [Action]) throws {
        switch message {
        case .begin(let begin):
            if let end = configuration.endPosition, begin.finalLSN >= end {
                // Committed at or after --endpos: not ours to print.
                acknowledgement.reach(end, after: lastHanded)
                finishAfterFlush(.reachedEnd, into: &actions)
                return
            }
            transaction = Transaction(commitLSN: begin.finalLSN, xid: begin.xid, time: CommitTime.rfc3339(postgresMicroseconds: begin.commitTime))
        case .commit(let commit):
            transaction = nil
            acknowledgement.reach(commit.endLSN, after: lastHanded)
            if let end = configuration.endPosition, commit.endLSN >= end { finishAfterFlush(.reachedEnd, into: &actions) }
        case .origin, .type:
            break
        case .relation(let relation):
            relations[relation.oid] = relation
            plans[relation.oid] = nil
            // A Relation message may mean a type changed: learn its columns' types again.
            var unknown: [UInt32] = []
            for column in relation.columns where ValueShape.builtin(column.typeOID) == nil && !unknown.contains(column.typeOID) {
                unknown.append(column.typeOID)
                shapes[column.typeOID] = nil
            }
            if !unknown.isEmpty { actions.append(.lookUpTypes(unknown)) }
            let table = TableName(schema: relation.namespace, name: relation.name)
            if configuration.tables.isEmpty || configuration.tables.contains(table) {
                var columns: [String: ColumnKind] = [:]
                var types: [String: UInt32] = [:]
                for column in relation.columns {
                    columns[column.name] = ColumnKind(typeOID: column.typeOID)
                    types[column.name] = column.typeOID
                }
                actions.append(.tableSeen(
                    table, columns: columns, wholeOldRows: relation.replicaIdentity == UInt8(ascii: "f"), relation: relation.oid, types: types
                ))
                actions.append(.lookUpGenerated(relation.oid))
            }
        case .insert(let insert):
            let relation = try relationFor(insert.relationOID)
            var record = try makeRecord(.insert, relation: relation)
            record.row = try encode(insert.new, relation: relation, keysOnly: false, into: &actions).row
            hand(record, into: &actions)
        case .update(let update):
            let relation = try relationFor(update.relationOID)
            var record = try makeRecord(.update, relation: relation)
            let new = try encode(update.new, relation: relation, keysOnly: false, into: &actions)
            record.row = new.row
            if !new.unchanged.isEmpty { record.unchanged = new.unchanged }
            switch update.old {
            case .key(let tuple): record.old = try encode(tuple, relation: relation, keysOnly: true, into: &actions).row
            case .row(let tuple): record.old = try encode(tuple, relation: relation, keysOnly: false, into: &actions).row
            case nil: break
            }
            hand(record, into: &actions)
        case .delete(let delete):
            let relation = try relationFor(delete.relationOID)
            var record = try makeRecord(.delete, relation: relation)
            switch delete.old {
            case .key(let tuple): record.old = try encode(tuple, relation: relation, keysOnly: true, into: &actions).row
            case .row(let tuple): record.old = try encode(tuple, relation: relation, keysOnly: false, into: &actions).row
            }
            hand(record, into: &actions)
        case .truncate(let truncate):
            for oid in truncate.relationOIDs {
                hand(try makeRecord(.truncate, relation: try relationFor(oid)), into: &actions)
            }
        case .message(let logical):
            if transaction == nil, let end = configuration.endPosition, logical.lsn >= end {
                acknowledgement.reach(end, after: lastHanded)
                finishAfterFlush(.reachedEnd, into: &actions)
                return
            }
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
            hand(record, into: &actions, filtered: false)
            if !logical.transactional, transaction == nil {
                acknowledgement.reach(logical.lsn, after: lastHanded)
            }
        }
    }

    private func relationFor(_ oid: UInt32) throws(Violation) -> Relation {
        guard let relation = relations[oid] else {
            throw Violation("a change for relation \(oid) arrived before its Relation message")
        }
        return relation
    }

    private mutating func makeRecord(_ op: Operation, relation: Relation) throws(Violation) -> ChangeRecord {
        guard let transaction else { throw Violation("a \(op.rawValue) arrived outside a transaction") }
        var record = ChangeRecord(cursor: nextCursor(fallbackLSN: transaction.commitLSN), source: .replication, op: op)
        stamp(&record, fallbackLSN: transaction.commitLSN)
        record.schema = relation.namespace
        record.table = relation.name
        if op != .truncate { record.generated = generated[relation.oid] }
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
            record.lsn = transaction.commitLSN
            record.commitTime = transaction.time
        } else {
            record.lsn = fallbackLSN
        }
    }

    private mutating func encode(_ tuple: TupleData, relation: Relation, keysOnly: Bool, into actions: inout [Action]) throws(Violation) -> TupleJSON.Encoded {
        let plan: TupleJSON.Plan
        if let made = plans[relation.oid] {
            plan = made
        } else {
            plan = TupleJSON.Plan(relation, shapes: shapes)
            plans[relation.oid] = plan
        }
        let encoded = try TupleJSON.encode(tuple, plan: plan, keysOnly: keysOnly)
        for warning in encoded.warnings { actions.append(.warn(warning)) }
        return encoded
    }

    /// Hands a record to the sink unless it is a resend or of a table not asked for.
    private mutating func hand(_ record: ChangeRecord, into actions: inout [Action], filtered: Bool = true) {
        if let lastCursor, record.cursor <= lastCursor { return }
        if filtered, !configuration.tables.isEmpty,
            let schema = record.schema, let table = record.table,
            !configuration.tables.contains(TableName(schema: schema, name: table))
        {
            return
        }
        lastCursor = record.cursor
        lastHanded = record.cursor
        actions.append(.deliver(record))
    }
}
