import ArgumentParser
import RowcastCore
import RowcastPostgres

/// `rowcast setup`: install what a mode needs in the database.
struct Setup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Install what a capture mode needs in the database. Idempotent.",
        discussion: """
            trigger: installs the rowcast schema, its changes table and trigger functions, \
            and the capture triggers on each --table (the SQL is sql/rowcast_trigger.sql); \
            upgrades a database set up by rowcast 0.1 in place.
            replication: creates the publication for the tables (or adds them to it) and \
            the slot, when missing.

            Example:
              rowcast setup --mode trigger --table public.orders --table audit.events
              rowcast setup --mode replication --table public.orders --slot node1
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var modeOption: ModeOption

    @Option(name: .long, help: ArgumentHelp("A table to capture, schema.table or table (repeatable, at least one).", valueName: "table"))
    var table: [String] = []

    @Option(name: .long, help: ArgumentHelp("replication: the slot to create.", valueName: "name"))
    var slot: String = "rowcast"

    @Option(name: .long, help: ArgumentHelp("replication: the publication to create or extend.", valueName: "name"))
    var publication: String = "rowcast"

    func run() throws {
        _ = try connection.bootstrapLogging()
        let mode = try modeOption.resolve(default: nil)
        let tables = try parseTables(table)
        guard !tables.isEmpty else { throw CommandFailure.usage("name at least one --table to capture") }
        let database = try connection.connect()
        do {
            switch mode {
            case .trigger:
                try TriggerSetup.install(on: database, tables: tables)
                print("trigger mode set up on " + tables.map(\.description).joined(separator: ", "))
            case .replication:
                let done = try ReplicationSetup.install(on: database, publication: publication, slot: slot, tables: tables)
                print(done.isEmpty ? "replication mode already set up (publication \(publication), slot \(slot))" : done.joined(separator: "\n"))
            }
        } catch {
            throw CommandFailure(error)
        }
    }
}

/// `rowcast teardown`: remove what setup made.
struct Teardown: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove what setup installed. Idempotent.",
        discussion: """
            trigger: drops the rowcast schema with its functions, changes table and every \
            rowcast trigger (sql/rowcast_trigger_teardown.sql).
            replication: drops the publication; the slot too with --drop-slot (its \
            position is lost, and with it any change not yet delivered).

            Example:
              rowcast teardown --mode trigger
              rowcast teardown --mode replication --drop-slot
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var modeOption: ModeOption

    @Option(name: .long, help: ArgumentHelp("replication: the slot to drop with --drop-slot.", valueName: "name"))
    var slot: String = "rowcast"

    @Option(name: .long, help: ArgumentHelp("replication: the publication to drop.", valueName: "name"))
    var publication: String = "rowcast"

    @Flag(name: .long, help: "replication: drop the slot too (confirms losing its position).")
    var dropSlot = false

    func run() throws {
        _ = try connection.bootstrapLogging()
        let mode = try modeOption.resolve(default: nil)
        let database = try connection.connect()
        do {
            switch mode {
            case .trigger:
                try TriggerSetup.teardown(on: database)
                print("trigger mode removed")
            case .replication:
                let done = try ReplicationSetup.teardown(on: database, publication: publication, slot: slot, dropSlot: dropSlot)
                print(done.isEmpty ? "nothing to remove" : done.joined(separator: "\n"))
                if !dropSlot, try !SlotAdmin.status(on: database, slot: slot).isEmpty {
                    print("kept replication slot \(slot); pass --drop-slot to drop it too")
                }
            }
        } catch let error as SetupError {
            throw CommandFailure(error)
        } catch let error as PostgresError {
            throw CommandFailure(error)
        }
    }
}
