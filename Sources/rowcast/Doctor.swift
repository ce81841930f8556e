import ArgumentParser
import RowcastCore
import RowcastPostgres

/// `rowcast doctor`: what each mode needs, and the exact fix for what is missing.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check what a capture mode needs from the server and print the fix for each problem.",
        discussion: """
            Checks the server version, wal_level, free replication slots and WAL senders, \
            the privileges each mode needs, a replica identity on every published table, \
            the trigger on each --table, and max_slot_wal_keep_size. Exit 1 when any check fails.

            Example:
              rowcast doctor --mode replication --table public.orders
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: ArgumentHelp("Check one mode, trigger or replication; default: both.", valueName: "mode"))
    var mode: String?

    @Option(name: .long, help: ArgumentHelp("A table you mean to capture (repeatable).", valueName: "table"))
    var table: [String] = []

    @Option(name: .long, help: ArgumentHelp("The publication replication mode uses.", valueName: "name"))
    var publication: String?

    func run() throws {
        _ = try connection.bootstrapLogging()
        let modes: [CaptureMode]
        if let text = mode {
            guard let mode = CaptureMode(rawValue: text) else {
                throw CommandFailure.usage("unknown mode \"\(text)\"; use trigger or replication")
            }
            modes = [mode]
        } else {
            modes = CaptureMode.allCases
        }
        let tables = try parseTables(table)
        let database = try connection.connect()
        let checks: [DoctorCheck]
        do {
            checks = try RowcastPostgres.Doctor.check(
                on: database,
                modes: modes,
                tables: tables,
                publication: publication ?? "rowcast"
            )
        } catch {
            throw CommandFailure(error)
        }
        for check in checks {
            let label = switch check.outcome {
            case .ok: "ok  "
            case .warn: "warn"
            case .fail: "FAIL"
            }
            print("\(label)  \(check.summary)")
            if let fix = check.fix { print("      fix: \(fix)") }
        }
        let failed = checks.filter { $0.outcome == .fail }.count
        let warned = checks.filter { $0.outcome == .warn }.count
        print("\(checks.count) checks: \(failed) failed, \(warned) warnings")
        if failed > 0 { throw ExitCode(1) }
    }
}
