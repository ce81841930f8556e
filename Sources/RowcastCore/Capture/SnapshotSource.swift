/// Where `serve` reads a snapshot of captured tables: the rows as they are, in one
/// REPEATABLE READ READ ONLY transaction, and which transactions that transaction sees,
/// so the stream can go on after exactly those (SPEC section 4, "Snapshot, then live").
package protocol SnapshotSource: Sendable {
    /// Opens the snapshot's transaction, having locked `tables` (ACCESS SHARE) before
    /// it takes its snapshot: a table rewritten afterwards (ALTER … TYPE, TRUNCATE)
    /// would look empty to it. Blocking: call it off the cooperative pool.
    func open(tables: [TableName]) throws(SnapshotError) -> any TableSnapshot
}

/// One open snapshot: a transaction that reads the tables as of ``visibility``.
package protocol TableSnapshot: AnyObject {
    /// The transactions the snapshot sees (`pg_current_snapshot()` in it).
    var visibility: TransactionSnapshot { get }
    /// Replication mode: the server's WAL position read after the snapshot was taken;
    /// every transaction it sees committed before it. Nil where there is no WAL to
    /// follow (trigger mode on a standby).
    var walPosition: UInt64? { get }
    /// Reads the rows of `table` that every one of `conditions` may match (the
    /// credential's row rule and the client's filter, bound as parameters where the
    /// column's type allows it; the caller matches every row itself), each as
    /// `to_jsonb(row)` gives it, in pages of at most `pageRows` rows (fewer when rows
    /// are large). `page` returns false to stop.
    func read(_ table: TableName, conditions: [RowFilter], pageRows: Int, page: ([RawJSON]) -> Bool) throws(SnapshotError)
    /// The columns of `tables` and how they compare, from the catalog as the snapshot
    /// reads the tables (locked: no DDL changes them meanwhile). Row rules are checked
    /// against it, not against what the capture last heard.
    func columns(of tables: [TableName]) throws(SnapshotError) -> [TableName: [String: ColumnKind]]
    /// Whether another session waits for a lock the snapshot's transaction holds (the
    /// application's `ALTER TABLE` on a table it read): the snapshot then gives way.
    func blocksAnother() -> Bool
    /// Ends the transaction and the connection (idempotent).
    func close()
}

/// Why a snapshot could not be read: one line for the client and the log.
package struct SnapshotError: Error, Sendable, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}
