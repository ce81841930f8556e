/// A table as users name it on the command line: `schema.table`, or `table` for `public`.
package struct TableName: Sendable, Hashable, Comparable, CustomStringConvertible {
    package let schema: String
    package let name: String

    package init(schema: String, name: String) {
        self.schema = schema
        self.name = name
    }

    /// Parses `schema.table` or `table`; nil for an empty part or more than one dot.
    package init?(parsing text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        switch parts.count {
        case 1 where !parts[0].isEmpty:
            self.init(schema: "public", name: String(parts[0]))
        case 2 where !parts[0].isEmpty && !parts[1].isEmpty:
            self.init(schema: String(parts[0]), name: String(parts[1]))
        default:
            return nil
        }
    }

    /// Ordered as `schema.table` text.
    package static func < (lhs: TableName, rhs: TableName) -> Bool {
        (lhs.schema, lhs.name) < (rhs.schema, rhs.name)
    }

    /// `schema.table`.
    package var description: String { schema + "." + name }

    /// The name quoted for SQL: `"schema"."table"`.
    package var quoted: String { Self.quoteIdentifier(schema) + "." + Self.quoteIdentifier(name) }

    /// Quotes an identifier the way `quote_ident` does when quoting is needed.
    package static func quoteIdentifier(_ identifier: String) -> String {
        var quoted = "\""
        for character in identifier {
            quoted.append(character)
            if character == "\"" { quoted.append(character) }
        }
        quoted.append("\"")
        return quoted
    }
}
