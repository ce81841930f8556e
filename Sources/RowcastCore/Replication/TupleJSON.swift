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

    /// What every row of one relation needs, worked out once per Relation message:
    /// each column's `"name":` already escaped, and its shape.
    struct Plan {
        let relation: Relation
        /// The escaped keys back to back; column `i`'s is `keys[keyStarts[i]..<keyStarts[i + 1]]`.
        let keys: [UInt8]
        let keyStarts: [Int]
        let shapes: [ValueShape]

        /// A type whose shape is unknown is written as its text, as `to_jsonb` does
        /// for types without a cast.
        init(_ relation: Relation, shapes known: [UInt32: ValueShape]) {
            self.relation = relation
            var writer = JSONWriter(capacity: relation.columns.count * 16)
            var starts: [Int] = []
            starts.reserveCapacity(relation.columns.count + 1)
            for column in relation.columns {
                starts.append(writer.bytes.count)
                writer.appendString(column.name)
                writer.append(byte: UInt8(ascii: ":"))
            }
            starts.append(writer.bytes.count)
            keys = writer.bytes
            keyStarts = starts
            self.shapes = relation.columns.map { ValueShape.builtin($0.typeOID) ?? known[$0.typeOID] ?? .text }
        }
    }

    /// `keysOnly` keeps the replica identity's columns (an old key).
    static func encode(_ tuple: TupleData, plan: Plan, keysOnly: Bool) throws(ReplicationSession.Violation) -> Encoded {
        let relation = plan.relation
        guard tuple.values.count == relation.columns.count else {
            throw .init("a tuple of \(tuple.values.count) columns for \(relation.namespace).\(relation.name), which has \(relation.columns.count)")
        }
        var unchanged: [String] = []
        var warnings: [String] = []
        var capacity = 2 + plan.keys.count
        for value in tuple.values {
            if case .text(let bytes) = value { capacity += bytes.count + 8 } else { capacity += 5 }
        }
        var writer = JSONWriter(capacity: capacity)
        writer.append(byte: UInt8(ascii: "{"))
        var first = true
        for index in tuple.values.indices {
            if keysOnly && !relation.columns[index].isKey { continue }
            let value = tuple.values[index]
            if case .unchangedToast = value {
                unchanged.append(relation.columns[index].name)
                continue
            }
            if !first { writer.append(byte: UInt8(ascii: ",")) }
            first = false
            writer.appendRaw(plan.keys[plan.keyStarts[index]..<plan.keyStarts[index + 1]])
            switch value {
            case .null, .unchangedToast:
                writer.appendASCII("null")
            case .text(let text):
                let mark = writer.bytes.count
                do {
                    try ValueJSON.append(text, shape: plan.shapes[index], to: &writer)
                } catch {
                    writer.truncate(to: mark)
                    warnings.append("\(relation.namespace).\(relation.name).\(relation.columns[index].name): \(error); sending its text instead")
                    writer.appendString(utf8: text)
                }
            }
        }
        writer.append(byte: UInt8(ascii: "}"))
        return Encoded(row: RawJSON(trusted: writer.bytes), unchanged: unchanged, warnings: warnings)
    }
}
