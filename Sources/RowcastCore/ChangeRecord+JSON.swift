extension ChangeRecord {
    /// Appends the record as one JSON object.
    package func encode(into writer: inout JSONWriter) {
        encode(into: &writer, value: nil)
    }

    /// From this size on, sinks write `row` and `old` straight from their bytes rather
    /// than copying them into a ``JSONWriter`` first.
    package static let largeValueBytes = 1 << 20

    /// Which of the record's raw values ``encode(into:value:)`` hands its handler.
    package enum ValueKey: Sendable { case row, old }

    /// Encodes the record; `row` and `old` are handed to `value` (when given) instead of
    /// being copied into `writer`: the handler appends the value itself, to `writer` or
    /// after emitting what `writer` holds (a huge row written straight from its bytes is
    /// held once less), and learns where each value lies in the output.
    package func encode(
        into writer: inout JSONWriter,
        value: ((inout JSONWriter, ValueKey, RawJSON) -> Void)?
    ) {
        func appendValue(_ raw: RawJSON, _ key: ValueKey) {
            if let value {
                value(&writer, key, raw)
            } else {
                writer.appendRaw(raw.bytes)
            }
        }
        var first = true
        writer.append(byte: UInt8(ascii: "{"))
        writer.appendKey("cursor", first: &first)
        writer.append(byte: UInt8(ascii: "\""))
        cursor.appendText(to: &writer)
        writer.append(byte: UInt8(ascii: "\""))
        writer.appendKey("source", first: &first)
        writer.appendString(source.rawValue)
        writer.appendKey("op", first: &first)
        writer.appendString(op.rawValue)
        if let schema {
            writer.appendKey("schema", first: &first)
            writer.appendString(schema)
        }
        if let table {
            writer.appendKey("table", first: &first)
            writer.appendString(table)
        }
        if let xid {
            writer.appendKey("xid", first: &first)
            writer.appendInteger(xid)
        }
        if let lsn {
            writer.appendKey("lsn", first: &first)
            writer.append(byte: UInt8(ascii: "\""))
            writer.appendLSN(lsn)
            writer.append(byte: UInt8(ascii: "\""))
        }
        if let commitTime {
            writer.appendKey("commit_time", first: &first)
            writer.appendString(commitTime)
        }
        if let row {
            writer.appendKey("row", first: &first)
            appendValue(row, .row)
        }
        if let old {
            writer.appendKey("old", first: &first)
            appendValue(old, .old)
        }
        // Column lists, written without building anything per record (the hot path).
        func appendColumns(_ key: StaticString, _ columns: [String]?) {
            guard let columns else { return }
            writer.appendKey(key, first: &first)
            writer.append(byte: UInt8(ascii: "["))
            for (index, column) in columns.enumerated() {
                if index > 0 { writer.append(byte: UInt8(ascii: ",")) }
                writer.appendString(column)
            }
            writer.append(byte: UInt8(ascii: "]"))
        }
        appendColumns("unchanged", unchanged)
        appendColumns("generated", generated)
        if let channel {
            writer.appendKey("channel", first: &first)
            writer.appendString(channel)
        }
        if let payload {
            writer.appendKey("payload", first: &first)
            writer.appendString(payload)
        }
        if let prefix {
            writer.appendKey("prefix", first: &first)
            writer.appendString(prefix)
        }
        if let content {
            writer.appendKey("content", first: &first)
            writer.appendString(content)
            if contentIsBase64 {
                writer.appendKey("encoding", first: &first)
                writer.appendString("base64")
            }
        }
        if let transactional {
            writer.appendKey("transactional", first: &first)
            writer.appendBool(transactional)
        }
        if let reason {
            writer.appendKey("reason", first: &first)
            writer.appendString(reason.rawValue)
        }
        writer.append(byte: UInt8(ascii: "}"))
    }

    /// The record as JSON bytes.
    package func jsonBytes() -> [UInt8] {
        var writer = JSONWriter(capacity: 128 + (row?.bytes.count ?? 0) + (old?.bytes.count ?? 0))
        encode(into: &writer)
        return writer.bytes
    }
}
