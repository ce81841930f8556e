extension ChangeRecord {
    /// Appends the record as one JSON object.
    public func encode(into writer: inout JSONWriter) {
        var first = true
        writer.append(byte: UInt8(ascii: "{"))
        writer.appendKey("cursor", first: &first)
        writer.appendString(cursor.description)
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
            writer.appendString(lsn)
        }
        if let commitTime {
            writer.appendKey("commit_time", first: &first)
            writer.appendString(commitTime)
        }
        if let row {
            writer.appendKey("row", first: &first)
            writer.appendRaw(row.bytes)
        }
        if let old {
            writer.appendKey("old", first: &first)
            writer.appendRaw(old.bytes)
        }
        if let unchanged {
            writer.appendKey("unchanged", first: &first)
            writer.append(byte: UInt8(ascii: "["))
            for (index, column) in unchanged.enumerated() {
                if index > 0 { writer.append(byte: UInt8(ascii: ",")) }
                writer.appendString(column)
            }
            writer.append(byte: UInt8(ascii: "]"))
        }
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
        writer.append(byte: UInt8(ascii: "}"))
    }

    /// The record as JSON bytes.
    public func jsonBytes() -> [UInt8] {
        var writer = JSONWriter(capacity: 128 + (row?.bytes.count ?? 0) + (old?.bytes.count ?? 0))
        encode(into: &writer)
        return writer.bytes
    }
}
