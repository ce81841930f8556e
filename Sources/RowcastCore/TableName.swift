/// A table as users name it on the command line: `schema.table`, or `table` for `public`.
public struct TableName: Sendable, Hashable, CustomStringConvertible {
    public let schema: String
    public let name: String

    public init(schema: String, name: String) {
        self.schema = schema
        self.name = name
    }

    /// Parses `schema.table` or `table`; nil for an empty part or more than one dot.
    public init?(parsing text: String) {
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

    /// `schema.table`.
    public var description: String { schema + "." + name }

    /// The name quoted for SQL: `"schema"."table"`.
    public var quoted: String { Self.quoteIdentifier(schema) + "." + Self.quoteIdentifier(name) }

    /// Quotes an identifier the way `quote_ident` does when quoting is needed.
    public static func quoteIdentifier(_ identifier: String) -> String {
        var quoted = "\""
        for character in identifier {
            quoted.append(character)
            if character == "\"" { quoted.append(character) }
        }
        quoted.append("\"")
        return quoted
    }
}
