/// A notification sent by `rowcast.capture()`, the trigger function in `sql/`.
///
/// Wire layout (the payload of a NOTIFY on channel ``TriggerPayload/channel``), one of:
/// - a change: `{"op":"insert"|"update"|"delete"|"truncate","schema":S,"table":T,
///   "xid":N,"i":N,"row":{…},"old":{…}}`, where `row`/`old` are `to_jsonb` of the
///   new and old row and appear only where they apply, and `i` numbers the change
///   within its transaction (it also keeps PostgreSQL from folding identical
///   notifications of one transaction into one);
/// - an overflow pointer: `{"overflow":ID}` when the change did not fit a NOTIFY; the
///   change itself is the `payload` of row `ID` in `rowcast.overflow`;
/// - a loss report: a change without `row`/`old` but with `"lost":REASON`, sent when
///   the trigger could not store an oversized change and chose not to fail the write.
package enum TriggerPayload: Sendable, Equatable {
    /// The NOTIFY channel the trigger function uses.
    package static let channel = "rowcast"

    case change(TriggerChange)
    case overflow(id: Int64)
    case lost(TriggerChange, reason: String)

    /// Decodes one payload.
    package static func decode(_ bytes: [UInt8]) throws(TriggerPayloadError) -> TriggerPayload {
        var scanner = JSONScanner(bytes)
        var op: Operation?
        var schema: String?
        var table: String?
        var xid: UInt32?
        var row: RawJSON?
        var old: RawJSON?
        var overflow: Int64?
        var lost: String?
        do {
            try scanner.scanObject { (key, range) throws(JSONSyntaxError) in
                let raw = bytes[range]
                switch key {
                case "op":
                    var inner = JSONScanner(Array(raw))
                    let text = try inner.readString()
                    op = Operation(rawValue: text)
                case "schema":
                    var inner = JSONScanner(Array(raw))
                    schema = try inner.readString()
                case "table":
                    var inner = JSONScanner(Array(raw))
                    table = try inner.readString()
                case "xid":
                    xid = UInt32(String(decoding: raw, as: UTF8.self))
                case "row":
                    row = RawJSON(trusted: Array(raw))
                case "old":
                    old = RawJSON(trusted: Array(raw))
                case "overflow":
                    overflow = Int64(String(decoding: raw, as: UTF8.self))
                case "lost":
                    var inner = JSONScanner(Array(raw))
                    lost = try inner.readString()
                default:
                    break  // "i" and any key a newer trigger adds
                }
            }
            try scanner.expectEnd()
        } catch {
            throw .malformed(error.description)
        }
        if let overflow { return .overflow(id: overflow) }
        guard let op else { throw .missing("op") }
        guard let schema, let table else { throw .missing("schema and table") }
        let change = TriggerChange(op: op, schema: schema, table: table, xid: xid, row: row, old: old)
        if let lost { return .lost(change, reason: lost) }
        switch op {
        case .insert where row == nil, .update where row == nil:
            throw .missing("row")
        case .delete where old == nil:
            throw .missing("old")
        case .message, .notify:
            throw .malformed("op \"\(op.rawValue)\" is not a table change")
        default:
            return .change(change)
        }
    }
}

/// A row change as the trigger function reports it.
package struct TriggerChange: Sendable, Equatable {
    package var op: Operation
    package var schema: String
    package var table: String
    package var xid: UInt32?
    package var row: RawJSON?
    package var old: RawJSON?

    /// The record for this change at `cursor`.
    package func record(cursor: Cursor) -> ChangeRecord {
        var record = ChangeRecord(cursor: cursor, source: .trigger, op: op)
        record.schema = schema
        record.table = table
        record.xid = xid
        record.row = row
        record.old = old
        return record
    }
}

/// Why a trigger payload could not be decoded.
package enum TriggerPayloadError: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed(String)
    case missing(String)

    package var description: String {
        switch self {
        case .malformed(let why): "malformed trigger payload: \(why)"
        case .missing(let key): "trigger payload lacks \(key)"
        }
    }
}
