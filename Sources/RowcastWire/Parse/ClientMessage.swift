import RowcastCore

/// A frame a client sends, `{"event": NAME, "data": OBJECT}` (SPEC section 4).
package enum ClientMessage: Sendable, Equatable {
    /// `ready for data` `{}`: everything the client may see, from now on.
    case readyForData
    /// `subscribe` `{"tables", "ops", "filter", "since", "last", "snapshot"}`, every key
    /// optional; `snapshot` first sends the matching rows as they are (at most one of
    /// `since`, `last` and `snapshot`).
    case subscribe(Subscription, since: Cursor?, last: Int?, snapshot: Bool = false)
    /// `unsubscribe` `{}`: stop updates, keep the connection.
    case unsubscribe
    /// `ping` with any object: answered with `pong` and the same object, in order with
    /// the updates (browsers cannot send WebSocket ping frames).
    case ping(data: String)

    /// Parses a text frame with rowcast's one JSON reader (``JSONScanner``); a
    /// ``ClientMessageError`` names what is wrong with it.
    package static func parse(_ text: String) throws(ClientMessageError) -> ClientMessage {
        let frame = JSONText(Array(text.utf8))
        var event: String?
        var eventIsString = true
        var data: JSONText?
        do {
            var scanner = JSONScanner(frame.bytes)
            try scanner.scanObject { key, range in
                let value = frame.slice(range)
                switch key {
                case "event":
                    event = value.string
                    eventIsString = event != nil
                case "data":
                    data = value
                default:
                    break
                }
            }
            try scanner.expectEnd()
        } catch {
            throw .badFrame("frames are JSON objects {\"event\": NAME, \"data\": OBJECT}")
        }
        guard let event, eventIsString else { throw .badFrame("the frame has no string \"event\"") }
        return try parse(event: event, data: data)
    }

    /// An event and its data, however the protocol framed them (a Socket.IO event's
    /// name and first argument).
    package static func parse(event: String, data: JSONText?) throws(ClientMessageError) -> ClientMessage {
        let object = data ?? JSONText(Array("{}".utf8))
        guard object.isObject else { throw .badFrame("\"data\" must be an object") }
        switch event {
        case "ready for data": return .readyForData
        case "unsubscribe": return .unsubscribe
        case "subscribe": return try SubscriptionRequest(json: object).resolve()
        case "ping": return .ping(data: object.text)
        default: throw .unknownEvent(event)
        }
    }
}

/// What a client asked to subscribe to, before validation: from a `subscribe`
/// frame's data or from `/events` query keys, so both are checked by one ``resolve()``.
package struct SubscriptionRequest: Sendable {
    package enum Field: Sendable { case missing, wrongType, value([String]) }

    package var tables: Field = .missing
    package var ops: Field = .missing
    package var filter: Field = .missing
    package var since: Field = .missing
    package var last: Field = .missing
    /// `true` or `false` in JSON; `1`, `true`, `0` or `false` in a query string.
    package var snapshot: Field = .missing

    package init() {}

    /// From a JSON object: arrays of strings for `tables` and `ops`, strings for
    /// `filter` and `since`; any other type is remembered as `wrongType`.
    package init(json object: JSONText) throws(ClientMessageError) {
        do {
            var scanner = JSONScanner(object.bytes)
            try scanner.scanObject { key, range in
                let value = object.slice(range)
                switch key {
                case "tables": tables = value.strings.map(Field.value) ?? .wrongType
                case "ops": ops = value.strings.map(Field.value) ?? .wrongType
                case "filter": filter = value.string.map { .value([$0]) } ?? .wrongType
                case "since": since = value.string.map { .value([$0]) } ?? .wrongType
                case "last": last = .value([value.text.trimmingWhitespace])
                case "snapshot": snapshot = .value([value.text.trimmingWhitespace])
                default: break
                }
            }
        } catch {
            throw .badFrame("\"data\" must be an object")
        }
    }

    /// Validates every field; the error names the first one that is wrong.
    package func resolve() throws(ClientMessageError) -> ClientMessage {
        var subscription = Subscription(tables: nil, ops: nil, filter: nil)
        switch tables {
        case .missing: break
        case .wrongType: throw .badSubscription("\"tables\" must be an array of table names")
        case .value(let names):
            subscription.tables = try Set(names.map { name throws(ClientMessageError) in
                guard let table = TableName(parsing: name) else { throw .badSubscription("\"\(name)\" is not a table name (schema.table or table)") }
                return table
            })
        }
        switch ops {
        case .missing: break
        case .wrongType: throw .badSubscription("\"ops\" must be an array of operations")
        case .value(let names):
            subscription.ops = try Set(names.map { name throws(ClientMessageError) in
                guard let op = Operation(rawValue: name) else {
                    throw .badSubscription("unknown op \"\(name)\"; use insert, update, delete, truncate, message or notify")
                }
                return op
            })
        }
        switch filter {
        case .missing: break
        case .wrongType: throw .badFilter("\"filter\" must be a string like \"id=eq.7\"")
        case .value(let text):
            do {
                subscription.filter = try RowFilter(parsing: text.first ?? "")
            } catch {
                throw .badFilter(error.description)
            }
        }
        var cursor: Cursor?
        switch since {
        case .missing: break
        case .wrongType: throw .badSubscription("\"since\" must be a cursor from a record")
        case .value(let text):
            guard let parsed = Cursor(text.first ?? "") else { throw .badSubscription("\"since\" must be a cursor from a record") }
            cursor = parsed
        }
        var count: Int?
        switch last {
        case .missing: break
        case .wrongType: throw .badSubscription("\"last\" must be a number of records")
        case .value(let text):
            guard let number = Int(text.first ?? ""), (0...10_000).contains(number) else {
                throw .badSubscription("\"last\" must be a number of records from 0 to 10000")
            }
            count = number
        }
        var snapshot = false
        switch self.snapshot {
        case .missing: break
        case .wrongType: throw .badSubscription("\"snapshot\" must be true or false")
        case .value(let text):
            switch text.first ?? "" {
            case "true", "1": snapshot = true
            case "false", "0": snapshot = false
            default: throw .badSubscription("\"snapshot\" must be true or false")
            }
        }
        if snapshot, cursor != nil || (count ?? 0) > 0 {
            throw .badSubscription("\"snapshot\" starts from the rows as they are: it takes no \"since\" or \"last\" (resume with \"since\" alone)")
        }
        return .subscribe(subscription, since: cursor, last: count, snapshot: snapshot)
    }
}

/// One JSON value's bytes, read through ``JSONScanner``.
package struct JSONText: Sendable {
    package let bytes: [UInt8]

    package init(_ bytes: [UInt8]) { self.bytes = bytes }

    package func slice(_ range: Range<Int>) -> JSONText { JSONText(Array(bytes[range])) }

    package var text: String { String(decoding: bytes, as: UTF8.self) }

    package var isObject: Bool {
        var scanner = JSONScanner(bytes)
        return scanner.peekValue() == UInt8(ascii: "{")
    }

    /// The string, when the value is one.
    package var string: String? {
        var scanner = JSONScanner(bytes)
        guard scanner.peekValue() == UInt8(ascii: "\"") else { return nil }
        return try? scanner.readString()
    }

    /// The strings, when the value is an array of strings only.
    package var strings: [String]? {
        var scanner = JSONScanner(bytes)
        guard scanner.peekValue() == UInt8(ascii: "[") else { return nil }
        var strings: [String] = []
        var allStrings = true
        do {
            try scanner.scanArray { range in
                if let string = slice(range).string { strings.append(string) } else { allStrings = false }
            }
        } catch {
            return nil
        }
        return allStrings ? strings : nil
    }
}

/// Why a client frame was rejected; sent back as an `error` frame.
package enum ClientMessageError: Error, Sendable, Equatable {
    case badFrame(String)
    case unknownEvent(String)
    case badSubscription(String)
    case badFilter(String)
    /// The client's credential does not allow what it asked for.
    case forbidden(String)
    /// `since` is older than the resume window.
    case cursorExpired(Cursor?, slotLost: Bool = false)
    /// A table this server does not capture (a typo, or a table not set up).
    case unknownTable([String])
    /// The client's address owes more window scans than a client may wait for: retry
    /// after these seconds.
    case tooManyScans(seconds: Int)
    /// A snapshot could not be taken or finished: `code` says which limit or failure
    /// (`too_many_snapshots`, `snapshot_too_large`, `snapshot_expired`, `snapshot_failed`).
    case snapshot(code: String, message: String)

    /// The `code` of the `error` frame.
    package var code: String {
        switch self {
        case .badFrame: "bad_frame"
        case .unknownEvent: "unknown_event"
        case .badSubscription: "bad_subscription"
        case .badFilter: "bad_filter"
        case .forbidden: "forbidden"
        case .cursorExpired: "cursor_expired"
        case .unknownTable: "unknown_table"
        case .tooManyScans: "too_many_scans"
        case .snapshot(let code, _): code
        }
    }

    /// The `reason` of the `error` frame, when the code alone does not say it
    /// (`slot_lost` for a cursor from before a lost slot).
    package var reason: String? {
        if case .cursorExpired(_, true) = self { return "slot_lost" }
        return nil
    }

    /// The `message` of the `error` frame.
    package var message: String {
        switch self {
        case .badFrame(let why), .badSubscription(let why), .badFilter(let why), .forbidden(let why), .snapshot(_, let why): why
        case .cursorExpired(let since, let slotLost):
            slotLost
                ? "records after \(since?.description ?? "that cursor") were missed: the replication slot was lost and a new one made; subscribe without since and reload"
                : "records after \(since?.description ?? "that cursor") are no longer kept"
                + (since?.kind == .trigger ? " (trigger mode keeps records in one process's memory: none from before a restart of rowcast serve or from another node; replication mode replays them from its slot)" : "")
                + "; subscribe without since and reload"
        case .unknownTable(let tables):
            "\(tables.joined(separator: ", ")) \(tables.count == 1 ? "is" : "are") not captured by this server (fix: check the name, or rowcast setup --table \(tables[0]) and serve it)"
        case .tooManyScans(let seconds):
            "this address's clients read the resume window (since, last, recovery) faster than it allows; nothing was subscribed: retry in \(seconds) s"
        case .unknownEvent(let event):
            "unknown event \"\(event)\"; expected \"ready for data\", \"subscribe\", \"unsubscribe\" or \"ping\""
        }
    }
}

extension Subscription {
    /// Refuses tables the capture does not deliver, so that a typo is an error, not a
    /// subscription that silently receives nothing.
    /// A filter is checked against the columns the catalog named: a column no table
    /// has, or a value that cannot compare with it, is `bad_filter` naming the column.
    /// Returns the subscription with its filter told which tables hold the column as a
    /// number (so `"NaN"` and `"Infinity"` there order as numbers).
    package func checkCaptured(by capture: CaptureState) throws(ClientMessageError) -> Subscription {
        if let tables, let captured = capture.capturedTables {
            let unknown = tables.subtracting(captured).map(\.description).sorted()
            if !unknown.isEmpty { throw .unknownTable(unknown) }
        }
        if let filter {
            do {
                try filter.check(against: capture.columns, tables: tables ?? capture.capturedTables)
            } catch {
                throw .badFilter(error.description)
            }
        }
        var resolved = try checkingRules(by: capture)
        resolved.filter = filter.map { Self.resolve($0, in: capture.columns) }
        return resolved
    }

    /// The filter told which tables hold its column as a number, a `real` or a
    /// `double precision`, from the catalog's `columns`.
    private static func resolve(_ filter: RowFilter, in columns: [TableName: [String: ColumnKind]]) -> RowFilter {
        let tables = { (kind: (ColumnKind) -> Bool) in Set(columns.compactMap { $0.value[filter.column].map(kind) == true ? $0.key : nil }) }
        let kinds = Dictionary(uniqueKeysWithValues: columns.compactMap { table, kinds in kinds[filter.column].map { (table, $0) } })
        return filter.resolved(numberIn: tables(\.isNumber), float4In: tables { $0 == .float4 }, float8In: tables { $0 == .float8 }, kinds: kinds)
    }

    /// The credential's row rules, checked and resolved against the catalog, on the
    /// tables this subscription may see (`ready for data` too): a rule that cannot apply
    /// refuses the subscription rather than hiding or showing every row, and so does one
    /// on a table whose updates lack the old row (replication without REPLICA IDENTITY FULL).
    package func checkingRules(by capture: CaptureState) throws(ClientMessageError) -> Subscription {
        guard !rules.isEmpty || claimedRules != nil else { return self }
        let (checked, refused) = rulesChecked(by: capture)
        if let (_, refusal) = refused.first { throw refusal }
        return checked
    }

    /// The subscription's rules checked again after the catalog changed (a column's type,
    /// a table's replica identity, a partition attached: ``CaptureState/catalogVersion``),
    /// with `columns` as they are now (a snapshot reads them under its lock). Each rule is
    /// resolved again, a partitioned table's rule taken by a partition attached since.
    /// It never widens what the client sees: a table whose rule can no longer apply, or
    /// would now be looser (a partition detached), leaves ``knownTables``, so the client
    /// gets nothing more of it until it subscribes again and the rule is checked as new;
    /// a table it did not know stays unknown. Returns the subscription, and each table
    /// dropped with why.
    package func recheckingRules(by capture: CaptureState, columns: [TableName: [String: ColumnKind]]? = nil) -> (Subscription, dropped: [(TableName, String)]) {
        guard claimedRules != nil else { return (self, []) }
        var (checked, refused) = rulesChecked(by: capture, columns: columns)
        // Only tables still in view are dropped (and told): one out of it stays out.
        let inView = { (table: TableName) in self.knownTables?.contains(table) ?? true }
        var dropped = refused.filter { inView($0.0) }.map { ($0.0, $0.1.message) }
        for (table, rule) in rules.sorted(by: { $0.key < $1.key }) where inView(table) {
            guard refused.allSatisfy({ $0.0 != table }) else { continue }
            let now = Set((checked.rules[table] ?? []).map(\.description))
            if !Set(rule.map(\.description)).isSubset(of: now) {
                dropped.append((table, "its row rule would now be looser (a partition detached?)"))
            }
        }
        var known = knownTables.map { $0.intersection(checked.knownTables ?? $0) } ?? checked.knownTables
        for (table, _) in dropped { known?.remove(table) }
        checked.knownTables = known
        // The client's own filter narrows only; its types follow the catalog too.
        checked.filter = filter.map { Self.resolve($0, in: columns ?? capture.columns) }
        return (checked, dropped)
    }

    /// The credential's rules against `columns`: resolved for each table whose rule can
    /// apply, and why each other cannot (in table order).
    private func rulesChecked(
        by capture: CaptureState, columns given: [TableName: [String: ColumnKind]]? = nil
    ) -> (Subscription, refused: [(TableName, ClientMessageError)]) {
        // The version before what it counts: a change after it makes the broadcaster
        // check again (read after the columns, a change between would be missed).
        let version = capture.catalogVersion
        let columns = given ?? capture.columns
        let claims = claimedRules ?? rules
        var checked = self
        checked.claimedRules = claims
        checked.catalogVersion = version
        // A partitioned table's rule is its partitions' too: their records carry their own names.
        var claimed = claims
        for (partition, ancestors) in capture.partitionAncestors {
            for ancestor in ancestors.sorted() {
                if let rule = claims[ancestor] { claimed[partition, default: []] += rule }
            }
        }
        var rules: [TableName: [RowFilter]] = [:]
        var refused: [(TableName, ClientMessageError)] = []
        for (table, rule) in claimed.sorted(by: { $0.key < $1.key }) where tables?.contains(table) ?? true {
            // A table not captured yet keeps its rule (and gets nothing: `knownTables`).
            guard columns[table] != nil else {
                rules[table] = rule
                continue
            }
            if let refusal = Self.refusal(of: rule, on: table, columns: columns, capture: capture) {
                refused.append((table, refusal))
                continue
            }
            rules[table] = rule.map { Self.resolve($0, in: columns) }
        }
        checked.rules = rules
        // Known: its columns, and what it is a partition of (a table learned while
        // serving is looked up as it is learned).
        let ancestry = capture.ancestryKnown
        checked.knownTables = Set(columns.keys.filter { ancestry?.contains($0) ?? true })
        return (checked, refused)
    }

    /// Why `rule` cannot apply to `table`, if it cannot.
    private static func refusal(
        of rule: [RowFilter], on table: TableName, columns: [TableName: [String: ColumnKind]], capture: CaptureState
    ) -> ClientMessageError? {
        for condition in rule {
            do {
                try condition.check(against: columns, tables: [table])
            } catch {
                return .forbidden("the credential's row rule for \(table) cannot apply (\(error.description.dropFirst("bad filter: ".count))); ask for a token whose rule names a column of the table")
            }
            if let kind = columns[table]?[condition.column], let why = condition.ruleRefusal(on: kind) {
                return .forbidden("the credential's row rule for \(table) cannot apply (\(why)); ask for a token with another rule")
            }
        }
        if !capture.hasWholeOldRows(table) {
            return .forbidden(
                "the credential has a row rule for \(table), which needs each update's old row: replication mode gets it only with REPLICA IDENTITY FULL (fix: ALTER TABLE \(table.quoted) REPLICA IDENTITY FULL; rowcast doctor names every such table)"
            )
        }
        return nil
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and newlines (JSON's whitespace).
    package var trimmingWhitespace: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        return String(drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}

extension ClientMessage {
    /// Whether applying it reads the resume window (a `subscribe` with `since` or a
    /// `last`): the work a client's address pays for.
    package var scansWindow: Bool {
        guard case .subscribe(_, let since, let last, _) = self else { return false }
        return since != nil || (last ?? 0) > 0
    }
}
