/// A source of change records: trigger mode's LISTEN loop or replication mode's stream.
///
/// The server and the CLI see capture only through this protocol and ``RecordSink``;
/// the libpq implementations live in RowcastPostgres, and the CLI wires them.
package protocol CaptureSource: Sendable {
    /// The mode, reported to clients in `connected`.
    var mode: CaptureMode { get }
    /// Connection state and counters, for `/healthz`, `/status` and `/metrics`.
    var state: CaptureState { get }
    /// A cursor before every record this source will deliver: what a client that
    /// subscribes before the first record resumes from, so it misses nothing.
    var origin: Cursor { get }
    /// Captures until `stop` fires (or the task is cancelled, or the sink fails),
    /// delivering records to `sink` in stream order; reconnects by itself. Before it
    /// returns it confirms what the sink delivered.
    func run(sink: any RecordSink, stop: StopSignal) async
    /// Asks the capture to read what committed now, without waiting for a notification
    /// (trigger mode: a snapshot waits for the stream to pass it). Never blocks.
    func requestRead()
}

extension CaptureSource {
    package func requestRead() {}
}
