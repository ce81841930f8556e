/// Turns a pgoutput tuple into the JSON object `to_jsonb(row)` gives, from the text
/// values and the shapes of the columns' types. Pure: the shapes come from the catalog
/// beforehand (``ReplicationSession`` asks for them when a Relation message arrives).
enum TupleJSON {
    struct Encoded {
        var row: RawJSON
        /// Columns the server did not send (unchanged TOASTed values).
        var unchanged: [String]
        /// Values that could not be converted and were sent as text, one line each.
        var warnings: [String]
    }

    /// `keysOnly` keeps the replica identity's columns (an old key). A type whose shape
    /// is unknown is written as its text, as `to_jsonb` does for types without a cast.
    static func encode(_ tuple: TupleData, relation: Relation, shapes: [UInt32: ValueShape], keysOnly: Bool) throws(ReplicationSession.Violation) -> Encoded {
        guard tuple.values.count == relation.columns.count else {
            throw .init("a tuple of \(tuple.values.count) columns for \(relation.namespace).\(relation.name), which has \(relation.columns.count)")
        }
        var unchanged: [String] = []
        var warnings: [String] = []
        var capacity = 64
        for value in tuple.values {
            if case .text(let bytes) = value { capacity += bytes.count + 16 } else { capacity += 16 }
        }
        var writer = JSONWriter(capacity: capacity)
        writer.append(byte: UInt8(ascii: "{"))
        var first = true
        for (column, value) in zip(relation.columns, tuple.values) {
            if keysOnly && !column.isKey { continue }
            if case .unchangedToast = value {
                unchanged.append(column.name)
                continue
            }
            if !first { writer.append(byte: UInt8(ascii: ",")) }
            first = false
            writer.appendString(column.name)
            writer.append(byte: UInt8(ascii: ":"))
            switch value {
            case .null, .unchangedToast:
                writer.appendASCII("null")
            case .text(let text):
                let shape = ValueShape.builtin(column.typeOID) ?? shapes[column.typeOID] ?? .text
                let mark = writer.bytes.count
                do {
                    try ValueJSON.append(text, shape: shape, to: &writer)
                } catch {
                    writer.truncate(to: mark)
                    warnings.append("\(relation.namespace).\(relation.name).\(column.name): \(error); sending its text instead")
                    writer.appendString(utf8: text)
                }
            }
        }
        writer.append(byte: UInt8(ascii: "}"))
        return Encoded(row: RawJSON(trusted: writer.bytes), unchanged: unchanged, warnings: warnings)
    }
}
