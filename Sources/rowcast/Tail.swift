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
              rowcast tail --mode trigger --table public.orders --channel addedrecord | jq .row
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var modeOption: ModeOption

    @Option(name: .long, help: ArgumentHelp("A table to capture, schema.table or table (repeatable); default: every table with the trigger.", valueName: "table"))
    var table: [String] = []

    @Option(name: .long, help: ArgumentHelp("Forward plain NOTIFY traffic on this channel as op \"notify\" records (repeatable).", valueName: "channel"))
    var channel: [String] = []

    func run() throws {
        let logger = try connection.bootstrapLogging()
        let mode = try modeOption.resolve(default: .replication)
        try requireTriggerMode(mode)
        let tables = try parseTables(table)
        let configuration = TriggerCapture.Configuration(
            connection: connection.settings,
            tables: Set(tables),
            channels: channel
        )
        let capture: TriggerCapture
        do {
            capture = try TriggerCapture.connect(configuration: configuration, logger: logger)
        } catch {
            throw CommandFailure(error)
        }
        let stop = StopSignal()
        let signals = SignalTrap(signals: [SIGINT, SIGTERM]) { stop.stop() }
        let sink = NDJSONSink(stop: stop)
        capture.run(sink: sink, stop: stop)
        sink.endOfBatch()
        withExtendedLifetime(signals) {}
    }
}

/// Writes records to stdout as NDJSON, buffered per batch.
final class NDJSONSink: RecordSink, @unchecked Sendable {
    // Touched only on the capture thread.
    private var buffer: [UInt8] = []
    private let stop: StopSignal

    init(stop: StopSignal) {
        self.stop = stop
        buffer.reserveCapacity(1 << 16)
    }

    func deliver(_ record: ChangeRecord) {
        var writer = JSONWriter(capacity: 0)
        record.encode(into: &writer)
        buffer.append(contentsOf: writer.bytes)
        buffer.append(UInt8(ascii: "\n"))
        if buffer.count >= 1 << 16 { endOfBatch() }
    }

    func endOfBatch() {
        var offset = 0
        while offset < buffer.count {
            let written = buffer[offset...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                // The reader went away (a closed pipe): stop capturing.
                stop.stop()
                break
            }
            offset += written
        }
        buffer.removeAll(keepingCapacity: true)
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
