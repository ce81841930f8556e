/// What kind of change a record describes (SPEC section 2, `op`).
package enum Operation: String, Sendable, Hashable, CaseIterable {
    case insert, update, delete, truncate, message, notify
}

/// Which capture mode produced a record (`source`).
package enum CaptureMode: String, Sendable, Hashable, CaseIterable {
    case trigger, replication
}

/// One change, in the shape of SPEC section 2.
///
/// Optional fields are omitted from the JSON when nil: a record never invents a
/// key that does not apply. `row` and `old` stay raw JSON so that values are exactly
/// what `to_jsonb` produced.
package struct ChangeRecord: Sendable, Hashable {
    package var cursor: Cursor
    package var source: CaptureMode
    package var op: Operation
    package var schema: String?
    package var table: String?
    package var row: RawJSON?
    package var old: RawJSON?
    package var unchanged: [String]?
    /// Replication: stored generated columns the server did not send (`pgoutput`
    /// leaves them out unless a PostgreSQL 18 publication asks for them); they are
    /// absent from `row` and `old`, where `to_jsonb` and trigger mode have them.
    package var generated: [String]?
    package var xid: UInt32?
    /// Replication: the commit LSN (the JSON shows it as PostgreSQL does, `X/X`).
    package var lsn: UInt64?
    /// Replication: commit time, RFC 3339 UTC with microseconds.
    package var commitTime: String?
    /// `notify`: the channel.
    package var channel: String?
    /// `notify`: the raw payload.
    package var payload: String?
    /// `message`: the prefix.
    package var prefix: String?
    /// `message`: the content, as text (or base64 when `contentIsBase64`).
    package var content: String?
    /// `message`: true when `content` is base64 because the bytes were not UTF-8.
    package var contentIsBase64: Bool
    /// `message`: whether the message was emitted transactionally.
    package var transactional: Bool?

    /// Creates a record; every optional field starts absent.
    package init(cursor: Cursor, source: CaptureMode, op: Operation) {
        self.cursor = cursor
        self.source = source
        self.op = op
        self.contentIsBase64 = false
    }
}
