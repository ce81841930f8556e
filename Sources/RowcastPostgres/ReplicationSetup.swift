import RowcastCore

/// Creates and removes replication mode's publication and slot.
public enum ReplicationSetup {
    /// Creates the publication (for `tables`, or every table when none are named)
    /// or adds missing tables to it, and creates the slot when missing. Idempotent.
    /// Returns what it did, one line per change.
    @discardableResult
    public static func install(
        on connection: PostgresConnection,
        publication: String,
        slot: String,
        tables: [TableName]
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

    /// Drops the publication, and the slot too when `dropSlot`.
    @discardableResult
    public static func teardown(on connection: PostgresConnection, publication: String, slot: String, dropSlot: Bool) throws(SetupError) -> [String] {
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
