import Testing
@testable import RowcastCore
import RowcastTestSupport

@Suite struct SubscriptionTests {
    func record(_ op: Operation, table: String = "orders", row: String?, old: String? = nil) throws -> ChangeRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: op)
        record.schema = "public"
        record.table = table
        record.row = try row.map { try RawJSON(validating: Array($0.utf8)) }
        record.old = try old.map { try RawJSON(validating: Array($0.utf8)) }
        return record
    }

    @Test func tablesAndOps() throws {
        let subscription = Subscription(tables: ["public.orders"], ops: [.insert, .delete], filter: nil)
        #expect(subscription.matches(try record(.insert, row: "{}")))
        #expect(!subscription.matches(try record(.update, row: "{}")))
        #expect(!subscription.matches(try record(.insert, table: "users", row: "{}")))
        var notify = ChangeRecord(cursor: .trigger(stream: 1, sequence: 2), source: .trigger, op: .notify)
        notify.channel = "c"
        #expect(!Subscription(tables: ["public.orders"], ops: nil, filter: nil).matches(notify))
        #expect(Subscription.everything.matches(notify))
    }

    @Test(arguments: [
        ("id=eq.7", true), ("id=neq.7", false), ("id=lt.10", true), ("id=lte.7", true), ("id=gt.7", false),
        ("id=gte.7.0", true), ("id=in.(1,7,9)", true), ("id=in.(1,2)", false),
        ("status=eq.paid", true), ("status=neq.paid", false), ("status=in.(open,paid)", true), ("status=lt.zzz", true),
        ("amount=gt.10.4", true), ("amount=lt.10.5", false), ("flag=eq.true", true), ("flag=eq.false", false),
        ("note=eq.null", true), ("missing=eq.1", false), ("tags=eq.x", false), ("price=eq.1e2", true),
        // As SQL's `<>`, which is null (no match) when the column is null.
        ("note=neq.5", false), ("note=neq.x", false), ("note=neq.null", false), ("status=neq.null", true),
    ])
    func filtersCompareWithTheColumnsJSONValue(_ filter: String, _ expected: Bool) throws {
        let row = #"{"id": 7, "status": "paid", "amount": 10.50, "flag": true, "note": null, "tags": ["x"], "price": 100}"#
        let parsed = try RowFilter(parsing: filter)
        #expect(parsed.matches(try RawJSON(validating: Array(row.utf8))) == expected, "\(filter)")
        #expect(parsed.description == filter)
    }

    /// In a number column, `to_jsonb` writes NaN and the infinities as JSON strings:
    /// they order as PostgreSQL orders them (`-Infinity` < numbers < `Infinity` <
    /// `NaN`), not as text. In a text column the same strings are text.
    @Test(arguments: [
        (#""-Infinity""#, "x=gt.-5", false), (#""-Infinity""#, "x=lt.-5", true), (#""-Infinity""#, "x=eq.-Infinity", true),
        (#""Infinity""#, "x=gt.1e300", true), (#""Infinity""#, "x=lt.5", false), (#""Infinity""#, "x=eq.Infinity", true),
        (#""NaN""#, "x=gt.Infinity", true), (#""NaN""#, "x=eq.NaN", true), (#""NaN""#, "x=neq.NaN", false),
        ("5", "x=lt.Infinity", true), ("5", "x=lt.NaN", true), ("5", "x=gt.-Infinity", true), (#""NaN""#, "x=in.(1,NaN)", true),
    ])
    func nonFiniteNumbersOrderAsPostgreSQLOrdersThem(_ value: String, _ filter: String, _ expected: Bool) throws {
        let numeric = try RowFilter(parsing: filter).resolved(numberIn: ["public.orders"])
        #expect(Subscription(tables: nil, ops: nil, filter: numeric).matches(try record(.insert, row: #"{"x": \#(value)}"#)) == expected, "\(value) \(filter)")
    }

    @Test func inATextColumnTheSameStringsAreText() throws {
        let text = try RowFilter(parsing: "x=gt.-5")
        // "-Infinity" > "-5" as text ("I" after "5"), unlike the number.
        #expect(Subscription(tables: nil, ops: nil, filter: text).matches(try record(.insert, row: #"{"x": "-Infinity"}"#)))
        let numberElsewhere = text.resolved(numberIn: ["public.users"])
        #expect(Subscription(tables: nil, ops: nil, filter: numberElsewhere).matches(try record(.insert, row: #"{"x": "-Infinity"}"#)))
    }

    /// Strings compare byte by byte, as PostgreSQL's C collation and its deterministic
    /// equality do: `é` (U+00E9) and `e` + U+0301 are different strings, and the second
    /// sorts first. Swift's own comparison took them for equal.
    @Test(arguments: [
        ("e\u{301}", "s=eq.\u{E9}", false), ("e\u{301}", "s=neq.\u{E9}", true), ("e\u{301}", "s=lt.\u{E9}", true),
        ("e\u{301}", "s=in.(\u{E9},x)", false), ("\u{E9}", "s=in.(\u{E9},x)", true), ("\u{E9}", "s=eq.\u{E9}", true),
        ("Z", "s=lt.a", true), ("\u{E9}", "s=gt.z", true), ("ab", "s=gt.a", true), ("a", "s=lt.ab", true),
    ])
    func stringsCompareByteByByteAsPostgreSQLsCCollation(_ value: String, _ filter: String, _ expected: Bool) throws {
        let row = #"{"s": "\#(value)"}"#
        #expect(try RowFilter(parsing: filter).matches(try RawJSON(validating: Array(row.utf8))) == expected, "\(value.unicodeScalars.map { String($0.value, radix: 16) }) \(filter)")
    }

    /// An `in` list is looked up (a set of strings, a sorted array of numbers), not
    /// compared value by value: it matches exactly what `eq` with one of its values
    /// matches, for random rows and lists, in number columns and others.
    @Test func anInListMatchesWhatEqMatchesWithAnyOfItsValues() throws {
        var random = SplitMix(seed: 23)
        let pool = ["1", "1.0", "1e0", "2", "-0", "0", "10", "NaN", "Infinity", "-Infinity", "x", "X", "\u{E9}", "e\u{301}", "true", "null", "01"]
        let jsonValues = ["1", "1.00", "2", "0", "-0.0", "10", "1e1", #""NaN""#, #""Infinity""#, #""-Infinity""#, #""x""#, #""\u00e9""#,
            #""e\u0301""#, "true", "false", "null", #""1""#, #""""#, "[1]", #"{"a":1}"#]
        for _ in 0..<2_000 {
            let list = (0..<Int.random(in: 1...6, using: &random)).map { _ in pool.randomElement(using: &random)! }
            let value = jsonValues.randomElement(using: &random)!
            let row = try RawJSON(validating: Array(#"{"c": \#(value)}"#.utf8))
            for numeric in [false, true] {
                func filter(_ text: String) throws -> Subscription {
                    let parsed = try RowFilter(parsing: text)
                    return Subscription(tables: nil, ops: nil, filter: numeric ? parsed.resolved(numberIn: ["public.orders"]) : parsed)
                }
                var record = try self.record(.insert, row: nil)
                record.row = row
                let any = try list.contains { try filter("c=eq.\($0)").matches(record) }
                let listed = try filter("c=in.(\(list.joined(separator: ",")))").matches(record)
                #expect(listed == any, "c=in.(\(list.joined(separator: ","))) on \(value), number column: \(numeric)")
            }
        }
    }

    @Test func inListsAreBounded() throws {
        let hundred = "id=in.(" + (1...100).map(String.init).joined(separator: ",") + ")"
        #expect(try RowFilter(parsing: hundred).values.count == 100)
        #expect(throws: RowFilterError.self) { try RowFilter(parsing: "id=in.(" + (1...101).map(String.init).joined(separator: ",") + ")") }
    }

    @Test func deletesAreFilteredOnTheOldRow() throws {
        let subscription = Subscription(tables: nil, ops: nil, filter: try RowFilter(parsing: "id=eq.3"))
        #expect(subscription.matches(try record(.delete, row: nil, old: #"{"id": 3}"#)))
        #expect(!subscription.matches(try record(.delete, row: nil, old: #"{"id": 4}"#)))
        #expect(!subscription.matches(try record(.truncate, row: nil)))
    }

    @Test(arguments: ["", "id", "=eq.1", "id=", "id=like.x", "id=eq", "id=in.1,2", "id=in.("])
    func malformedFiltersAreRejected(_ text: String) {
        #expect(throws: RowFilterError.self) { try RowFilter(parsing: text) }
    }

    @Test func filtersAreCheckedAgainstTheColumnsTheCatalogNamed() throws {
        let orders = TableName(schema: "public", name: "orders")
        let users = TableName(schema: "public", name: "users")
        let columns: [TableName: [String: ColumnKind]] = [
            orders: ["id": .number, "paid": .bool, "note": .other],
            users: ["id": .number, "name": .other],
        ]
        func check(_ filter: String, _ tables: Set<TableName>? = nil) throws {
            try RowFilter(parsing: filter).check(against: columns, tables: tables)
        }
        try check("id=gt.7")
        try check("id=in.(1,2,null)")
        try check("note=eq.x", [orders])
        try check("name=eq.ann")  // users has it: enough when no table is named
        try check("paid=eq.true", [orders])
        try check("whatever=eq.1", [TableName(schema: "public", name: "unknown")])  // columns not known: passes
        #expect(throws: RowFilterError.unknownColumn("public.orders has no column \"name\" (its columns: id, note, paid)")) { try check("name=eq.ann", [orders]) }
        #expect(throws: RowFilterError.unknownColumn("none of public.orders, public.users has a column \"nope\"")) { try check("nope=eq.1") }
        #expect(throws: RowFilterError.incomparable("id is a number, so \"abc\" never compares with it (fix: a number, e.g. id=gt.7)")) { try check("id=gt.abc") }
        #expect(throws: RowFilterError.incomparable("paid is a boolean, so \"yes\" never compares with it (fix: paid=eq.true or paid=eq.false)")) { try check("paid=eq.yes", [orders]) }
    }

    /// A thousand clients filtering on the same column of one record cost one scan of
    /// its row, and each still gets its own answer.
    @Test func aFilteredColumnIsParsedOncePerRecordWhateverTheNumberOfClients() throws {
        var values = RecordValues(try record(.insert, row: #"{"id": 7, "title": "seven", "price": 12.5}"#))
        var matched = 0
        for n in 0..<1_000 {
            let subscription = Subscription(tables: nil, ops: nil, filter: try RowFilter(parsing: "id=lte.\(n)"))
            if subscription.matches(&values) { matched += 1 }
        }
        #expect(matched == 993)
        let byTitle = Subscription(tables: nil, ops: nil, filter: try RowFilter(parsing: "title=eq.seven"))
        #expect(byTitle.matches(&values))
        #expect(values.scans == 2)
    }
}
