import Testing
@testable import RowcastCore

/// The credential's row rules (a JWT's `rows` claim) as ``Subscription/verdict(_:)``
/// applies them: for each op, in and out of view, and with the client's own filter,
/// which only ever narrows.
@Suite struct RowRuleTests {
    func record(_ op: Operation, row: String? = nil, old: String? = nil, unchanged: [String]? = nil) throws -> ChangeRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: op)
        record.schema = "public"
        record.table = "orders"
        record.row = try row.map { try RawJSON(validating: Array($0.utf8)) }
        record.old = try old.map { try RawJSON(validating: Array($0.utf8)) }
        record.unchanged = unchanged
        return record
    }

    func tenant(_ id: Int, ops: Set<Operation>? = nil, filter: String? = nil, extra: [String] = []) throws -> Subscription {
        Subscription(
            tables: ["public.orders"], ops: ops, filter: try filter.map { try RowFilter(parsing: $0) },
            rules: ["public.orders": try (["tenant=eq.\(id)"] + extra).map { try RowFilter(parsing: $0) }]
        )
    }

    func verdict(_ subscription: Subscription, _ record: ChangeRecord) -> Subscription.Verdict {
        var values = RecordValues(record)
        return subscription.verdict(&values)
    }

    @Test func eachOpIsInViewWhenItsRowMeetsTheRule() throws {
        let one = try tenant(1)
        #expect(verdict(one, try record(.insert, row: #"{"id":1,"tenant":1}"#)) == .send)
        #expect(verdict(one, try record(.insert, row: #"{"id":1,"tenant":2}"#)) == .skip)
        #expect(verdict(one, try record(.delete, old: #"{"id":1,"tenant":1}"#)) == .send)
        #expect(verdict(one, try record(.delete, old: #"{"id":1,"tenant":2}"#)) == .skip)
        // A delete whose old row lacks the column (a key only) reaches nobody with a rule.
        #expect(verdict(one, try record(.delete, old: #"{"id":1}"#)) == .skip)
        #expect(verdict(one, try record(.truncate)) == .send)
        // Numbers compare as numbers: 1.0 is tenant 1; a string "1" is not a number.
        #expect(verdict(one, try record(.insert, row: #"{"id":1,"tenant":1.0}"#)) == .send)
    }

    @Test func anUpdateThatCrossesTheRuleLeavesOrEntersTheView() throws {
        let one = try tenant(1), two = try tenant(2), three = try tenant(3)
        let move = try record(.update, row: #"{"id":1,"tenant":2}"#, old: #"{"id":1,"tenant":1}"#)
        #expect(verdict(one, move) == .leave)
        #expect(verdict(two, move) == .enter)
        #expect(verdict(three, move) == .skip)
        let stay = try record(.update, row: #"{"id":1,"tenant":1,"v":2}"#, old: #"{"id":1,"tenant":1,"v":1}"#)
        #expect(verdict(one, stay) == .send)
        #expect(verdict(two, stay) == .skip)
        // An old row not known (replication without REPLICA IDENTITY FULL) enters: an upsert.
        #expect(verdict(one, try record(.update, row: #"{"id":1,"tenant":1}"#)) == .enter)
        #expect(verdict(two, try record(.update, row: #"{"id":1,"tenant":1}"#)) == .skip)
        // A column the server left out as unchanged is read from the old row.
        let toasted = try record(.update, row: #"{"id":1}"#, old: #"{"id":1,"tenant":1}"#, unchanged: ["tenant"])
        #expect(verdict(one, toasted) == .send)
    }

    @Test func whatLeavesAndEntersCarriesNothingOfTheRowOnTheOtherSide() throws {
        var move = try record(.update, row: #"{"id":1,"tenant":2,"secret":"two"}"#, old: #"{"id":1,"tenant":1,"secret":"one"}"#)
        move.unchanged = ["big"]
        let leaving = String(decoding: move.leavingView.jsonBytes(), as: UTF8.self)
        #expect(leaving.contains(#""op":"delete""#) && leaving.contains(#""reason":"left_view""#) && leaving.contains(#""secret":"one""#))
        #expect(!leaving.contains("two") && !leaving.contains("\"row\"") && !leaving.contains("big"))
        let entering = String(decoding: move.enteringView.jsonBytes(), as: UTF8.self)
        #expect(entering.contains(#""op":"insert""#) && entering.contains(#""reason":"entered_view""#) && entering.contains(#""secret":"two""#))
        #expect(!entering.contains("one") && !entering.contains("\"old\""))
    }

    @Test func theClientsOwnOpsAndFilterOnlyNarrow() throws {
        let move = try record(.update, row: #"{"id":1,"tenant":2,"s":"b"}"#, old: #"{"id":1,"tenant":1,"s":"a"}"#)
        // What leaves is a delete: a client that asked for updates only does not get it.
        #expect(verdict(try tenant(1, ops: [.update]), move) == .skip)
        #expect(verdict(try tenant(1, ops: [.delete]), move) == .leave)
        #expect(verdict(try tenant(2, ops: [.insert]), move) == .enter)
        // The filter reads the row the client would get: the old one when it leaves.
        #expect(verdict(try tenant(1, filter: "s=eq.a"), move) == .leave)
        #expect(verdict(try tenant(1, filter: "s=eq.b"), move) == .skip)
        #expect(verdict(try tenant(2, filter: "s=eq.b"), move) == .enter)
        // A filter that names another tenant widens nothing.
        #expect(verdict(try tenant(1, filter: "tenant=eq.2"), try record(.insert, row: #"{"id":1,"tenant":2}"#)) == .skip)
        // Several conditions: all must hold.
        let both = try tenant(1, extra: ["region=eq.eu"])
        #expect(verdict(both, try record(.insert, row: #"{"tenant":1,"region":"eu"}"#)) == .send)
        #expect(verdict(both, try record(.insert, row: #"{"tenant":1,"region":"us"}"#)) == .skip)
        #expect(verdict(both, try record(.update, row: #"{"tenant":1,"region":"us"}"#, old: #"{"tenant":1,"region":"eu"}"#)) == .leave)
    }

    @Test func aTableWithoutARuleIsWholeAndOtherRecordsAreUnchanged() throws {
        let one = try tenant(1)
        var whole = one
        whole.tables = nil
        var other = try record(.insert, row: #"{"tenant":9}"#)
        other.table = "products"
        #expect(verdict(whole, other) == .send)
        var notify = ChangeRecord(cursor: .trigger(stream: 1, sequence: 2), source: .trigger, op: .notify)
        notify.channel = "c"
        #expect(verdict(whole, notify) == .send)
    }

    /// A value finds a client's equality rule by key whenever the rule would match it:
    /// the index never hides a record from a client that should get it.
    @Test(arguments: [
        ("7", "7", true), ("7", "7.0", true), ("7", "7e0", true), ("7", "\"7\"", true), ("0", "-0", true),
        ("abc", "\"abc\"", true), ("true", "true", true), ("null", "null", true), ("Infinity", "\"Infinity\"", true),
        ("7", "8", false), ("é", "\"é\"", true),
    ])
    func anEqualValueHasOneOfTheRulesKeys(_ rule: String, _ json: String, _ equal: Bool) throws {
        let filter = try RowFilter(parsing: "c=eq.\(rule)")
        var values = RecordValues(try record(.insert, row: "{\"c\":\(json)}"))
        #expect(filter.matches(&values) == equal)
        let keys = try #require(filter.indexKeys(in: "public.orders"))
        let found = values.indexKey(of: "c", side: .new)
        let key = try #require(found)
        #expect(keys.contains(key) == equal, "\(rule) against \(json)")
    }

    @Test func floatColumnsAndRangesAreNotIndexed() throws {
        #expect(try RowFilter(parsing: "c=lt.7").indexKeys(in: "public.orders") == nil)
        let float = try RowFilter(parsing: "c=eq.0.1").resolved(numberIn: ["public.orders"], float8In: ["public.orders"])
        #expect(float.indexKeys(in: "public.orders") == nil)
        #expect(float.indexKeys(in: "public.other") != nil)
    }
}

/// An update that brings a row into a client's view, in replication mode with unchanged
/// TOASTed columns: the client never saw them, so they come from the whole old row.
@Suite struct EnteringViewTests {
    @Test func unchangedColumnsAreTakenFromTheOldRowInTheTablesOrder() throws {
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .replication, op: .update)
        record.row = RawJSON(trusted: Array(#"{"id":1,"tenant":1}"#.utf8))
        record.old = RawJSON(trusted: Array(#"{"id":1,"big":"xxxx","tenant":2,"note":null}"#.utf8))
        record.unchanged = ["big", "note"]
        let entering = record.enteringView
        #expect(entering.row.map { String(decoding: $0.bytes, as: UTF8.self) } == #"{"id":1,"big":"xxxx","tenant":1,"note":null}"#)
        #expect(entering.unchanged == nil && entering.old == nil && entering.op == .insert)
        // Without the old row, what is missing stays named.
        record.old = nil
        #expect(record.enteringView.unchanged == ["big", "note"])
    }
}
