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
        let parts = text.split(scalar: ".")
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
        // By scalar: a quote followed by a combining mark is one Character, and as a
        // Character it is no quote, but PostgreSQL reads the quote's byte all the same.
        var quoted = String.UnicodeScalarView()
        quoted.append("\"")
        for scalar in identifier.unicodeScalars {
            quoted.append(scalar)
            if scalar == "\"" { quoted.append(scalar) }
        }
        quoted.append("\"")
        return String(quoted)
    }
}

extension StringProtocol {
    /// The parts between every `separator` scalar, empty ones included. Splitting on
    /// `Character`s misses a separator followed by a combining mark (`.` + U+0301 is one
    /// Character), which then joins the parts it should have parted.
    package func split(scalar separator: Unicode.Scalar) -> [String] {
        unicodeScalars.split(separator: separator, omittingEmptySubsequences: false).map { String(String.UnicodeScalarView($0)) }
    }
}
