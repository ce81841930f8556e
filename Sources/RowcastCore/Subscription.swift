/// What one client asked to receive (SPEC section 4, `subscribe`): tables, operations
/// and a PostgREST-style row filter, narrowed by the rows its credential lets it see.
/// Pure: matching takes a record and returns a ``Verdict``.
package struct Subscription: Sendable, Equatable {
    /// The tables; nil means every table (and records without one).
    package var tables: Set<TableName>?
    /// nil means every operation.
    package var ops: Set<Operation>?
    /// A condition on one column of the row (or of `old` for deletes).
    package var filter: RowFilter?
    /// The credential's row rules (a JWT's `rows` claim): for each table named, every
    /// condition must hold for a row to be in the client's view. Set by the server from
    /// the credential, never by the client.
    package var rules: [TableName: [RowFilter]]
    /// With rules: the tables whose columns were known when the client subscribed. A
    /// record of another table (set up, published or partitioned while serving) is not
    /// sent: a rule on it could not be checked, nor told how its column compares, nor
    /// reach it through its partitioned table. The client sees it once it subscribes again.
    package var knownTables: Set<TableName>?
    /// With rules, once checked against the catalog: the credential's rules as it gave
    /// them (``rules`` also holds each partition's share of its partitioned table's, and
    /// the types each compares in), and the ``CaptureState/catalogVersion`` they were
    /// checked at. The broadcaster checks them again when the catalog moves on.
    package var claimedRules: [TableName: [RowFilter]]?
    package var catalogVersion: UInt64?

    /// Everything the client may see (`ready for data`).
    package static let everything = Subscription(tables: nil, ops: nil, filter: nil)

    package init(tables: Set<TableName>?, ops: Set<Operation>?, filter: RowFilter?, rules: [TableName: [RowFilter]] = [:]) {
        self.tables = tables
        self.ops = ops
        self.filter = filter
        self.rules = rules
    }

    /// What a client gets of one record.
    package enum Verdict: Sendable, Equatable {
        /// Nothing.
        case skip
        /// The record as it is.
        case send
        /// An update that took the row out of the client's view: ``ChangeRecord/leavingView``.
        case leave
        /// An update that brought the row into view: ``ChangeRecord/enteringView``.
        case enter
    }

    /// Whether the client gets anything of `record` (``verdict(_:)``).
    package func matches(_ record: ChangeRecord) -> Bool {
        var values = RecordValues(record)
        return verdict(&values) != .skip
    }

    /// Whether the client gets anything of the record behind `values`.
    package func matches(_ values: inout RecordValues) -> Bool {
        verdict(&values) != .skip
    }

    /// What the client gets of the record behind `values`. The broadcaster makes one
    /// ``RecordValues`` per record and asks every candidate client, so the table name is
    /// built once and a column is parsed once per side, not per client.
    ///
    /// Under a row rule (Docs/protocol.md, "Row rules"): an insert is in view when its
    /// row meets the rule, a delete when its old row does; an update whose old and new
    /// rows both meet it is sent as it is, one whose old row met it and new row does not
    /// leaves the view (a delete of the old row), one whose new row meets it and old row
    /// did not (or is unknown) enters it (an insert of the new row). The client's own
    /// `ops` and `filter` then apply to what it would get; they only ever narrow.
    /// A truncate of a table the client sees is sent: it carries no row.
    package func verdict(_ values: inout RecordValues) -> Verdict {
        if let tables {
            guard let table = values.table, tables.contains(table) else { return .skip }
        }
        let op = values.record.op
        if let knownTables, let table = values.table, !knownTables.contains(table) { return .skip }
        guard let table = values.table, let rule = rules[table], !rule.isEmpty else {
            if let ops, !ops.contains(op) { return .skip }
            if let filter, !filter.matches(&values) { return .skip }
            return .send
        }
        func meets(_ side: RecordValues.Side) -> Bool {
            rule.allSatisfy { $0.matches(&values, side: side, strict: true) }
        }
        let verdict: Verdict, side: RecordValues.Side?
        switch op {
        case .insert:
            guard meets(.new) else { return .skip }
            (verdict, side) = (.send, .new)
        case .delete:
            guard meets(.old) else { return .skip }
            (verdict, side) = (.send, .old)
        case .update:
            let now = meets(.new)
            let before = values.record.old != nil && meets(.old)
            switch (before, now) {
            case (true, true): (verdict, side) = (.send, .new)
            case (true, false): (verdict, side) = (.leave, .old)
            case (false, true): (verdict, side) = (.enter, .new)
            case (false, false): return .skip
            }
        case .truncate:
            (verdict, side) = (.send, nil)
        case .message, .notify:
            return .skip
        }
        let seen: Operation = verdict == .leave ? .delete : (verdict == .enter ? .insert : op)
        if let ops, !ops.contains(seen) { return .skip }
        if let filter, !filter.matches(&values, side: side) { return .skip }
        return verdict
    }

    /// Whether a row of `table` as it is now (a snapshot's) is in the client's view and
    /// passes its filter.
    package func sees(_ values: inout RecordValues) -> Bool {
        if let knownTables, let table = values.table, !knownTables.contains(table) { return false }
        if let table = values.table, let rule = rules[table], !rule.allSatisfy({ $0.matches(&values, side: .new, strict: true) }) { return false }
        return filter.map { $0.matches(&values, side: .new) } ?? true
    }

    /// The conditions a row of `table` must meet: the credential's rule and the client's filter.
    package func conditions(on table: TableName) -> [RowFilter] {
        (rules[table] ?? []) + (filter.map { [$0] } ?? [])
    }

    /// Whether a record of `table` needs its values to decide (a rule or a filter applies).
    package func readsValues(of table: TableName?) -> Bool {
        filter != nil || (table.flatMap { rules[$0] }.map { !$0.isEmpty } ?? false)
    }
}

/// One record as subscriptions look at it: its table, and the values of the columns
/// filters asked about, parsed on first use and kept for the next client.
package struct RecordValues {
    /// Which row of the record a condition reads.
    package enum Side: Sendable {
        /// `row`; a column the server left out as unchanged (replication's TOASTed
        /// values) is read from `old` when that has it.
        case new
        /// `old`.
        case old
    }

    package let record: ChangeRecord
    /// `schema.table`, when the record has one.
    package let table: TableName?
    /// Parsed columns of `row` and of `old`; nil when the column is missing.
    private var newColumns: [String: JSONScalar?] = [:]
    private var oldColumns: [String: JSONScalar?] = [:]
    /// How many times a row was scanned for a column (once per distinct column and side).
    package private(set) var scans = 0

    package init(_ record: ChangeRecord) {
        self.record = record
        if let schema = record.schema, let table = record.table {
            self.table = TableName(schema: schema, name: table)
        } else {
            self.table = nil
        }
    }

    /// The value of `column` in `row` (or `old` for a record without `row`), parsed once;
    /// nil when the record has no row or no such column.
    mutating func value(of column: String) -> JSONScalar? {
        value(of: column, side: record.row != nil ? .new : .old)
    }

    /// The value of `column` on one side, parsed once.
    mutating func value(of column: String, side: Side) -> JSONScalar? {
        switch side {
        case .old:
            if let known = oldColumns[column] { return known }
            let parsed = scan(record.old, for: column)
            oldColumns[column] = .some(parsed)
            return parsed
        case .new:
            if let known = newColumns[column] { return known }
            var parsed = scan(record.row, for: column)
            if parsed == nil, record.unchanged?.contains(column) == true { parsed = value(of: column, side: .old) }
            newColumns[column] = .some(parsed)
            return parsed
        }
    }

    private mutating func scan(_ row: RawJSON?, for column: String) -> JSONScalar? {
        guard let row else { return nil }
        scans += 1
        var scanner = JSONScanner(row.bytes)
        var found: Range<Int>?
        do {
            try scanner.scanObject { (key, range) throws(JSONSyntaxError) in
                if key == column { found = range }
            }
        } catch {
            return nil
        }
        return found.map { JSONScalar(Array(row.bytes[$0])) }
    }

    /// The key a value of `column` on `side` is found under in a ``RowIndexKey`` index
    /// (nil: the column is missing, or no equality can match it).
    package mutating func indexKey(of column: String, side: Side) -> RowIndexKey? {
        value(of: column, side: side)?.indexKey
    }
}

/// What a client with an equality rule (`eq`, `in`) is found under: a value that can
/// equal the rule's in some comparison has one of its keys. A number is kept exactly
/// (`42`, `42.0` and `4.2e1` share a key); anything else by its text.
package enum RowIndexKey: Hashable, Sendable {
    case number(negative: Bool, digits: [UInt8], exponent: Int)
    case text([UInt8])

    init(_ number: ExactNumber) {
        self = number.digits.isEmpty ? .number(negative: false, digits: [], exponent: 0) : .number(negative: number.negative, digits: number.digits, exponent: number.exponent)
    }
}

/// `column=op.value`, with op one of `eq neq lt lte gt gte in` (`in.(a,b,c)`), compared
/// with the column's JSON value: numbers numerically, strings as strings, booleans and
/// null by their JSON spelling.
package struct RowFilter: Sendable, Equatable, CustomStringConvertible {
    package enum Comparison: String, Sendable, CaseIterable {
        case eq, neq, lt, lte, gt, gte, `in`
    }

    /// The most values an `in` list takes: a record is compared with each, for each
    /// subscribed client, and a list of 21,000 made every record cost 11 ms.
    package static let maxListValues = 100

    package let column: String
    package let comparison: Comparison
    /// One value, or several for `in`.
    package let values: [String]
    /// Each value as a number, when it is one (parsed once, not at every comparison).
    private let numbers: [NumericOrder?]
    /// For `in`: the values that are numbers, in order (a binary search per record),
    /// and every value's UTF-8 (a set look-up): a hundred values cost a record about
    /// what one does.
    private let sortedNumbers: [NumericOrder]
    private let texts: Set<[UInt8]>
    /// Each value as a `double precision` and as a `real`, when it is one (parsed once).
    private let doubles: [Double?]
    private let singles: [Double?]
    /// The tables whose `column` is a number (set by ``resolved(numberIn:)`` from the
    /// catalog): there a JSON string `"NaN"`, `"Infinity"` or `"-Infinity"` (how
    /// `to_jsonb` writes them) is that number, and orders as PostgreSQL orders it.
    package private(set) var numberIn: Set<TableName> = []
    /// Of those, the tables where `column` is `real`, and `double precision`: compared
    /// in that type.
    package private(set) var float4In: Set<TableName> = []
    package private(set) var float8In: Set<TableName> = []
    /// How `column` compares in each table, as resolved: a row rule takes only values of
    /// the shape such a column gives (``matches(_:side:strict:)``).
    package private(set) var kindIn: [TableName: ColumnKind] = [:]

    /// Parses `column=op.value`; a ``RowFilterError`` says what is wrong. Read by
    /// Unicode scalar, not by Character: `=`, `.`, `(` or `,` followed by a combining
    /// mark is still that separator.
    package init(parsing text: String) throws(RowFilterError) {
        let scalars = text.unicodeScalars[...]
        guard let equals = scalars.firstIndex(of: "="), equals != scalars.startIndex else {
            throw .malformed("expected column=op.value, e.g. id=eq.7")
        }
        column = String(Substring(scalars[..<equals]))
        let rest = scalars[scalars.index(after: equals)...]
        guard let dot = rest.firstIndex(of: ".") else { throw .malformed("expected op.value after '=', e.g. id=eq.7") }
        let name = String(Substring(rest[..<dot]))
        guard let comparison = Comparison(rawValue: name) else {
            throw .malformed("unknown operator \"\(name)\"; use eq, neq, lt, lte, gt, gte or in")
        }
        self.comparison = comparison
        let value = rest[rest.index(after: dot)...]
        if comparison == .in {
            guard value.count >= 2, value.first == "(", value.last == ")" else {
                throw .malformed("in takes a list: \(column)=in.(a,b,c)")
            }
            values = Substring(value.dropFirst().dropLast()).split(scalar: ",")
            // Every record is compared with every value, under the broadcaster's lock.
            guard values.count <= Self.maxListValues else {
                throw .malformed("in takes at most \(Self.maxListValues) values; subscribe to the table and filter on the client, or use a range (gte, lte)")
            }
        } else {
            values = [String(Substring(value))]
        }
        numbers = values.map { NumericOrder(filterValue: $0) }
        sortedNumbers = comparison == .in ? numbers.compactMap { $0 }.sorted() : []
        texts = comparison == .in ? Set(values.map { Array($0.utf8) }) : []
        doubles = values.map { FloatOrder($0, single: false)?.value }
        singles = values.map { FloatOrder($0, single: true)?.value }
    }

    package static func == (lhs: RowFilter, rhs: RowFilter) -> Bool {
        (lhs.column, lhs.comparison, lhs.values) == (rhs.column, rhs.comparison, rhs.values)
    }

    package var description: String {
        column + "=" + comparison.rawValue + "." + (comparison == .in ? "(" + values.joined(separator: ",") + ")" : values[0])
    }

    /// Whether the row's value for `column` satisfies the filter. A missing column never matches.
    package func matches(_ row: RawJSON) -> Bool {
        var record = ChangeRecord(cursor: .trigger(stream: 0, sequence: 0), source: .trigger, op: .insert)
        record.row = row
        var values = RecordValues(record)
        return matches(&values)
    }

    /// Whether the record's value for `column` satisfies the filter; the value is parsed
    /// at most once per record, however many clients filter on it. `side` says which
    /// row to read (nil: `row`, or `old` for a record without one).
    ///
    /// `strict` (a row rule): a value whose shape the column's kind does not give never
    /// matches, whatever the comparison (``fits(_:in:)``): a rule fails closed on a
    /// record written under another definition of its column.
    package func matches(_ record: inout RecordValues, side: RecordValues.Side? = nil, strict: Bool = false) -> Bool {
        guard let value = side.map({ record.value(of: column, side: $0) }) ?? record.value(of: column) else { return false }
        if strict, !kindIn.isEmpty, let table = record.table, !fits(value, in: table) { return false }
        if !float8In.isEmpty || !float4In.isEmpty, let table = record.table {
            if float8In.contains(table) { return matchesFloat(value, single: false) }
            if float4In.contains(table) { return matchesFloat(value, single: true) }
        }
        let numeric = !numberIn.isEmpty && record.table.map(numberIn.contains) == true
        func compare(_ index: Int) -> Int? { value.compare(to: values[index], number: numbers[index], numericColumn: numeric) }
        switch comparison {
        case .eq: return compare(0) == 0
        // As SQL's `<>`: null is not unequal to anything (`neq` never matches it).
        case .neq: return !value.isNull && compare(0).map { $0 != 0 } ?? true
        case .lt: return compare(0).map { $0 < 0 } ?? false
        case .lte: return compare(0).map { $0 <= 0 } ?? false
        case .gt: return compare(0).map { $0 > 0 } ?? false
        case .gte: return compare(0).map { $0 >= 0 } ?? false
        case .in: return value.isAmong(texts: texts, sortedNumbers: sortedNumbers, numericColumn: numeric)
        }
    }
}

extension RowFilter {
    /// The keys under which a value equal to this filter's is found in `table`
    /// (``RowIndexKey``): every value's text, and its number when it is one. Nil when
    /// the filter is not an equality, or the column is a float there (floats equal
    /// across spellings no key captures).
    package func indexKeys(in table: TableName) -> [RowIndexKey]? {
        guard comparison == .eq || comparison == .in, !float4In.contains(table), !float8In.contains(table) else { return nil }
        var keys: [RowIndexKey] = []
        for value in values {
            keys.append(.text(Array(value.utf8)))
            if let number = ExactNumber(value) { keys.append(RowIndexKey(number)) }
        }
        return keys
    }
}

/// How a column's values compare in a filter, from its type (PostgreSQL's type category).
extension RowFilter {
    /// The filter, told which of the tables it may match hold `column` as a number, and
    /// of those which as `real` and `double precision`.
    package func resolved(
        numberIn tables: Set<TableName>, float4In: Set<TableName> = [], float8In: Set<TableName> = [], kinds: [TableName: ColumnKind] = [:]
    ) -> RowFilter {
        var resolved = self
        resolved.numberIn = tables
        resolved.float4In = float4In
        resolved.float8In = float8In
        resolved.kindIn = kinds
        return resolved
    }

    /// Whether `text` is a uuid as PostgreSQL prints it: lowercase hex, hyphenated 8-4-4-4-12.
    static func isCanonicalUUID(_ text: String) -> Bool {
        text.utf8.count == 36 && text.utf8.enumerated().allSatisfy { index, byte in
            [8, 13, 18, 23].contains(index) ? byte == UInt8(ascii: "-") : (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
        }
    }

    /// Whether `value` has the JSON shape a column of the kind the filter was resolved
    /// against gives in `table`: a number (or `"NaN"`, `"Infinity"`, `"-Infinity"`) for
    /// numbers, a string for text and uuids, `true`/`false` for booleans; null for any.
    /// A value of another shape was written under another definition of the column (a
    /// record from before an `ALTER … TYPE`, or one the capture matched before it heard
    /// of the change), which the resolved comparison does not describe.
    func fits(_ value: JSONScalar, in table: TableName) -> Bool {
        guard let kind = kindIn[table] else { return true }
        switch value {
        case .literal("null"): return true
        case .number: return kind.isNumber
        case .string(let text):
            switch kind {
            case .text: return true
            // As PostgreSQL prints a uuid: another spelling was written as text.
            case .uuid: return Self.isCanonicalUUID(text)
            case .number, .float4, .float8: return text == "NaN" || text == "Infinity" || text == "-Infinity"
            case .bool, .other: return false
            }
        case .literal: return kind == .bool
        case .composite: return false
        }
    }

    /// The filter on a `real` (`single`) or `double precision` column: both sides read
    /// into that type, compared as PostgreSQL compares floats (NaN equal to itself and
    /// above everything, -0 equal to 0). A value that is no float never matches.
    private func matchesFloat(_ value: JSONScalar, single: Bool) -> Bool {
        if value.isNull { return false }
        guard let number = value.float(single: single) else { return comparison == .neq }
        let others = single ? singles : doubles
        func order(_ index: Int) -> Int? { others[index].map { FloatOrder.order(number, $0) } }
        switch comparison {
        case .eq: return order(0) == 0
        case .neq: return order(0).map { $0 != 0 } ?? true
        case .lt: return order(0).map { $0 < 0 } ?? false
        case .lte: return order(0).map { $0 <= 0 } ?? false
        case .gt: return order(0).map { $0 > 0 } ?? false
        case .gte: return order(0).map { $0 >= 0 } ?? false
        case .in: return others.contains { $0.map { FloatOrder.order(number, $0) == 0 } == true }
        }
    }
}

/// A float read from a filter's text or a record's value, as PostgreSQL's float4in and
/// float8in read it (correctly rounded), `NaN` and the infinities as `to_jsonb` spells them.
struct FloatOrder {
    let value: Double

    init?(_ text: String, single: Bool) {
        switch text {
        case "NaN": value = .nan
        case "Infinity": value = .infinity
        case "-Infinity": value = -.infinity
        default:
            // Decimal text only (Double would also read hexadecimal, `inf` and `nan`).
            guard ExactNumber(text) != nil else { return nil }
            guard let parsed = single ? Float(text).map(Double.init) : Double(text) else { return nil }
            value = parsed
        }
    }

    /// -1, 0 or 1, NaN equal to itself and above every number.
    static func order(_ a: Double, _ b: Double) -> Int {
        if a.isNaN { return b.isNaN ? 0 : 1 }
        if b.isNaN { return -1 }
        return a < b ? -1 : (a > b ? 1 : 0)
    }
}

/// A number as PostgreSQL orders `numeric` and `float8`: `-Infinity` below every
/// number, `Infinity` above, and `NaN` above everything and equal to itself.
enum NumericOrder: Comparable {
    case negativeInfinity
    case finite(ExactNumber)
    case infinity
    case notANumber

    /// A filter's value: a number, or one of the three spellings `to_jsonb` gives.
    init?(filterValue text: String) {
        if let special = Self(special: text) {
            self = special
        } else if let number = ExactNumber(text) {
            self = .finite(number)
        } else {
            return nil
        }
    }

    /// `to_jsonb`'s strings for a number column's non-finite values.
    init?(special text: String) {
        switch text {
        case "NaN": self = .notANumber
        case "Infinity": self = .infinity
        case "-Infinity": self = .negativeInfinity
        default: return nil
        }
    }

    static func < (a: NumericOrder, b: NumericOrder) -> Bool {
        switch (a, b) {
        case (.finite(let x), .finite(let y)): x < y
        default: a.rank < b.rank
        }
    }

    private var rank: Int {
        switch self {
        case .negativeInfinity: 0
        case .finite: 1
        case .infinity: 2
        case .notANumber: 3
        }
    }
}

package enum ColumnKind: Sendable, Equatable {
    /// int2/4/8, numeric and domains over them: compared exactly, as decimals.
    case number
    /// real and double precision: compared in that type, as PostgreSQL compares a
    /// column with a value written as text (`0.10000000000000001` is the float 0.1).
    case float4
    case float8
    /// bool: `true`, `false`.
    case bool
    /// text, varchar, name and "char": compared as their JSON text, which is the value.
    case text
    /// uuid: its JSON text is the value as PostgreSQL prints it (lowercase, hyphenated).
    case uuid
    /// Everything else (char(n), citext, dates and times, enums, json…): compared as its
    /// JSON text, which is not always how PostgreSQL compares the type.
    case other

    /// Any of the numbers.
    package var isNumber: Bool {
        switch self {
        case .number, .float4, .float8: true
        case .bool, .text, .uuid, .other: false
        }
    }

    /// From a built-in type's OID (what a Relation message names); other types compare as text.
    package init(typeOID: UInt32) {
        switch typeOID {
        case 20, 21, 23, 1700: self = .number  // int8, int2, int4, numeric
        case 700: self = .float4
        case 701: self = .float8
        case 16: self = .bool
        // text and varchar; not name (PostgreSQL cuts what it compares with to 63 bytes)
        // nor "char" (one byte, which to_jsonb writes as an escape past ASCII).
        case 25, 1043: self = .text
        case 2950: self = .uuid
        default: self = .other
        }
    }

    /// From `pg_type.typcategory`, and the type itself (a domain's base type); text
    /// whose collation is not deterministic (case- or accent-blind) compares otherwise.
    package init(typeCategory: String, type: UInt32? = nil, deterministic: Bool = true) {
        switch (typeCategory, type) {
        case (_, 700): self = .float4
        case (_, 701): self = .float8
        // The integers and numeric; not money, oid or reg* (numeric category, text values).
        case ("N", let oid?) where [20, 21, 23, 1700].contains(oid): self = .number
        case ("N", nil): self = .number
        case ("B", _): self = .bool
        case (_, let oid?) where [25, 1043].contains(oid): self = deterministic ? .text : .other
        case (_, 2950): self = .uuid
        default: self = .other
        }
    }
}

extension RowFilter {
    /// Why this condition cannot be a row rule on a column of `kind`: a rule is a
    /// credential's promise, so it is compared only where rowcast compares exactly as
    /// PostgreSQL does. Numbers and booleans with any operator; text, varchar and uuid
    /// for equality (`eq`, `neq`, `in`: their order follows the column's collation, not
    /// rowcast's bytes), a uuid spelled as PostgreSQL prints it. Nil when it can.
    package func ruleRefusal(on kind: ColumnKind) -> String? {
        let equality = comparison == .eq || comparison == .neq || comparison == .in
        switch kind {
        case .number, .float4, .float8, .bool:
            return nil
        case .text:
            return equality ? nil : "\(column) is text, whose order follows its collation: a rule on it takes eq, neq or in"
        case .uuid:
            guard equality else { return "\(column) is a uuid: a rule on it takes eq, neq or in" }
            return values.allSatisfy(Self.isCanonicalUUID) ? nil : "\(column) is a uuid: write it as PostgreSQL prints it (lowercase, hyphenated)"
        case .other:
            return "\(column)'s type is compared by rowcast as text, which is not always how PostgreSQL compares it (char(n) pads, citext ignores case, dates have other spellings): a rule takes number, boolean, text, varchar and uuid columns"
        }
    }
}

extension RowFilter {
    /// Checks the filter against the columns of the tables it may match (`tables`, or
    /// every table in `columns` when nil): a column none of them has, or a value that
    /// cannot compare with the column's type, is an error naming the column, instead
    /// of a subscription that silently matches nothing. Tables whose columns are not
    /// known pass.
    package func check(against columns: [TableName: [String: ColumnKind]], tables: Set<TableName>?) throws(RowFilterError) {
        let candidates = (tables.map(Array.init) ?? Array(columns.keys)).sorted()
        let known = candidates.compactMap { table in columns[table].map { (table, $0) } }
        guard !known.isEmpty, known.count == candidates.count else { return }
        let kinds = known.compactMap { $0.1[column] }
        guard !kinds.isEmpty else {
            if known.count == 1 {
                let names = known[0].1.keys.sorted().joined(separator: ", ")
                throw .unknownColumn("\(known[0].0) has no column \"\(column)\" (its columns: \(names))")
            }
            throw .unknownColumn("none of \(known.map(\.0.description).joined(separator: ", ")) has a column \"\(column)\"")
        }
        if kinds.allSatisfy(\.isNumber), let bad = values.first(where: { $0 != "null" && NumericOrder(filterValue: $0) == nil }) {
            throw .incomparable("\(column) is a number, so \"\(bad)\" never compares with it (fix: a number, e.g. \(column)=\(comparison.rawValue).7)")
        }
        if kinds.allSatisfy({ $0 == .bool }), let bad = values.first(where: { !["true", "false", "null"].contains($0) }) {
            throw .incomparable("\(column) is a boolean, so \"\(bad)\" never compares with it (fix: \(column)=eq.true or \(column)=eq.false)")
        }
    }
}

/// Why a filter was rejected; sent back as an `error` with code `bad_filter`.
package enum RowFilterError: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed(String)
    /// No table the subscription may match has the column.
    case unknownColumn(String)
    /// The value cannot compare with the column's type.
    case incomparable(String)

    package var description: String {
        switch self {
        case .malformed(let why): "bad filter: \(why)"
        case .unknownColumn(let why), .incomparable(let why): "bad filter: \(why)"
        }
    }
}

/// One JSON value, as a filter sees it.
enum JSONScalar {
    case number(ExactNumber)
    case string(String)
    case literal(String)  // true, false, null
    case composite  // objects and arrays never compare

    init(_ bytes: [UInt8]) {
        guard let first = bytes.first else {
            self = .composite
            return
        }
        switch first {
        case UInt8(ascii: "\""):
            var scanner = JSONScanner(bytes)
            self = (try? scanner.readString()).map(JSONScalar.string) ?? .composite
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            self = .composite
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            self = .literal(String(decoding: bytes, as: UTF8.self))
        default:
            self = ExactNumber(String(decoding: bytes, as: UTF8.self)).map(JSONScalar.number) ?? .composite
        }
    }

    var isNull: Bool {
        if case .literal("null") = self { return true }
        return false
    }

    /// Where an equal filter value is indexed: a number by its value, a string or a
    /// literal by its text (how `compare` decides equality). Objects and arrays equal nothing.
    var indexKey: RowIndexKey? {
        switch self {
        case .number(let number): RowIndexKey(number)
        case .string(let text), .literal(let text): .text(Array(text.utf8))
        case .composite: nil
        }
    }

    /// The value as a float of a `real` (`single`) or `double precision` column.
    func float(single: Bool) -> Double? {
        switch self {
        case .number(let number):
            let text = (number.negative ? "-0." : "0.") + String(decoding: number.digits.isEmpty ? [UInt8(ascii: "0")] : number.digits, as: UTF8.self) + "e\(number.exponent)"
            return FloatOrder(text, single: single)?.value
        case .string(let string):
            return NumericOrder(special: string) != nil ? FloatOrder(string, single: single)?.value : nil
        case .literal, .composite:
            return nil
        }
    }

    /// -1, 0 or 1 against the filter's text (`number` is that text as a number, when
    /// it is one); nil when they cannot be compared. In a number column
    /// (`numericColumn`), the strings `to_jsonb` gives for NaN and the infinities are
    /// numbers, not text.
    func compare(to text: String, number other: NumericOrder?, numericColumn: Bool) -> Int? {
        switch self {
        case .number(let number):
            guard let other else { return nil }
            return Self.order(.finite(number), other)
        case .string(let string) where numericColumn:
            guard let other, let special = NumericOrder(special: string) else { return nil }
            return Self.order(special, other)
        case .string(let string):
            // Byte by byte, as PostgreSQL's C collation: equal only when the bytes are
            // (canonically equivalent spellings are different strings, as in PostgreSQL).
            return Self.order(string.utf8, text.utf8)
        case .literal(let literal):
            return literal == text ? 0 : nil
        case .composite:
            return nil
        }
    }

    private static func order(_ a: NumericOrder, _ b: NumericOrder) -> Int {
        a < b ? -1 : (b < a ? 1 : 0)
    }

    private static func order(_ a: String.UTF8View, _ b: String.UTF8View) -> Int {
        var (x, y) = (a.makeIterator(), b.makeIterator())
        while true {
            switch (x.next(), y.next()) {
            case (nil, nil): return 0
            case (nil, _): return -1
            case (_, nil): return 1
            case (let p?, let q?) where p != q: return p < q ? -1 : 1
            default: continue
            }
        }
    }

    /// Whether the value equals one of an `in` list's values (`texts`: each value's
    /// UTF-8; `sortedNumbers`: those that are numbers, in order), as comparing it with
    /// each in turn would say.
    func isAmong(texts: Set<[UInt8]>, sortedNumbers: [NumericOrder], numericColumn: Bool) -> Bool {
        switch self {
        case .number(let number): return Self.search(.finite(number), in: sortedNumbers)
        case .string(let string) where numericColumn:
            guard let special = NumericOrder(special: string) else { return false }
            return Self.search(special, in: sortedNumbers)
        case .string(let text), .literal(let text): return texts.contains(Array(text.utf8))
        case .composite: return false
        }
    }

    private static func search(_ number: NumericOrder, in sorted: [NumericOrder]) -> Bool {
        var (low, high) = (0, sorted.count)
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] < number { low = middle + 1 } else { high = middle }
        }
        return low < sorted.count && !(number < sorted[low])
    }
}
