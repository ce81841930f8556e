import RowcastCore

/// Tests name tables as text, `"public.orders"`, as users do.
extension TableName: ExpressibleByStringLiteral {
    package init(stringLiteral value: String) {
        self = TableName(parsing: value) ?? TableName(schema: "", name: value)
    }
}
