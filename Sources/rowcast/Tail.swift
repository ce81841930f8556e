import ArgumentParser
import Foundation
import RowcastCore
import RowcastPostgres

/// `rowcast tail`: the record stream as NDJSON on stdout.
struct Tail: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the record stream as NDJSON on stdout, one record a line.",
        discussion: """
            Example:
              rowcast tail --mode replication --table public.orders | jq .row
              rowcast tail --mode trigger --table public.orders --channel addedrecord
              rowcast tail --endpos "$(psql -Atc 'SELECT pg_current_wal_lsn()')" > backlog.ndjson
            In replication mode, what tail printed is confirmed to the slot when it ends \
            (SIGINT or SIGTERM), so the next run starts after it.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: ArgumentHelp("replication: exit once everything up to this WAL position (X/X) is printed and confirmed.", valueName: "lsn"))
    var endpos: String?

    func run() throws {
        let logger = try connection.bootstrapLogging()
        var endPosition: UInt64?
        if let endpos {
            guard let lsn = parseLSN(endpos) else { throw CommandFailure.usage("--endpos \"\(endpos)\" is not a WAL position like 0/16B3748") }
            endPosition = lsn
        }
        let source = try capture.connect(connection.settings, endPosition: endPosition, logger: logger)
        let stop = StopSignal()
        let signals = SignalTrap(signals: [SIGINT, SIGTERM]) { stop.stop() }
        let sink = NDJSONSink(stop: stop)
        source.run(sink: sink, stop: stop)
        sink.endOfBatch()
        withExtendedLifetime(signals) {}
    }
}

/// Writes records to stdout as NDJSON, buffered per batch. Each record is encoded
/// straight into the output buffer, so a huge row is held once, not copied again.
final class NDJSONSink: RecordSink, @unchecked Sendable {
    // Touched only on the capture thread.
    private var buffer = JSONWriter(capacity: 1 << 16)
    private let stop: StopSignal

    init(stop: StopSignal) {
        self.stop = stop
    }

    func deliver(_ record: ChangeRecord) {
        // A huge row goes to stdout straight from its own bytes, not through the buffer.
        record.encode(into: &buffer) { [stop] writer, value in
            if !Self.writeAll(writer.bytes) || !Self.writeAll(value.bytes) { stop.stop() }
            writer.truncate(to: 0)
        }
        buffer.append(byte: UInt8(ascii: "\n"))
        if buffer.bytes.count >= 1 << 16 { endOfBatch() }
    }

    func endOfBatch() {
        // The reader went away (a closed pipe): stop capturing.
        if !Self.writeAll(buffer.bytes) { stop.stop() }
        // Keep a modest buffer, not the largest record ever seen.
        if buffer.bytes.count > 1 << 20 {
            buffer = JSONWriter(capacity: 1 << 16)
        } else {
            buffer.truncate(to: 0)
        }
    }

    /// Writes all of `bytes` to stdout; false when stdout is closed.
    private static func writeAll(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return write(STDOUT_FILENO, base + offset, bytes.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }
}

/// Turns signals into a callback on a dispatch queue, for as long as it lives.
final class SignalTrap {
    private let sources: [DispatchSourceSignal]

    init(signals: [Int32], handler: @escaping @Sendable () -> Void) {
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }
}
