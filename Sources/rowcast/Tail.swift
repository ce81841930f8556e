import ArgumentParser
import Foundation
import RowcastCore
import RowcastPostgres

/// `rowcast tail`: the record stream as NDJSON on stdout.
struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the record stream as NDJSON on stdout, one record a line.",
        discussion: """
            Example:
              rowcast tail --mode replication --table public.orders | jq .row
              rowcast tail --mode trigger --table public.orders --channel addedrecord
              rowcast tail --endpos "$(psql -Atc 'SELECT pg_current_wal_lsn()')" > backlog.ndjson
            In replication mode, what tail printed is confirmed to the slot when it ends \
            (SIGINT or SIGTERM), so the next run starts after it. A failed write (a closed \
            pipe, a full disk) ends tail with exit 1, and nothing past the last record \
            fully written is confirmed.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: ArgumentHelp("replication: exit once everything committed before this WAL position (X/X) is printed and confirmed.", valueName: "lsn"))
    var endpos: String?

    func run() async throws {
        let logger = try connection.bootstrapLogging()
        var endPosition: UInt64?
        if let endpos {
            guard let lsn = parseLSN(endpos) else { throw CommandFailure.usage("--endpos \"\(endpos)\" is not a WAL position like 0/16B3748") }
            endPosition = lsn
        }
        let source = try capture.connect(connection.settings, endPosition: endPosition, logger: logger)
        let stop = StopSignal()
        let signals = SignalTrap(signals: [SIGINT, SIGTERM]) { stop.stop() }
        let sink = NDJSONSink(output: STDOUT_FILENO)
        await source.run(sink: sink, stop: stop)
        if case .failed(_, let reason) = sink.flush() {
            throw CommandFailure.failed(reason)
        }
        withExtendedLifetime(signals) {}
    }
}

/// Writes records as NDJSON to a file descriptor, buffered per batch, and knows
/// which record was the last one fully written: the capture confirms nothing past it.
/// Each record is encoded straight into the output buffer, and a huge row goes out
/// straight from its own bytes, so it is held once, not copied again.
final class NDJSONSink: RecordSink, @unchecked Sendable {
    // Touched only on the capture thread (and by `run` after capture ended).
    private let output: Int32
    private var buffer = JSONWriter(capacity: 1 << 16)
    /// The last record in `buffer`, or written through the huge-row path.
    private var lastBuffered: Cursor?
    /// The last record whose every byte reached the output.
    private var lastWritten: Cursor?
    /// Why writing failed; once set, nothing more is written.
    private var failure: String?

    init(output: Int32) {
        self.output = output
    }

    func deliver(_ record: ChangeRecord) {
        guard failure == nil else { return }
        record.encode(into: &buffer) { writer, _, value in
            guard value.bytes.count >= ChangeRecord.largeValueBytes else {
                writer.appendRaw(value.bytes)
                return
            }
            // A huge row: what is buffered (earlier records, this one's head), then the row itself.
            guard self.write(writer.bytes) else { return }
            self.lastWritten = self.lastBuffered
            writer.truncate(to: 0)
            _ = self.write(value.bytes)
        }
        guard failure == nil else { return }
        buffer.append(byte: UInt8(ascii: "\n"))
        lastBuffered = record.cursor
        if buffer.bytes.count >= 1 << 16 { _ = flush() }
    }

    func flush() -> SinkProgress {
        if failure == nil, write(buffer.bytes) {
            lastWritten = lastBuffered
        }
        // Keep a modest buffer, not the largest record ever seen.
        if buffer.bytes.count > 1 << 20 {
            buffer = JSONWriter(capacity: 1 << 16)
        } else {
            buffer.truncate(to: 0)
        }
        if let failure { return .failed(through: lastWritten, reason: failure) }
        return .delivered(through: lastWritten)
    }

    /// Writes all of `bytes`; on failure records why and returns false.
    private func write(_ bytes: [UInt8]) -> Bool {
        guard failure == nil else { return false }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return Foundation.write(output, base + offset, bytes.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                failure = "cannot write to stdout: " + String(cString: strerror(errno))
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
