import Synchronization

/// What a capture source is doing, for `/healthz`, `/status` and `/metrics`.
package final class CaptureState: Sendable {
    private struct Snapshot {
        var connected = false
        var lastError: String?
        var recordsCaptured: UInt64 = 0
        var confirmedLSN: UInt64?
        var serverLSN: UInt64?
        var capturedTables: Set<TableName>?
        var columns: [TableName: [String: ColumnKind]] = [:]
        var wholeOldRows: Set<TableName>?
        var partitionAncestors: [TableName: Set<TableName>] = [:]
        var ancestryKnown: Set<TableName>?
        var slotLost: String?
    }

    private let snapshot = Mutex(Snapshot())
    private let catalogChanges = Atomic<UInt64>(0)

    package init() {}

    /// How many times what row rules depend on changed: a table's columns or their
    /// types, its replica identity, what it is a partition of. Read without a lock for
    /// every record (``Broadcaster`` checks its subscriptions again when it moved); a
    /// capture changes it before it delivers any record that follows the change.
    package var catalogVersion: UInt64 { catalogChanges.load(ordering: .acquiring) }

    /// Runs `change` on the state, and counts a catalog change when it changed any of
    /// what ``catalogVersion`` follows.
    private func changingCatalog<Result>(_ change: (inout Snapshot) -> Result) -> Result {
        snapshot.withLock { state in
            let before = (state.columns, state.wholeOldRows, state.partitionAncestors, state.ancestryKnown)
            let result = change(&state)
            if before != (state.columns, state.wholeOldRows, state.partitionAncestors, state.ancestryKnown) {
                catalogChanges.add(1, ordering: .releasing)
            }
            return result
        }
    }

    /// Whether the source is connected and capturing.
    package var isConnected: Bool { snapshot.withLock { $0.connected } }
    /// The last connection error, if the source is not connected.
    package var lastError: String? { snapshot.withLock { $0.lastError } }
    /// Records handed to the sink since start: the one count `/status` and `/metrics` report.
    package var recordsCaptured: UInt64 { snapshot.withLock { $0.recordsCaptured } }

    /// Replication: the last position confirmed to the server.
    package var confirmedLSN: UInt64? { snapshot.withLock { $0.confirmedLSN } }
    /// Replication: bytes of WAL the server has that rowcast has not confirmed yet.
    package var lagBytes: UInt64? {
        snapshot.withLock { state in
            guard let confirmed = state.confirmedLSN, let server = state.serverLSN else { return nil }
            return server > confirmed ? server - confirmed : 0
        }
    }

    package func recordPositions(confirmed: UInt64, server: UInt64) {
        snapshot.withLock { $0.confirmedLSN = confirmed; $0.serverLSN = max(server, confirmed) }
    }

    /// Every table whose changes this source captures, as the
    /// database said when it connected; nil when it captures every table.
    package var capturedTables: Set<TableName>? { snapshot.withLock { $0.capturedTables } }

    package func setCapturedTables(_ tables: Set<TableName>?) { snapshot.withLock { $0.capturedTables = tables } }

    /// The captured tables' columns and how they compare, as the catalog said when the
    /// source connected; filters on them are checked against it.
    package var columns: [TableName: [String: ColumnKind]] { snapshot.withLock { $0.columns } }

    package func setColumns(_ columns: [TableName: [String: ColumnKind]]) { changingCatalog { $0.columns = columns } }

    /// The tables whose updates and deletes carry the whole old row, which row rules
    /// need: nil when every table's do (trigger mode); in replication mode, the tables
    /// known to have REPLICA IDENTITY FULL.
    package var wholeOldRows: Set<TableName>? { snapshot.withLock { $0.wholeOldRows } }

    package func setWholeOldRows(_ tables: Set<TableName>?) { changingCatalog { $0.wholeOldRows = tables } }

    /// Whether `table`'s updates and deletes carry the whole old row.
    package func hasWholeOldRows(_ table: TableName) -> Bool {
        snapshot.withLock { $0.wholeOldRows?.contains(table) ?? true }
    }

    /// The partitioned tables each captured partition belongs to (at any depth): a row
    /// rule on a partitioned table applies to its partitions, whose names records carry.
    package var partitionAncestors: [TableName: Set<TableName>] { snapshot.withLock { $0.partitionAncestors } }

    /// The tables whose partitioned tables are known (`partitionAncestors`): those the
    /// capture looked up, at start and as it learned them; nil when nobody said.
    package var ancestryKnown: Set<TableName>? { snapshot.withLock { $0.ancestryKnown } }

    /// What `tables` are partitions of, as looked up for all of them.
    package func setPartitionAncestors(_ ancestors: [TableName: Set<TableName>], of tables: Set<TableName>) {
        changingCatalog { state in
            state.partitionAncestors = ancestors
            state.ancestryKnown = tables
        }
    }

    /// What a table learned while capturing is a partition of.
    package func learnAncestors(of table: TableName, _ ancestors: Set<TableName>) {
        changingCatalog { state in
            state.partitionAncestors[table] = ancestors.isEmpty ? nil : ancestors
            state.ancestryKnown?.insert(table)
        }
    }

    /// Replication: a table's replica identity as a Relation message says it.
    package func setReplicaIdentity(of table: TableName, full: Bool) {
        changingCatalog { state in
            if full { state.wholeOldRows?.insert(table) } else { state.wholeOldRows?.remove(table) }
        }
    }

    /// A table the source delivers that it did not know at start (set up, or added to
    /// the publication, while it ran), or its columns as they are now (a type changed).
    /// Returns false when nothing changed. `columns` is what the catalog says (the
    /// replication capture reads it for each Relation message, which cannot tell a
    /// domain from its base type or see a collation).
    @discardableResult
    package func capture(_ table: TableName, columns: [String: ColumnKind]?) -> Bool {
        changingCatalog { state in
            let newTable = state.capturedTables.map { !$0.contains(table) } ?? false
            let newColumns = columns.map { state.columns[table] != $0 } ?? false
            if newTable { state.capturedTables?.insert(table) }
            if newColumns { state.columns[table] = columns }
            return newTable || newColumns
        }
    }

    /// Whether the source is known to deliver `table`.
    package func captures(_ table: TableName) -> Bool {
        snapshot.withLock { $0.capturedTables?.contains(table) ?? true }
    }

    /// Replication: why the slot can no longer be used (invalidated, dropped), while it
    /// cannot; nil once a usable slot streams again.
    package var slotLost: String? { snapshot.withLock { $0.slotLost } }
    package func setSlotLost(_ reason: String?) { snapshot.withLock { $0.slotLost = reason } }

    package func markConnected() { snapshot.withLock { $0.connected = true; $0.lastError = nil } }
    package func markDisconnected(_ error: String) { snapshot.withLock { $0.connected = false; $0.lastError = error } }
    package func count(_ records: Int) { snapshot.withLock { $0.recordsCaptured += UInt64(records) } }
}
