/// What kind of change a record describes (SPEC section 2, `op`).
public enum Operation: String, Sendable, Hashable, CaseIterable {
    case insert, update, delete, truncate, message, notify
}

/// Which capture mode produced a record (`source`).
public enum CaptureMode: String, Sendable, Hashable, CaseIterable {
    case trigger, replication
}

/// One change, in the shape of SPEC section 2.
///
/// Optional fields are omitted from the JSON when nil: a record never invents a
/// key that does not apply. `row` and `old` stay raw JSON so that values are exactly
/// what `to_jsonb` produced.
public struct ChangeRecord: Sendable, Hashable {
    public var cursor: Cursor
    public var source: CaptureMode
    public var op: Operation
    public var schema: String?
    public var table: String?
    public var row: RawJSON?
    public var old: RawJSON?
    public var unchanged: [String]?
    public var xid: UInt32?
    /// Replication: commit LSN in `X/X` form.
    public var lsn: String?
    /// Replication: commit time, RFC 3339 UTC with microseconds.
    public var commitTime: String?
    /// `notify`: the channel.
    public var channel: String?
    /// `notify`: the raw payload.
    public var payload: String?
    /// `message`: the prefix.
    public var prefix: String?
    /// `message`: the content, as text (or base64 when `contentIsBase64`).
    public var content: String?
    /// `message`: true when `content` is base64 because the bytes were not UTF-8.
    public var contentIsBase64: Bool
    /// `message`: whether the message was emitted transactionally.
    public var transactional: Bool?

    /// Creates a record; every optional field starts absent.
    public init(cursor: Cursor, source: CaptureMode, op: Operation) {
        self.cursor = cursor
        self.source = source
        self.op = op
        self.contentIsBase64 = false
    }

    /// `schema.table`, the name filters and subscriptions use; nil for records without a relation.
    public var qualifiedTable: String? {
        guard let schema, let table else { return nil }
        return schema + "." + table
    }
}
