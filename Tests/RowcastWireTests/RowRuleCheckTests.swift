import RowcastCore
@testable import RowcastWire
import Testing

/// The credential's row rules as a subscription takes them from the catalog: on
/// partitions through their partitioned table, kept for tables not captured yet (whose
/// records then wait for a new subscription), and refused where rowcast would not
/// compare as PostgreSQL does.
@Suite struct RowRuleCheckTests {
    static func capture() -> CaptureState {
        let state = CaptureState()
        state.setCapturedTables(["public.orders", "public.p_1", "public.p_2"])
        state.setColumns([
            "public.orders": ["tenant": .number, "code": .other, "name": .text, "owner": .uuid],
            "public.p_1": ["tenant": .number], "public.p_2": ["tenant": .number],
        ])
        state.setPartitionAncestors(["public.p_1": ["public.p"], "public.p_2": ["public.p"]], of: ["public.orders", "public.p_1", "public.p_2"])
        return state
    }

    static func subscription(_ rules: [TableName: [String]], tables: Set<TableName>? = nil) throws -> Subscription {
        Subscription(tables: tables, ops: nil, filter: nil, rules: try rules.mapValues { try $0.map { try RowFilter(parsing: $0) } })
    }

    @Test func aPartitionedTablesRuleIsItsPartitions() throws {
        let checked = try Self.subscription(["public.p": ["tenant=eq.1"]]).checkingRules(by: Self.capture())
        #expect(checked.rules["public.p_1"]?.map(\.description) == ["tenant=eq.1"])
        #expect(checked.rules["public.p_2"]?.map(\.description) == ["tenant=eq.1"])
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
        (record.schema, record.table, record.row) = ("public", "p_2", RawJSON(trusted: Array(#"{"tenant":2}"#.utf8)))
        #expect(!checked.matches(record))
        record.row = RawJSON(trusted: Array(#"{"tenant":1}"#.utf8))
        #expect(checked.matches(record))
    }

    @Test func aTableNotCapturedYetKeepsItsRuleAndSendsNothingUntilSubscribedAgain() throws {
        let checked = try Self.subscription(["public.later": ["tenant=eq.1"]]).checkingRules(by: Self.capture())
        #expect(checked.rules["public.later"]?.map(\.description) == ["tenant=eq.1"])
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
        (record.schema, record.table, record.row) = ("public", "later", RawJSON(trusted: Array(#"{"tenant":1}"#.utf8)))
        #expect(!checked.matches(record))
        // A table without a rule, new or not, is whole; one captured since is not known.
        record.table = "orders"
        record.row = RawJSON(trusted: Array(#"{"tenant":7}"#.utf8))
        #expect(checked.matches(record))
        record.table = "brand_new"
        #expect(!checked.matches(record))
    }

    @Test(arguments: [
        ("code=eq.ab", "compared by rowcast as text"), ("name=gt.m", "whose order follows its collation"),
        ("owner=eq.A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "lowercase, hyphenated"), ("owner=lt.a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "takes eq, neq or in"),
    ])
    func rulesRowcastCannotCompareExactlyAreRefused(_ rule: String, _ cause: String) throws {
        let subscription = try Self.subscription(["public.orders": [rule]])
        do throws(ClientMessageError) {
            _ = try subscription.checkingRules(by: Self.capture())
            Issue.record("\(rule) was accepted")
        } catch {
            #expect(error.code == "forbidden" && error.message.contains(cause), "\(rule): \(error.message)")
        }
    }

    @Test func rulesRowcastComparesExactlyAreTaken() throws {
        let rules = ["tenant=gte.-1", "name=in.(a,b)", "owner=eq.a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "name=neq.x"]
        let checked = try Self.subscription(["public.orders": rules]).checkingRules(by: Self.capture())
        #expect(checked.rules["public.orders"]?.count == 4)
        // Resolved: "-Infinity" in a number column is below -1, not text after it.
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
        (record.schema, record.table, record.row) = ("public", "orders", RawJSON(trusted: Array(#"{"tenant":"-Infinity","name":"a","owner":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}"#.utf8)))
        #expect(!checked.matches(record))
    }

    /// A partition that appears while serving: until the capture has looked up what it
    /// is a partition of, rule holders get none of it; then its parent's rule is its own.
    @Test func aPartitionLearnedWhileServingTakesItsParentsRule() throws {
        let state = Self.capture()
        state.capture("public.p_3", columns: ["tenant": .number])
        let rules = try Self.subscription(["public.p": ["tenant=eq.1"]])
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
        (record.schema, record.table, record.row) = ("public", "p_3", RawJSON(trusted: Array(#"{"tenant":3}"#.utf8)))
        #expect(!(try rules.checkingRules(by: state)).matches(record))
        state.learnAncestors(of: "public.p_3", ["public.p"])
        let checked = try rules.checkingRules(by: state)
        #expect(!checked.matches(record))
        record.row = RawJSON(trusted: Array(#"{"tenant":1}"#.utf8))
        #expect(checked.matches(record))
    }

    /// Types whose values are not compared as PostgreSQL compares them are no rule's:
    /// money and oid are in the numeric category but their JSON is text; a case-blind
    /// collation's text is not bytes (a Relation message, which sees no collation, is
    /// read with the catalog: `ReplicationKindsTests`).
    @Test func moneyCaseBlindTextAndTheirRelationMessagesStayOutOfRules() throws {
        #expect(ColumnKind(typeCategory: "N", type: 790) == .other)
        #expect(ColumnKind(typeCategory: "N", type: 26) == .other)
        #expect(ColumnKind(typeCategory: "N", type: 1700) == .number)
        #expect(ColumnKind(typeCategory: "S", type: 25, deterministic: false) == .other)
        // "char" (one byte, written as an escape past ASCII) and name (cut to 63 bytes).
        #expect(ColumnKind(typeOID: 18) == .other && ColumnKind(typeOID: 19) == .other)
        #expect(ColumnKind(typeCategory: "S", type: 18) == .other && ColumnKind(typeCategory: "S", type: 19) == .other)
        let state = Self.capture()
        #expect(throws: ClientMessageError.self) { try Self.subscription(["public.orders": ["code=eq.ab"]]).checkingRules(by: state) }
    }

    /// The catalog changed while subscribed: rules are checked again, never to widen.
    @Test func rulesCheckedAgainAfterTheCatalogChangedNeverWiden() throws {
        let state = Self.capture()
        let before = state.catalogVersion
        var subscription = try Self.subscription(["public.orders": ["tenant=neq.42", "name=neq.x"], "public.p": ["tenant=eq.1"]]).checkingRules(by: state)
        #expect(subscription.catalogVersion == before)
        func row(_ table: String, _ json: String) -> ChangeRecord {
            var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
            (record.schema, record.table, record.row) = ("public", table, RawJSON(trusted: Array(json.utf8)))
            return record
        }
        // tenant became text: '42' is 42's text, which neq.42 keeps out.
        state.capture("public.orders", columns: ["tenant": .text, "code": .other, "name": .text, "owner": .uuid])
        #expect(state.catalogVersion > before)
        var (checked, dropped) = subscription.recheckingRules(by: state)
        #expect(dropped.isEmpty)
        #expect(!checked.matches(row("orders", #"{"tenant":"42","name":"a"}"#)) && checked.matches(row("orders", #"{"tenant":"43","name":"a"}"#)))
        subscription = checked
        // name became case-blind: the rule cannot apply; orders leaves the view.
        state.capture("public.orders", columns: ["tenant": .text, "code": .other, "name": .other, "owner": .uuid])
        (checked, dropped) = subscription.recheckingRules(by: state)
        #expect(dropped.map(\.0) == ["public.orders"] && dropped.first?.1.contains("compared by rowcast as text") == true, "\(dropped)")
        #expect(!checked.matches(row("orders", #"{"tenant":"43","name":"a"}"#)))
        // Back to text: the table stays out until the client subscribes again.
        state.capture("public.orders", columns: ["tenant": .text, "code": .other, "name": .text, "owner": .uuid])
        #expect(!checked.recheckingRules(by: state).0.matches(row("orders", #"{"tenant":"43","name":"a"}"#)))
        subscription = checked
        // p_1 detached from p: its rule would be none, so it leaves the view; a table
        // captured since stays unknown.
        state.capture("public.late", columns: ["tenant": .number])
        state.setPartitionAncestors(["public.p_2": ["public.p"]], of: ["public.orders", "public.p_1", "public.p_2", "public.late"])
        (checked, dropped) = subscription.recheckingRules(by: state)
        #expect(dropped.map(\.0) == ["public.p_1"], "\(dropped)")
        #expect(!checked.matches(row("p_1", #"{"tenant":1}"#)) && checked.matches(row("p_2", #"{"tenant":1}"#)))
        #expect(!checked.matches(row("late", #"{"tenant":1}"#)))
    }

    /// A table the client saw whole that is attached as a partition of a ruled table
    /// takes that rule from then on (narrower, so it stays in view).
    @Test func aTableAttachedToARuledTableTakesItsRule() throws {
        let state = Self.capture()
        let subscription = try Self.subscription(["public.p": ["tenant=eq.1"]]).checkingRules(by: state)
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
        (record.schema, record.table, record.row) = ("public", "orders", RawJSON(trusted: Array(#"{"tenant":2}"#.utf8)))
        #expect(subscription.matches(record))
        state.learnAncestors(of: "public.orders", ["public.p"])
        let (checked, dropped) = subscription.recheckingRules(by: state)
        #expect(dropped.isEmpty)
        #expect(!checked.matches(record))
        record.row = RawJSON(trusted: Array(#"{"tenant":1}"#.utf8))
        #expect(checked.matches(record))
    }

    /// A rule takes only values of its column kind's JSON shape, so a record written
    /// under another definition of the column fails closed: a string where the column
    /// is a number now, a number where it is text, and a uuid spelled otherwise than
    /// PostgreSQL prints one (`'{A0EE…}'` from when the column was text) under `neq`.
    @Test func aRuleTakesOnlyValuesOfItsColumnsShape() throws {
        let state = Self.capture()
        let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        let checked = try Self.subscription(["public.orders": ["tenant=neq.42", "name=neq.x", "owner=neq.\(uuid)"]]).checkingRules(by: state)
        func sees(_ json: String) -> Bool {
            var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
            (record.schema, record.table, record.row) = ("public", "orders", RawJSON(trusted: Array(json.utf8)))
            return checked.matches(record)
        }
        #expect(sees(#"{"tenant":7,"name":"a","owner":"b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}"#))
        #expect(sees(#"{"tenant":"NaN","name":"a","owner":"b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}"#))
        #expect(!sees(#"{"tenant":"042","name":"a","owner":null}"#))
        #expect(!sees(#"{"tenant":7,"name":5,"owner":null}"#))
        #expect(!sees(#"{"tenant":7,"name":"a","owner":"{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}"}"#))
        #expect(!sees(#"{"tenant":7,"name":"a","owner":"a0eebc999c0b4ef8bb6d6bb9bd380a11"}"#))
    }
}
