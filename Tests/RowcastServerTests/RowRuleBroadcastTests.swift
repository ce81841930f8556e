import Foundation
import NIOCore
import RowcastCore
import RowcastServer
import RowcastWire
import Synchronization
import RowcastTestSupport
import Testing

/// Row rules in the broadcaster: each client gets exactly its tenant's rows, an update
/// that moves a row between tenants reaches the old tenant as a delete and the new one as
/// an insert, on the live path and from the window alike, and a record costs work in
/// proportion to the clients that receive it, not to every client connected.
@Suite struct RowRuleBroadcastTests {
    static let table: TableName = "public.orders"

    static func record(_ n: UInt64, _ op: RowcastCore.Operation, id: Int, tenant: Int?, oldTenant: Int? = nil) -> ChangeRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 7, sequence: n), source: .trigger, op: op)
        record.schema = "public"
        record.table = "orders"
        if let tenant { record.row = RawJSON(trusted: Array(#"{"id":\#(id),"tenant":\#(tenant),"secret":"t\#(tenant)"}"#.utf8)) }
        if let oldTenant { record.old = RawJSON(trusted: Array(#"{"id":\#(id),"tenant":\#(oldTenant),"secret":"t\#(oldTenant)"}"#.utf8)) }
        return record
    }

    static func tenant(_ k: Int) throws -> Subscription {
        try ClientAccess(tables: [table], rows: [table: [RowFilter(parsing: "tenant=eq.\(k)")]], expires: nil).restrict(.everything)
    }

    /// The update frames a client was queued, as (op, id, tenant of every value it carries).
    static func updates(_ registration: Broadcaster.Registration) throws -> [(op: String, id: Int, tenants: Set<Int>, reason: String?)] {
        try registration.queue.take().items.compactMap { item -> (String, Int, Set<Int>, String?)? in
            let frame = try #require(try JSONSerialization.jsonObject(with: Data(item.bytes.readableBytesView)) as? [String: Any])
            guard frame["event"] as? String == "update", let data = frame["data"] as? [String: Any] else { return nil }
            let values = ["row", "old"].compactMap { data[$0] as? [String: Any] }
            let tenants = Set(values.compactMap { $0["tenant"] as? Int } + values.compactMap { ($0["secret"] as? String).flatMap { Int($0.dropFirst()) } })
            return (data["op"] as? String ?? "?", values.first?["id"] as? Int ?? -1, tenants, data["reason"] as? String)
        }
    }

    @Test func aThousandClientsInAHundredTenantsEachGetTheirOwnAtTheCostOfTheirOwn() throws {
        let broadcaster = Broadcaster(queueLimit: 4096, resumeWindow: 1000, origin: Self.record(0, .insert, id: 0, tenant: 0).cursor)
        let tenants = 100, perTenant = 10
        var clients: [(registration: Broadcaster.Registration, tenant: Int)] = []
        for n in 0..<tenants * perTenant {
            let registration = broadcaster.register(framing: .webSocket)
            broadcaster.subscribe(registration.id, to: try Self.tenant(n % tenants))
            clients.append((registration, n % tenants))
        }
        // One insert per tenant, then row 0 moves from tenant 0 to tenant 1.
        for k in 0..<tenants { broadcaster.deliver(Self.record(UInt64(k + 1), .insert, id: k, tenant: k)) }
        #expect(broadcaster.clientsExamined == UInt64(tenants * perTenant), "a record examined \(broadcaster.clientsExamined / UInt64(tenants)) clients on average; its tenant has \(perTenant)")
        broadcaster.deliver(Self.record(UInt64(tenants + 1), .update, id: 0, tenant: 1, oldTenant: 0))
        broadcaster.deliver(Self.record(UInt64(tenants + 2), .delete, id: 0, tenant: nil, oldTenant: 1))
        #expect(broadcaster.clientsExamined == UInt64(tenants * perTenant + 3 * perTenant))
        for (registration, tenant) in clients {
            let got = try Self.updates(registration)
            for update in got { #expect(update.tenants == [tenant], "tenant \(tenant) got \(update)") }
            switch tenant {
            case 0: #expect(got.map(\.op) == ["insert", "delete"] && got.last?.reason == "left_view")
            case 1: #expect(got.map(\.op) == ["insert", "insert", "delete"] && got[1].reason == "entered_view" && got[2].reason == nil)
            default: #expect(got.map(\.op) == ["insert"])
            }
        }
        // From the window, the same: a replay since the start and the latest records.
        let replaying = broadcaster.register(framing: .webSocket), latest = broadcaster.register(framing: .webSocket)
        #expect(broadcaster.subscribe(replaying.id, to: try Self.tenant(0), since: Self.record(0, .insert, id: 0, tenant: 0).cursor))
        broadcaster.subscribe(latest.id, to: try Self.tenant(1), last: 2)
        let replayed = try Self.updates(replaying), newest = try Self.updates(latest)
        #expect(replayed.map(\.op) == ["insert", "delete"] && replayed.allSatisfy { $0.tenants == [0] } && replayed.last?.reason == "left_view")
        #expect(newest.map(\.op) == ["insert", "delete"] && newest.allSatisfy { $0.tenants == [1] } && newest.first?.reason == "entered_view")
        for (registration, _) in clients { broadcaster.unregister(registration.id) }
    }

    /// A client without a rule, one on another table and one whose rule is a range are
    /// still found; a truncate reaches every client of the table.
    @Test func clientsNotFoundByValueAreScannedAndATruncateReachesAll() throws {
        let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 10)
        let whole = broadcaster.register(framing: .webSocket), ranged = broadcaster.register(framing: .webSocket)
        let one = broadcaster.register(framing: .socketIO), elsewhere = broadcaster.register(framing: .serverSentEvents)
        broadcaster.subscribe(whole.id, to: .everything)
        broadcaster.subscribe(ranged.id, to: try ClientAccess(tables: nil, rows: [Self.table: [RowFilter(parsing: "tenant=gte.5")]], expires: nil).restrict(.everything))
        broadcaster.subscribe(one.id, to: try Self.tenant(1))
        broadcaster.subscribe(elsewhere.id, to: Subscription(tables: ["public.other"], ops: nil, filter: nil))
        broadcaster.deliver(Self.record(1, .insert, id: 1, tenant: 7))
        broadcaster.deliver(Self.record(2, .insert, id: 2, tenant: 1))
        broadcaster.deliver(Self.record(3, .truncate, id: 0, tenant: nil))
        #expect(try Self.updates(whole).map(\.op) == ["insert", "insert", "truncate"])
        #expect(try Self.updates(ranged).map(\.id) == [1, -1])
        #expect(one.queue.take().items.filter { String(buffer: $0.bytes).hasPrefix(#"42["update""#) }.count == 2)
        #expect(elsewhere.queue.take().items.filter { String(buffer: $0.bytes).hasPrefix("id:") || String(buffer: $0.bytes).contains("event: update") }.isEmpty)
        // whole, ranged (scanned) and one (found by value) for each record; the truncate reaches one too.
        #expect(broadcaster.clientsExamined == 2 + 3 + 3)
    }

    /// A rule column's type changed while clients were subscribed (`ALTER … TYPE text`,
    /// then `… TYPE citext`): the capture says so before the next record, and the
    /// broadcaster checks every rule again first. `tenant=neq.42`, resolved on a number
    /// column, passed the text `'42'` (the rule kept comparing as a number); a rule on a
    /// type rules cannot compare drops its table from the client's view, which is told.
    @Test func aRuleWhoseColumnChangedTypeIsCheckedAgainBeforeTheNextRecord() throws {
        let catalog = CaptureState()
        catalog.setCapturedTables([Self.table])
        catalog.setColumns([Self.table: ["id": .number, "tenant": .number, "secret": .text]])
        final class Lines: Sendable { let lines = Mutex<[String]>([]) }
        let dropped = Lines()
        let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 10, catalog: catalog) { line in dropped.lines.withLock { $0.append(line) } }
        func ruled(_ rule: String) throws -> Subscription {
            try ClientAccess(tables: [Self.table], rows: [Self.table: [RowFilter(parsing: rule)]], expires: nil).restrict(.everything).checkingRules(by: catalog)
        }
        let notTenant42 = broadcaster.register(framing: .webSocket), notX = broadcaster.register(framing: .webSocket)
        broadcaster.subscribe(notTenant42.id, to: try ruled("tenant=neq.42"))
        broadcaster.subscribe(notX.id, to: try ruled("secret=neq.x"))
        func row(_ n: UInt64, _ tenant: String, _ secret: String) -> ChangeRecord {
            var record = ChangeRecord(cursor: .trigger(stream: 7, sequence: n), source: .trigger, op: .insert)
            (record.schema, record.table) = ("public", "orders")
            record.row = RawJSON(trusted: Array(#"{"id":\#(n),"tenant":\#(tenant),"secret":"\#(secret)"}"#.utf8))
            return record
        }
        broadcaster.deliver(row(1, "42", "a"))
        broadcaster.deliver(row(2, "7", "a"))
        // ALTER TABLE orders ALTER tenant TYPE text: its values are strings from now on.
        catalog.capture(Self.table, columns: ["id": .number, "tenant": .text, "secret": .text])
        broadcaster.deliver(row(3, #""42""#, "a"))
        broadcaster.deliver(row(4, #""7""#, "a"))
        // ALTER … secret TYPE citext: `X` equals `x` there, which rowcast cannot tell.
        catalog.capture(Self.table, columns: ["id": .number, "tenant": .text, "secret": .other])
        broadcaster.deliver(row(5, #""8""#, "X"))
        func frames(_ registration: Broadcaster.Registration) throws -> [(event: String, id: Int?, message: String?)] {
            try registration.queue.take().items.compactMap { item in
                let frame = try #require(try JSONSerialization.jsonObject(with: Data(item.bytes.readableBytesView)) as? [String: Any])
                let data = frame["data"] as? [String: Any]
                return (frame["event"] as? String ?? "?", (data?["row"] as? [String: Any])?["id"] as? Int, data?["message"] as? String)
            }
        }
        let first = try frames(notTenant42).filter { $0.event == "update" }.map(\.id)
        #expect(first == [2, 4, 5], "tenant=neq.42 got rows \(first)")
        let second = try frames(notX)
        #expect(second.filter { $0.event == "update" }.map(\.id) == [1, 2, 3, 4], "secret=neq.x got \(second)")
        let told = second.first { $0.event == "error" }?.message ?? "nothing"
        #expect(told.contains("public.orders changed while subscribed"), "the client was told: \(told)")
        let logged = dropped.lines.withLock { $0 }
        #expect(logged.count == 1 && logged.first?.contains("1 client") == true, "logged: \(logged)")
        // A client that subscribes with rules checked before the change is checked again.
        let late = broadcaster.register(framing: .webSocket)
        let stale = try ClientAccess(tables: [Self.table], rows: [Self.table: [RowFilter(parsing: "secret=neq.x")]], expires: nil)
            .restrict(.everything).checkingRules(by: { let old = CaptureState(); old.setColumns([Self.table: ["secret": .text]]); return old }())
        broadcaster.subscribe(late.id, to: stale)
        broadcaster.deliver(row(6, #""8""#, "X"))
        #expect(try frames(late).filter { $0.event == "update" }.isEmpty)
    }

    /// A Socket.IO session recovered with a fresh credential takes the fresh one's rules:
    /// the recovered subscription had been checked with the old credential's, which the
    /// check kept as given and used again instead.
    @Test func aRecoveredSubscriptionTakesTheFreshCredentialsRules() throws {
        let catalog = CaptureState()
        catalog.setCapturedTables([Self.table])
        catalog.setColumns([Self.table: ["id": .number, "tenant": .number, "secret": .text]])
        let old = try ClientAccess(tables: [Self.table], rows: [Self.table: [RowFilter(parsing: "tenant=in.(1,2)")]], expires: nil)
        let fresh = try ClientAccess(tables: [Self.table], rows: [Self.table: [RowFilter(parsing: "tenant=eq.2")]], expires: nil)
        let recovered = try fresh.restrict(try old.restrict(.everything).checkingRules(by: catalog)).checkingRules(by: catalog)
        #expect(recovered.rules[Self.table]?.map(\.description) == ["tenant=eq.2"])
        #expect(!recovered.matches(Self.record(1, .insert, id: 1, tenant: 1)) && recovered.matches(Self.record(2, .insert, id: 2, tenant: 2)))
    }

    /// Records the window took before a rule column changed type are replayed (`last`,
    /// `since`) to a client whose rule is resolved in the new type: a value of the old
    /// type's shape is no value of the rule's column, and is not in view. The text `'42'`
    /// from before `ALTER … TYPE int` reached a `tid=neq.42` client replaying the window
    /// (the string could not compare with the number, and `neq` let it through).
    @Test func aReplayOfRecordsFromBeforeATypeChangeFailsClosed() throws {
        let catalog = CaptureState()
        catalog.setCapturedTables([Self.table])
        catalog.setColumns([Self.table: ["id": .number, "tid": .text]])
        let origin = Self.record(0, .insert, id: 0, tenant: 0).cursor
        let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 10, origin: origin, catalog: catalog)
        func row(_ n: UInt64, _ tid: String) -> ChangeRecord {
            var record = ChangeRecord(cursor: .trigger(stream: 7, sequence: n), source: .trigger, op: .insert)
            (record.schema, record.table) = ("public", "orders")
            record.row = RawJSON(trusted: Array(#"{"id":\#(n),"tid":\#(tid)}"#.utf8))
            return record
        }
        broadcaster.deliver(row(1, #""42""#))
        broadcaster.deliver(row(2, #""7""#))
        // ALTER TABLE orders ALTER tid TYPE int USING tid::int
        catalog.capture(Self.table, columns: ["id": .number, "tid": .number])
        broadcaster.deliver(row(3, "8"))
        let rule = try ClientAccess(tables: [Self.table], rows: [Self.table: [RowFilter(parsing: "tid=neq.42")]], expires: nil)
        let latest = broadcaster.register(framing: .webSocket), since = broadcaster.register(framing: .webSocket)
        broadcaster.subscribe(latest.id, to: try rule.restrict(.everything).checkingRules(by: catalog), last: 10)
        #expect(broadcaster.subscribe(since.id, to: try rule.restrict(.everything).checkingRules(by: catalog), since: origin))
        for registration in [latest, since] {
            let ids = try registration.queue.take().items.compactMap { item -> Int? in
                let frame = try JSONSerialization.jsonObject(with: Data(item.bytes.readableBytesView)) as? [String: Any]
                return ((frame?["data"] as? [String: Any])?["row"] as? [String: Any])?["id"] as? Int
            }
            #expect(ids == [3], "replayed rows \(ids)")
        }
    }
}
