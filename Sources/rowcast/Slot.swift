import ArgumentParser
import Foundation
import RowcastCore
import RowcastPostgres

/// `rowcast slot`: what rowcast (or anything else) holds on the server.
struct Slot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show and manage logical replication slots.",
        subcommands: [Status.self, Create.self, Drop.self]
    )

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every logical slot (or one): activity, positions, lag, WAL retention.",
            discussion: """
                Warns about inactive slots that hold back WAL and slots close to \
                max_slot_wal_keep_size. Exit 1 when --slot names a slot that does not exist.

                Example:
                  rowcast slot status --slot rowcast --json | jq .[0].lag_bytes
                """
        )

        @OptionGroup var connection: ConnectionOptions

        @Option(name: .long, help: ArgumentHelp("Only this slot.", valueName: "slot"))
        var slot: String?

        @Flag(name: .long, help: "Print JSON (an array of objects) instead of a table.")
        var json = false

        @Option(name: .long, help: ArgumentHelp("Print again every SECONDS until interrupted.", valueName: "seconds"))
        var watch: Double?

        func run() throws {
            _ = try connection.bootstrapLogging()
            if let watch, watch <= 0 { throw CommandFailure.usage("--watch takes a number of seconds above 0") }
            let database = try connection.connect()
            let stop = StopSignal()
            let signals = SignalTrap(signals: [SIGINT, SIGTERM]) { stop.stop() }
            defer { withExtendedLifetime(signals) {} }
            repeat {
                let slots: [SlotStatus]
                let keep: Int64?
                do {
                    slots = try SlotAdmin.status(on: database, slot: slot)
                    keep = try SlotAdmin.maxSlotWALKeepSize(on: database)
                } catch {
                    throw CommandFailure(error)
                }
                if let slot, slots.isEmpty { throw CommandFailure.failed(SlotError.missing(slot).description) }
                if json {
                    print(SlotReport.json(slots))
                } else {
                    if watch != nil { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                    print(SlotReport.table(slots), terminator: "")
                }
                for warning in SlotReport.warnings(slots, maxKeepBytes: keep) {
                    FileHandle.standardError.write(Data(("warning: " + warning + "\n").utf8))
                }
                fflush(nil)
            } while watch.map { stop.sleep(seconds: $0) } ?? false
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a logical replication slot that uses pgoutput.",
            discussion: """
                Example:
                  rowcast slot create rowcast
                """
        )

        @OptionGroup var connection: ConnectionOptions

        @Argument(help: "The slot's name.")
        var slot: String

        func run() throws {
            _ = try connection.bootstrapLogging()
            let database = try connection.connect()
            do {
                try SlotAdmin.create(on: database, slot: slot)
            } catch {
                throw CommandFailure.failed(error.description)
            }
            print("created replication slot \(slot)")
        }
    }

    struct Drop: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drop a replication slot; refuses an active one unless --force.",
            discussion: """
                --force terminates the process holding the slot first.

                Example:
                  rowcast slot drop rowcast --force
                """
        )

        @OptionGroup var connection: ConnectionOptions

        @Argument(help: "The slot's name.")
        var slot: String

        @Flag(name: .long, help: "Terminate the slot's holder if it is active.")
        var force = false

        func run() throws {
            _ = try connection.bootstrapLogging()
            let database = try connection.connect()
            do {
                try SlotAdmin.drop(on: database, slot: slot, force: force)
            } catch {
                throw CommandFailure.failed(error.description)
            }
            print("dropped replication slot \(slot)")
        }
    }
}

/// The text and JSON forms of `slot status`.
enum SlotReport {
    static let headers = ["slot", "plugin", "database", "active", "pid", "restart_lsn", "confirmed_flush_lsn", "lag_bytes", "lag", "wal_status", "safe_wal_size"]

    static func table(_ slots: [SlotStatus]) -> String {
        let rows = slots.map { slot in
            [
                slot.name, slot.plugin ?? "", slot.database ?? "", slot.active ? "yes" : "no",
                slot.activePID.map(String.init) ?? "", slot.restartLSN ?? "", slot.confirmedFlushLSN ?? "",
                slot.lagBytes.map(String.init) ?? "", slot.lag ?? "", slot.walStatus ?? "",
                slot.safeWALSize.map(String.init) ?? "",
            ]
        }
        if rows.isEmpty { return "no logical replication slots\n" }
        let widths = headers.indices.map { column in
            ([headers[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) + "\n"
        }
        return line(headers) + rows.map(line).joined()
    }

    /// Stable JSON: an array of objects with the same fields as the table.
    static func json(_ slots: [SlotStatus]) -> String {
        var writer = JSONWriter()
        writer.append(byte: UInt8(ascii: "["))
        for (index, slot) in slots.enumerated() {
            if index > 0 { writer.append(byte: UInt8(ascii: ",")) }
            var first = true
            writer.append(byte: UInt8(ascii: "{"))
            func string(_ key: StaticString, _ value: String?) {
                writer.appendKey(key, first: &first)
                if let value { writer.appendString(value) } else { writer.appendASCII("null") }
            }
            func number(_ key: StaticString, _ value: Int64?) {
                writer.appendKey(key, first: &first)
                if let value { writer.appendInteger(value) } else { writer.appendASCII("null") }
            }
            string("slot_name", slot.name)
            string("plugin", slot.plugin)
            string("database", slot.database)
            writer.appendKey("active", first: &first)
            writer.appendBool(slot.active)
            number("active_pid", slot.activePID.map(Int64.init))
            string("restart_lsn", slot.restartLSN)
            string("confirmed_flush_lsn", slot.confirmedFlushLSN)
            number("lag_bytes", slot.lagBytes)
            string("lag", slot.lag)
            string("wal_status", slot.walStatus)
            number("safe_wal_size", slot.safeWALSize)
            writer.append(byte: UInt8(ascii: "}"))
        }
        writer.append(byte: UInt8(ascii: "]"))
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// Inactive slots that keep WAL, and slots close to losing their WAL.
    static func warnings(_ slots: [SlotStatus], maxKeepBytes: Int64?) -> [String] {
        var warnings: [String] = []
        for slot in slots {
            // A slot always keeps a little WAL; past one segment (16 MB by default) it matters.
            if !slot.active, let retained = slot.retainedBytes, retained >= 16 * 1024 * 1024 {
                warnings.append(
                    "slot \(slot.name) is inactive and holds back \(retained) bytes of WAL; resume its consumer, or rowcast slot drop \(slot.name) if none will return"
                )
            }
            if slot.walStatus == "lost" {
                warnings.append("slot \(slot.name) has lost WAL it needed and can no longer be used: changes were missed (fix: rowcast slot drop \(slot.name) and set up again, or let serve --on-slot-lost recreate make it again; raise max_slot_wal_keep_size)")
            } else if let keep = maxKeepBytes, keep > 0, let safe = slot.safeWALSize, safe < keep / 5 {
                warnings.append(
                    "slot \(slot.name) is within \(safe) bytes of max_slot_wal_keep_size; the server will invalidate it if its consumer does not catch up"
                )
            }
        }
        return warnings
    }
}
