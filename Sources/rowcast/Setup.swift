import ArgumentParser
import RowcastCore
import RowcastPostgres

/// `rowcast setup`: install what a mode needs in the database.
struct Setup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Install what a capture mode needs in the database. Idempotent.",
        discussion: """
            trigger: installs the rowcast schema, its overflow table and trigger function, \
            and a trigger on each --table (the SQL is sql/rowcast_trigger.sql).

            Example:
              rowcast setup --mode trigger --table public.orders --table audit.events
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var modeOption: ModeOption

    @Option(name: .long, help: ArgumentHelp("A table to capture, schema.table or table (repeatable, at least one).", valueName: "table"))
    var table: [String] = []

    func run() throws {
        _ = try connection.bootstrapLogging()
        let mode = try modeOption.resolve(default: nil)
        try requireTriggerMode(mode)
        let tables = try parseTables(table)
        guard !tables.isEmpty else { throw CommandFailure.usage("name at least one --table to capture") }
        let database = try connection.connect()
        do {
            try TriggerSetup.install(on: database, tables: tables)
        } catch {
            throw CommandFailure(error)
        }
        print("trigger mode set up on " + tables.map(\.description).joined(separator: ", "))
    }
}

/// `rowcast teardown`: remove what setup made.
struct Teardown: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove what setup installed. Idempotent.",
        discussion: """
            trigger: drops the rowcast schema with its function, overflow table and every \
            rowcast trigger (sql/rowcast_trigger_teardown.sql).

            Example:
              rowcast teardown --mode trigger
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var modeOption: ModeOption

    func run() throws {
        _ = try connection.bootstrapLogging()
        let mode = try modeOption.resolve(default: nil)
        try requireTriggerMode(mode)
        let database = try connection.connect()
        do {
            try TriggerSetup.teardown(on: database)
        } catch {
            throw CommandFailure(error)
        }
        print("trigger mode removed")
    }
}
