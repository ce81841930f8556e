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
            In replication mode, what tail printed is confirmed to the slot when it ends \
            (SIGINT or SIGTERM), so the next run starts after it.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var capture: CaptureOptions

    func run() throws {
        let logger = try connection.bootstrapLogging()
        let source = try capture.connect(connection.settings, logger: logger)
        let stop = StopSignal()
        let signals = SignalTrap(signals: [SIGINT, SIGTERM]) { stop.stop() }
        let sink = NDJSONSink(stop: stop)
        source.run(sink: sink, stop: stop)
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
