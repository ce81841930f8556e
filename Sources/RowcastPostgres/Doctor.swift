import RowcastCore

/// One finding of `rowcast doctor`.
package struct DoctorCheck: Sendable, Equatable {
    package enum Outcome: String, Sendable { case ok, warn, fail }

    package var outcome: Outcome
    /// What was found, in one line.
    package var summary: String
    /// The exact fix: SQL to run or a configuration line; nil when nothing needs fixing.
    package var fix: String?

    static func ok(_ summary: String) -> DoctorCheck { DoctorCheck(outcome: .ok, summary: summary, fix: nil) }
    static func warn(_ summary: String, fix: String) -> DoctorCheck { DoctorCheck(outcome: .warn, summary: summary, fix: fix) }
    static func fail(_ summary: String, fix: String) -> DoctorCheck { DoctorCheck(outcome: .fail, summary: summary, fix: fix) }
}

/// Checks what each capture mode needs from the server, and says how to fix what is missing.
package enum Doctor {
    /// How long a stopped `serve` (a deploy, a crash) should be able to stay away
    /// before `max_slot_wal_keep_size` invalidates its slot, in seconds.
    package static let downtimeToSurvive = 600

    /// Runs the checks for `modes`. `tables` are the tables the user means to capture
    /// (checked for the trigger in trigger mode and for a replica identity in
    /// replication mode, together with the publication's own tables).
    package static func check(
        on connection: PostgresConnection,
        modes: [CaptureMode],
        tables: [TableName],
        publication: String
    ) throws(PostgresError) -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        let version = connection.serverVersion
        let versionText = try connection.execute("SHOW server_version").scalar ?? String(version)
        let user = try connection.execute("SELECT current_user").scalar ?? "?"
        let database = try connection.execute("SELECT current_database()").scalar ?? "?"
        let superuser = try connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar == "t"
        let mayCreate = try connection.execute("SELECT has_database_privilege(current_database(), 'CREATE')").scalar == "t"

        let minimum = modes.contains(.replication) ? 140000 : 110000
        if version >= minimum {
            checks.append(.ok("PostgreSQL \(versionText)"))
        } else {
            checks.append(.fail(
                "PostgreSQL \(versionText) is older than rowcast needs (\(minimum / 10000) for \(modes.contains(.replication) ? "replication" : "trigger") mode)",
                fix: "upgrade PostgreSQL"
            ))
        }

        var missingTables: [TableName] = []
        for table in tables {
            if try connection.execute("SELECT to_regclass($1) IS NULL", [table.quoted]).scalar == "t" {
                missingTables.append(table)
                checks.append(.fail("table \(table) does not exist", fix: "create it, or name it as schema.table"))
            }
        }
        let existingTables = tables.filter { !missingTables.contains($0) }

        if modes.contains(.trigger) {
            checks += try triggerChecks(on: connection, tables: existingTables, user: user, database: database, superuser: superuser, mayCreate: mayCreate)
        }
        if modes.contains(.replication) {
            checks += try replicationChecks(on: connection, tables: existingTables, publication: publication, user: user, database: database, superuser: superuser, mayCreate: mayCreate)
        }
        return checks
    }

    private static func triggerChecks(
        on connection: PostgresConnection,
        tables: [TableName],
        user: String,
        database: String,
        superuser: Bool,
        mayCreate: Bool
    ) throws(PostgresError) -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        // From the catalogs, not by name: resolving `rowcast.…` needs USAGE on the
        // schema, which a role rowcast connects as may not have yet.
        let function = { (name: String) throws(PostgresError) -> Bool in
            try connection.execute(
                """
                SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                               WHERE n.nspname = 'rowcast' AND p.proname = $1 AND p.pronargs = 0)
                """,
                [name]
            ).scalar == "t"
        }
        let installed = try function("capture_statement")
        let legacy = try function("capture")
        if legacy {
            checks.append(.warn(
                "trigger mode: set up by rowcast 0.1, whose notifications carry the rows: any role can read and forge them",
                fix: "rowcast setup --mode trigger (upgrades every captured table in place)"
            ))
        } else if installed {
            checks.append(.ok("trigger mode: the rowcast trigger functions are installed"))
            // Rows are deleted by a listening rowcast; with none running they pile up.
            if let bytes = try connection.execute(
                "SELECT pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'rowcast' AND c.relname = 'changes'"
            ).scalar.flatMap(Int64.init),
               bytes > 256 << 20 {
                checks.append(.warn(
                    "trigger mode: rowcast.changes holds \(bytes >> 20) MB; rows are deleted only while a rowcast listens",
                    fix: "run rowcast tail or serve --mode trigger, or rowcast teardown --mode trigger if you no longer capture"
                ))
            }
            // rowcast reads the changes and deletes what it delivered, and registers
            // (and heartbeats, and drops expired listeners) in the listener tables.
            let access = try connection.execute(
                """
                SELECT bool_and(has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'DELETE')
                                AND (c.relname = 'changes' OR (has_table_privilege(c.oid, 'INSERT') AND has_table_privilege(c.oid, 'UPDATE')))),
                       string_agg(c.relname, ',' ORDER BY c.relname) FILTER (WHERE c.relname <> 'changes')
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'rowcast' AND c.relname IN ('changes', 'listeners', 'listener_names') AND c.relkind = 'r'
                """
            ).rows.first
            if access?[0] != "t" {
                let role = TableName.quoteIdentifier(user)
                let registry = (access?[1] ?? "listeners").split(separator: ",").map { "rowcast." + $0 }.joined(separator: ", ")
                checks.append(.fail(
                    "trigger mode: \(user) may not read and delete rows of rowcast.changes or register in \(registry)",
                    fix: "GRANT USAGE ON SCHEMA rowcast TO \(role); GRANT SELECT, DELETE ON rowcast.changes TO \(role); GRANT SELECT, INSERT, UPDATE, DELETE ON \(registry) TO \(role);"
                ))
            }
        } else if superuser || mayCreate {
            checks.append(.ok("trigger mode: \(user) may create the rowcast schema (rowcast setup --mode trigger installs it)"))
        } else {
            checks.append(.fail(
                "trigger mode: \(user) may not create the rowcast schema in \(database)",
                fix: "GRANT CREATE ON DATABASE \(TableName.quoteIdentifier(database)) TO \(TableName.quoteIdentifier(user));"
            ))
        }
        for table in tables {
            // A table set up captures its rows (not only a truncate trigger, which a
            // detached partition keeps); then TRIGGER is not needed to listen.
            let hasTrigger = try connection.execute(
                """
                SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname <> 'rowcast_capture_truncate'
                    AND tgfoid IN (SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                                   WHERE n.nspname = 'rowcast' AND p.proname IN ('capture_statement', 'capture_row', 'capture') AND p.pronargs = 0))
                """,
                [table.quoted]
            ).scalar == "t"
            if !hasTrigger, try connection.execute("SELECT has_table_privilege($1, 'TRIGGER')", [table.quoted]).scalar != "t" {
                checks.append(.fail(
                    "trigger mode: \(user) may not create triggers on \(table)",
                    fix: "GRANT TRIGGER ON \(table.quoted) TO \(TableName.quoteIdentifier(user));"
                ))
                continue
            }
            if hasTrigger {
                checks.append(.ok("trigger mode: \(table) has the rowcast trigger"))
            } else {
                checks.append(.fail("trigger mode: \(table) has no rowcast trigger", fix: "rowcast setup --mode trigger --table \(table)"))
            }
        }
        // PostgreSQL refuses PREPARE TRANSACTION in a transaction that ran NOTIFY: where
        // two-phase commit is switched on the trigger sends none, and rowcast polls.
        if let prepared = try connection.execute("SELECT current_setting('max_prepared_transactions')::int").scalar, prepared != "0" {
            checks.append(.ok(
                "trigger mode: max_prepared_transactions is \(prepared): the trigger sends no NOTIFY (PostgreSQL would refuse to PREPARE a transaction that sent one), and rowcast reads new changes every 100 ms"
            ))
        }
        return checks
    }

    private static func replicationChecks(
        on connection: PostgresConnection,
        tables: [TableName],
        publication: String,
        user: String,
        database: String,
        superuser: Bool,
        mayCreate: Bool
    ) throws(PostgresError) -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        func setting(_ name: String) throws(PostgresError) -> String {
            try connection.execute("SELECT current_setting($1)", [name]).scalar ?? ""
        }

        let walLevel = try setting("wal_level")
        if walLevel == "logical" {
            checks.append(.ok("replication mode: wal_level is logical"))
        } else {
            checks.append(.fail(
                "replication mode: wal_level is \(walLevel), logical decoding needs logical",
                fix: "ALTER SYSTEM SET wal_level = logical; -- then restart PostgreSQL (or wal_level = logical in postgresql.conf)"
            ))
        }

        // One free slot and one free WAL sender: what a rowcast in replication mode takes.
        func capacity(_ limit: String, inUse query: String, noun: String, fix: (Int) -> String) throws(PostgresError) {
            let maximum = Int(try setting(limit)) ?? 0
            let used = Int(try connection.execute(query).scalar ?? "0") ?? 0
            if maximum - used >= 1 {
                checks.append(.ok("replication mode: \(maximum - used) of \(maximum) \(noun) free"))
            } else {
                checks.append(.fail("replication mode: all \(maximum) \(noun) are in use", fix: fix(maximum)))
            }
        }
        try capacity("max_replication_slots", inUse: "SELECT count(*) FROM pg_replication_slots", noun: "replication slots") { maximum in
            "ALTER SYSTEM SET max_replication_slots = \(max(maximum * 2, 10)); -- then restart PostgreSQL; or drop an unused slot (rowcast slot status)"
        }
        try capacity("max_wal_senders", inUse: "SELECT count(*) FROM pg_stat_replication", noun: "WAL senders") { maximum in
            "ALTER SYSTEM SET max_wal_senders = \(max(maximum * 2, 10)); -- then restart PostgreSQL"
        }

        let canReplicate = try connection.execute("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").scalar == "t"
        if canReplicate {
            checks.append(.ok("replication mode: \(user) may open replication connections"))
        } else {
            checks.append(.fail(
                "replication mode: \(user) lacks the REPLICATION attribute",
                fix: "ALTER ROLE \(TableName.quoteIdentifier(user)) WITH REPLICATION; -- on managed services, grant the provider's replication role"
            ))
        }

        let publicationExists = try connection.execute("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", [publication]).scalar == "t"
        if !publicationExists {
            if superuser || mayCreate {
                checks.append(.ok("replication mode: \(user) may create publication \(publication) (rowcast setup --mode replication creates it)"))
            } else {
                checks.append(.fail(
                    "replication mode: \(user) may not create publication \(publication) in \(database)",
                    fix: "GRANT CREATE ON DATABASE \(TableName.quoteIdentifier(database)) TO \(TableName.quoteIdentifier(user));"
                ))
            }
        }

        // The publication's tables and the ones named: each needs a replica identity,
        // or the server rejects UPDATE and DELETE on it once it is published.
        let published = try connection.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2", [publication]
        ).rows.compactMap { row -> TableName? in
            guard let schema = row[0], let name = row[1] else { return nil }
            return TableName(schema: schema, name: name)
        }
        let publishedSet = Set(published)
        let allTables = try connection.execute("SELECT puballtables FROM pg_publication WHERE pubname = $1", [publication]).scalar == "t"
        var seen = Set<TableName>()
        for table in published + tables where seen.insert(table).inserted {
            let identity = try connection.execute(
                """
                SELECT c.relreplident::text,
                       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
                FROM pg_class c WHERE c.oid = to_regclass($1)
                """,
                [table.quoted]
            ).rows.first
            guard let identity else { continue }
            let mode = identity[0] ?? "d"
            let hasPrimaryKey = identity[1] == "t"
            let hasIdentityIndex = identity[2] == "t"
            switch mode {
            case "f":
                checks.append(.ok("replication mode: \(table) has REPLICA IDENTITY FULL (old rows arrive whole)"))
            case "i" where hasIdentityIndex, "d" where hasPrimaryKey:
                checks.append(.ok(
                    "replication mode: \(table) has a replica identity (deletes carry its key); a token's row rule (rows claim) on it is refused until it has REPLICA IDENTITY FULL (ALTER TABLE \(table.quoted) REPLICA IDENTITY FULL)"
                ))
            case "n":
                checks.append(.fail(
                    "replication mode: \(table) has REPLICA IDENTITY NOTHING; updates and deletes on it fail once published",
                    fix: "ALTER TABLE \(table.quoted) REPLICA IDENTITY DEFAULT; -- with a primary key, or REPLICA IDENTITY FULL"
                ))
            default:
                let fix = "ALTER TABLE \(table.quoted) ADD PRIMARY KEY (...); -- or ALTER TABLE \(table.quoted) REPLICA IDENTITY FULL;"
                if publishedSet.contains(table) {
                    // Published already: the application's own writes fail right now.
                    checks.append(.fail(
                        "replication mode: \(table) has no primary key or replica identity and publication \(publication)\(allTables ? " (FOR ALL TABLES)" : "") publishes it: every UPDATE and DELETE on it fails",
                        fix: fix + (allTables ? " -- or replace the FOR ALL TABLES publication: rowcast setup --mode replication --publication NAME --table T..." : "")
                    ))
                } else {
                    checks.append(.warn(
                        "replication mode: \(table) has no primary key, so no replica identity; updates and deletes on it fail once published",
                        fix: fix
                    ))
                }
            }
            // pgoutput leaves stored generated columns out (unless a PostgreSQL 18
            // publication publishes them): records lack what to_jsonb has.
            let generated = try connection.execute(
                "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attgenerated <> ''",
                [table.quoted]
            ).scalar
            if let generated, !generated.isEmpty {
                checks.append(.warn(
                    "replication mode: \(table) has stored generated columns (\(generated)) that pgoutput does not send: its records lack them (each record lists them in \"generated\"), where trigger mode and to_jsonb have them",
                    fix: "read them from the table, compute them in the client, or capture \(table) in trigger mode"
                        + (connection.serverVersion >= 180000 ? "; or ALTER PUBLICATION \(TableName.quoteIdentifier(publication)) SET (publish_generated_columns = stored);" : "")
                ))
            }
        }

        // Where serve keeps what clients resume from: not in the slot's WAL.
        checks.append(.ok(
            "replication mode: serve keeps its resume window on its own disk (--window-dir: about --resume-window-bytes, 64 MiB by default, and a 16 MB segment per slot); the slot holds back only the WAL serve has not kept yet (Docs/operations.md)"
        ))
        let keep = try setting("max_slot_wal_keep_size")
        if keep == "-1" {
            checks.append(.warn(
                "replication mode: max_slot_wal_keep_size is unlimited; a slot whose consumer stops keeps WAL until the disk fills",
                fix: "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf();"
            ))
        } else if let limit = try SlotAdmin.maxSlotWALKeepSize(on: connection),
                  connection.serverVersion >= 140000,
                  let rate = try connection.execute(
                      "SELECT (wal_bytes / greatest(extract(epoch FROM now() - stats_reset), 1))::bigint FROM pg_stat_wal"
                  ).scalar.flatMap(Int64.init),
                  rate > 0, limit / rate < Int64(Self.downtimeToSurvive) {
            // A running serve holds back only the WAL it has not kept yet; a stopped one
            // holds back everything written while it is away.
            checks.append(.warn(
                "replication mode: max_slot_wal_keep_size is \(keep): at this server's average WAL rate (\(max(rate >> 10, 1)) KB/s since pg_stat_wal was reset) a slot whose serve is stopped for more than \(limit / rate) s is invalidated, and serve then captures nothing until the slot is made again (or carries on with --on-slot-lost recreate)",
                fix: "ALTER SYSTEM SET max_slot_wal_keep_size = '\(max((rate * Int64(Self.downtimeToSurvive) * 2) >> 20, 1024))MB'; SELECT pg_reload_conf();"
            ))
        } else {
            checks.append(.ok("replication mode: max_slot_wal_keep_size is \(keep)"))
        }
        return checks
    }
}
