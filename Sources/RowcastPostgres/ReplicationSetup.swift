import RowcastCore

/// Creates and removes replication mode's publication and slot.
package enum ReplicationSetup {
    /// Whether a publication FOR ALL TABLES may be created when no table is named.
    ///
    /// Such a publication makes every UPDATE and DELETE fail on tables without a
    /// primary key or replica identity, for every application, until it is dropped:
    /// rowcast never creates one without being asked.
    package enum AllTables: Sendable {
        /// Never: no table and no publication is an error naming `--table` and `--all-tables`.
        case no
        /// When asked, and only when no table's writes would then fail.
        case checked
        /// When asked, even though some tables' writes will fail.
        case evenIfWritesFail
    }

    /// Creates the publication (for `tables`; for every table only as `allTables`
    /// allows) or adds missing tables to it, and creates the slot when missing.
    /// Idempotent. Returns what it did, one line per change.
    @discardableResult
    package static func install(
        on connection: PostgresConnection,
        publication: String,
        slot: String,
        tables: [TableName],
        allTables: AllTables = .no
    ) throws(SetupError) -> [String] {
        var done: [String] = []
        do {
            for table in tables where try connection.execute("SELECT to_regclass($1) IS NULL", [table.quoted]).scalar == "t" {
                throw SetupError.unknownTable(table)
            }
            let quotedPublication = TableName.quoteIdentifier(publication)
            let exists = try connection.execute("SELECT puballtables FROM pg_publication WHERE pubname = $1", [publication]).rows.first
            if let exists {
                if exists[0] != "t", !tables.isEmpty {
                    let published = Set(try connection.execute(
                        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", [publication]
                    ).rows.compactMap { row -> TableName? in
                        guard let schema = row[0], let name = row[1] else { return nil }
                        return TableName(schema: schema, name: name)
                    })
                    let missing = tables.filter { !published.contains($0) }
                    if !missing.isEmpty {
                        try connection.execute("ALTER PUBLICATION \(quotedPublication) ADD TABLE " + missing.map(\.quoted).joined(separator: ", "))
                        done.append("added " + missing.map(\.description).joined(separator: ", ") + " to publication \(publication)")
                    }
                }
            } else if tables.isEmpty {
                switch allTables {
                case .no:
                    throw SetupError.noTables(publication: publication)
                case .checked:
                    let broken = try tablesWithoutReplicaIdentity(on: connection)
                    if !broken.isEmpty { throw SetupError.allTablesWouldBreakWrites(broken) }
                case .evenIfWritesFail:
                    break
                }
                try connection.execute("CREATE PUBLICATION \(quotedPublication) FOR ALL TABLES")
                done.append("created publication \(publication) for all tables")
            } else {
                try connection.execute("CREATE PUBLICATION \(quotedPublication) FOR TABLE " + tables.map(\.quoted).joined(separator: ", "))
                done.append("created publication \(publication) for " + tables.map(\.description).joined(separator: ", "))
            }
            if try SlotAdmin.status(on: connection, slot: slot).isEmpty {
                try SlotAdmin.create(on: connection, slot: slot)
                done.append("created replication slot \(slot)")
            }
        } catch {
            throw SetupError(wrapping: error)
        }
        return done
    }

    /// Tables whose UPDATE and DELETE fail once a publication that publishes them
    /// exists: no primary key and default replica identity, identity NOTHING, or an
    /// identity index that is gone. `schema.table`, sorted.
    package static func tablesWithoutReplicaIdentity(on connection: PostgresConnection, publication: String? = nil) throws(PostgresError) -> [String] {
        let scope = publication == nil
            ? "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
            : "EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = $1 AND p.schemaname = n.nspname AND p.tablename = c.relname)"
        let sql = """
            SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND \(scope)
              AND (c.relreplident = 'n'
                OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
            ORDER BY 1
            """
        return try connection.execute(sql, publication.map { [$0] } ?? []).rows.compactMap { $0[0] }
    }

    /// Drops the publication, and the slot too when `dropSlot`.
    @discardableResult
    package static func teardown(on connection: PostgresConnection, publication: String, slot: String, dropSlot: Bool) throws(SetupError) -> [String] {
        var done: [String] = []
        do {
            if try connection.execute("SELECT count(*) FROM pg_publication WHERE pubname = $1", [publication]).scalar != "0" {
                try connection.execute("DROP PUBLICATION \(TableName.quoteIdentifier(publication))")
                done.append("dropped publication \(publication)")
            }
            if dropSlot, try !SlotAdmin.status(on: connection, slot: slot).isEmpty {
                try SlotAdmin.drop(on: connection, slot: slot, force: false)
                done.append("dropped replication slot \(slot)")
            }
        } catch {
            throw SetupError(wrapping: error)
        }
        return done
    }
}
