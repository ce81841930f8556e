/// What kind of change a record describes (SPEC section 2, `op`).
package enum Operation: String, Sendable, Hashable, CaseIterable {
    case insert, update, delete, truncate, message, notify
}

/// Why a client got an update as another operation (`reason`): the row left the rows
/// its credential lets it see (sent as a `delete` of the old row), or entered them (sent
/// as an `insert` of the new row).
package enum ViewChange: String, Sendable, Hashable {
    case leftView = "left_view"
    case enteredView = "entered_view"
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
    /// Set on the form of an update a client with a row rule (a JWT's `rows` claim) gets
    /// when the update moved the row out of its view or into it.
    package var reason: ViewChange?

    /// Creates a record; every optional field starts absent.
    package init(cursor: Cursor, source: CaptureMode, op: Operation) {
        self.cursor = cursor
        self.source = source
        self.op = op
        self.contentIsBase64 = false
    }
}

extension ChangeRecord {
    /// This update as a client sees it whose row rule the old row met and the new row
    /// does not: a `delete` of the old row (nothing of the new row).
    package var leavingView: ChangeRecord {
        var record = self
        record.op = .delete
        record.row = nil
        record.unchanged = nil
        record.reason = .leftView
        return record
    }

    /// This update as a client sees it whose row rule the new row meets and the old row
    /// did not (or whose old row is unknown): an `insert` of the new row (nothing of the
    /// old row). A client that may hold the row already takes it as an upsert.
    ///
    /// Replication leaves unchanged TOASTed values out of the new row (`unchanged`); the
    /// client never saw them, so they are taken from the whole old row (REPLICA IDENTITY
    /// FULL), where they are the new row's values too.
    package var enteringView: ChangeRecord {
        var record = self
        record.op = .insert
        record.old = nil
        record.reason = .enteredView
        if let unchanged, !unchanged.isEmpty, let row, let old, let whole = Self.filling(row, with: old, columns: Set(unchanged)) {
            record.row = whole.row
            record.unchanged = whole.missing.isEmpty ? nil : unchanged.filter(whole.missing.contains)
        }
        return record
    }

    /// `row` with the `columns` it lacks taken from `old`, in `old`'s column order (the
    /// table's); nil when either is not an object. `missing`: those `old` lacks too.
    static func filling(_ row: RawJSON, with old: RawJSON, columns: Set<String>) -> (row: RawJSON, missing: Set<String>)? {
        func members(_ json: RawJSON) -> [(key: String, value: Range<Int>)]? {
            var scanner = JSONScanner(json.bytes)
            var found: [(String, Range<Int>)] = []
            do {
                try scanner.scanObject { (key, range) throws(JSONSyntaxError) in found.append((key, range)) }
            } catch {
                return nil
            }
            return found
        }
        guard let new = members(row), let before = members(old) else { return nil }
        let newValues = Dictionary(new.map { ($0.key, $0.value) }) { first, _ in first }
        var writer = JSONWriter(capacity: row.bytes.count + old.bytes.count)
        writer.append(byte: UInt8(ascii: "{"))
        var first = true
        var written: Set<String> = []
        func member(_ key: String, _ bytes: ArraySlice<UInt8>) {
            if !first { writer.append(byte: UInt8(ascii: ",")) }
            first = false
            writer.appendString(key)
            writer.append(byte: UInt8(ascii: ":"))
            writer.appendRaw(bytes)
            written.insert(key)
        }
        for (key, range) in before {
            if let value = newValues[key] {
                member(key, row.bytes[value])
            } else if columns.contains(key) {
                member(key, old.bytes[range])
            }
        }
        // Columns only the new row has (none, with the whole old row), after.
        for (key, value) in new where !written.contains(key) { member(key, row.bytes[value]) }
        writer.append(byte: UInt8(ascii: "}"))
        return (RawJSON(trusted: writer.bytes), columns.subtracting(written))
    }
}
