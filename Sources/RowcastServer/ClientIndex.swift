import RowcastCore

/// Which subscribed clients a record must be matched against, so that a record costs
/// work in proportion to the clients that may receive it, not to every client connected.
///
/// A client whose credential's row rule on a table is an equality (`tenant_id=eq.42`,
/// `in.(…)`) is kept under the rule's value for that table: a record of the table
/// reaches it only when its old or new row has that value (``RowIndexKey``). Every
/// other client is scanned: for the tables it named, or for every record when it named
/// none. The index only finds candidates; ``Subscription/verdict(_:)`` still decides.
struct ClientIndex {
    /// Where one client is kept, to take it out again.
    private struct Placement {
        var scannedTables: Set<TableName>?
        var scansAll = false
        var indexed: [(table: TableName, column: String, keys: [RowIndexKey])] = []
    }

    /// A table's clients kept by the value of one column.
    private struct Bucket {
        var byKey: [RowIndexKey: Set<UInt64>] = [:]
        var all: Set<UInt64> = []
    }

    private var placements: [UInt64: Placement] = [:]
    /// Clients that subscribed to every table, with no equality rule.
    private var scansAll: Set<UInt64> = []
    /// Clients that subscribed to every table and are found by value for some.
    private var scansAllButIndexed: Set<UInt64> = []
    /// Clients scanned for a table they named (with no equality rule on it).
    private var scansTable: [TableName: Set<UInt64>] = [:]
    /// Clients found by value: table → rule column → clients.
    private var byValue: [TableName: [String: Bucket]] = [:]
    /// Of `scansAllButIndexed`, the tables each is found by value for (skipped in the scan there).
    private var indexedFor: [UInt64: Set<TableName>] = [:]

    /// Keeps `id` for `subscription` (replacing where it was kept before).
    mutating func add(_ id: UInt64, _ subscription: Subscription) {
        remove(id)
        var placement = Placement()
        var indexed: Set<TableName> = []
        for (table, rule) in subscription.rules where subscription.tables?.contains(table) ?? true {
            // The first equality of the rule is enough: every condition is checked anyway.
            guard let (column, keys) = rule.lazy.compactMap({ condition in condition.indexKeys(in: table).map { (condition.column, $0) } }).first else { continue }
            placement.indexed.append((table, column, keys))
            indexed.insert(table)
            var bucket = byValue[table, default: [:]][column, default: Bucket()]
            for key in keys { bucket.byKey[key, default: []].insert(id) }
            bucket.all.insert(id)
            byValue[table, default: [:]][column] = bucket
        }
        if let tables = subscription.tables {
            let scanned = tables.subtracting(indexed)
            for table in scanned { scansTable[table, default: []].insert(id) }
            placement.scannedTables = scanned
        } else if indexed.isEmpty {
            scansAll.insert(id)
            placement.scansAll = true
        } else {
            scansAllButIndexed.insert(id)
            indexedFor[id] = indexed
            placement.scansAll = true
        }
        placements[id] = placement
    }

    /// Forgets `id`.
    mutating func remove(_ id: UInt64) {
        guard let placement = placements.removeValue(forKey: id) else { return }
        if placement.scansAll {
            scansAll.remove(id)
            scansAllButIndexed.remove(id)
            indexedFor[id] = nil
        }
        for table in placement.scannedTables ?? [] {
            scansTable[table]?.remove(id)
            if scansTable[table]?.isEmpty == true { scansTable[table] = nil }
        }
        for (table, column, keys) in placement.indexed {
            guard var bucket = byValue[table]?[column] else { continue }
            for key in keys {
                bucket.byKey[key]?.remove(id)
                if bucket.byKey[key]?.isEmpty == true { bucket.byKey[key] = nil }
            }
            bucket.all.remove(id)
            if bucket.all.isEmpty {
                byValue[table]?[column] = nil
                if byValue[table]?.isEmpty == true { byValue[table] = nil }
            } else {
                byValue[table]?[column] = bucket
            }
        }
    }

    /// Calls `body` once for each client that may receive the record behind `values`.
    func forEachCandidate(for values: inout RecordValues, _ body: (UInt64) -> Void) {
        for id in scansAll { body(id) }
        guard let table = values.table else {
            for id in scansAllButIndexed { body(id) }
            return
        }
        for id in scansAllButIndexed where indexedFor[id]?.contains(table) != true { body(id) }
        if let scanned = scansTable[table] {
            for id in scanned { body(id) }
        }
        guard let columns = byValue[table] else { return }
        let record = values.record
        for (column, bucket) in columns {
            // A record with no row (a truncate) reaches every client of the table.
            guard record.row != nil || record.old != nil else {
                for id in bucket.all { body(id) }
                continue
            }
            let new = record.row != nil ? values.indexKey(of: column, side: .new) : nil
            let old = record.old != nil ? values.indexKey(of: column, side: .old) : nil
            let first = new.flatMap { bucket.byKey[$0] }
            let second = old == new ? nil : old.flatMap { bucket.byKey[$0] }
            switch (first, second) {
            case (let a?, let b?):
                for id in a { body(id) }
                for id in b where !a.contains(id) { body(id) }
            case (let a?, nil), (nil, let a?):
                for id in a { body(id) }
            case (nil, nil):
                break
            }
        }
    }
}
