import Foundation
import Logging
import NIOCore
import RowcastCore
import RowcastWire
import Synchronization

/// Reads snapshots for clients (`subscribe` with `"snapshot": true`), each on a thread
/// and a PostgreSQL connection of its own, and hands the rows and the boundary to the
/// broadcaster (``Broadcaster/beginSnapshot(_:to:limit:perAddress:)``).
///
/// How the boundary is exact (Docs/architecture.md, "Snapshots"): the snapshot's
/// transaction says which transactions it sees (`xmin:xmax:xip`). The reader waits
/// until the capture has handed over every one of them (replication: the stream passed
/// the WAL position read after the snapshot; trigger: a window whose own snapshot
/// covers it), then walks the window back: the newest matching record of a transaction
/// the snapshot sees is the boundary, every later one is of a transaction it does not
/// see. A transaction it does not see before one it sees (a commit streamed before it
/// became visible: a synchronous standby's wait) has no such cursor: the snapshot is
/// taken again.
package struct SnapshotRunner: Sendable {
    package struct Limits: Sendable {
        /// Snapshots read at once (`--max-snapshots`): each holds a connection.
        package var concurrent = 16
        /// Of those, from one address (`--max-snapshots-per-address`).
        package var perAddress = 4
        /// Rows one snapshot may send (`--snapshot-rows`); past it, `snapshot_too_large`.
        package var rows = 10_000_000
        /// Rows fetched at a time (fewer when they are large).
        package var pageRows = 1_000
        /// How long a snapshot waits for the capture to pass it.
        package var catchUpSeconds: Double = 60
        /// How many times a snapshot is taken again before it gives up.
        package var attempts = 20
        /// How long one snapshot's transaction may stay open (`--snapshot-seconds`): it
        /// holds back vacuum for as long, and a client may read as slowly as it likes.
        package var seconds: Double = 600

        package init() {}
    }

    let source: any SnapshotSource
    let capture: CaptureState
    /// Readers running (a cancelled one counts until its thread has let go of its
    /// connection): the limits hold however fast a client asks again.
    let slots: SnapshotSlots
    let mode: CaptureMode
    let limits: Limits
    /// Asks the capture to read now (``CaptureSource/requestRead()``).
    let requestRead: @Sendable () -> Void
    let logger: Logger

    package init(
        source: any SnapshotSource, capture: CaptureState, mode: CaptureMode, limits: Limits, logger: Logger,
        requestRead: @escaping @Sendable () -> Void
    ) {
        self.source = source
        self.capture = capture
        self.mode = mode
        self.limits = limits
        self.logger = logger
        self.requestRead = requestRead
        self.slots = SnapshotSlots(total: limits.concurrent, perAddress: limits.perAddress)
    }

    /// Starts a snapshot for client `id` of `broadcaster` (its subscription already
    /// narrowed to what it may see and checked): `subscribed` now, then the rows, then
    /// `snapshot_end`, on a thread of its own. Throws what refuses it at once.
    func start(_ id: UInt64, subscription: Subscription, broadcaster: Broadcaster) throws(ClientMessageError) {
        guard let tables = subscription.tables ?? capture.capturedTables, !tables.isEmpty else {
            throw .snapshot(code: "snapshot_failed", message: "a snapshot reads named tables: subscribe with \"tables\" (this server captures every table of its publication)")
        }
        guard let (gate, framing) = try broadcaster.beginSnapshot(id, to: subscription, slots: slots) else { return }
        let thread = Thread { [self] in
            defer { gate.giveBack(to: slots) }
            read(tables.sorted(), for: id, subscription: subscription, framing: framing, gate: gate, broadcaster: broadcaster)
        }
        thread.name = "rowcast-snapshot"
        thread.start()
    }

    private func read(
        _ tables: [TableName], for id: UInt64, subscription: Subscription, framing: Framing, gate: Broadcaster.SnapshotGate,
        broadcaster: Broadcaster
    ) {
        let started = ContinuousClock.now
        /// Tells the client, its transaction ended and its slot free first (a client told
        /// may ask again at once).
        func fail(_ code: String, _ message: String, closing snapshot: (any TableSnapshot)? = nil) {
            logger.info("a snapshot of \(tables.map(\.description).joined(separator: ", ")) failed: \(message)")
            snapshot?.close()
            gate.giveBack(to: slots)
            broadcaster.failSnapshot(id, gate: gate, .snapshot(code: code, message: message))
        }
        var attempt = 0
        while !gate.isCancelled {
            attempt += 1
            let snapshot: any TableSnapshot
            do {
                snapshot = try source.open(tables: tables)
            } catch {
                return fail("snapshot_failed", error.description)
            }
            defer { snapshot.close() }
            // Every transaction the snapshot sees must have reached the stream first.
            let deadline = ContinuousClock.now + .seconds(saturating: limits.catchUpSeconds)
            while !broadcaster.hasPassed(snapshot.visibility, walPosition: snapshot.walPosition) {
                if gate.isCancelled { return }
                guard ContinuousClock.now < deadline else {
                    return fail("snapshot_failed", "the capture did not reach the snapshot within \(Int(limits.catchUpSeconds)) s (is it connected? see /status); retry", closing: snapshot)
                }
                requestRead()
                gate.wait(seconds: 0.02)
            }
            let boundary: Cursor?
            switch broadcaster.snapshotBoundary(for: id, gate: gate, visibility: snapshot.visibility) {
            case .gone: return
            case .interleaved:
                guard attempt < limits.attempts else {
                    return fail("snapshot_failed", "transactions kept becoming visible out of their commit order (a synchronous standby's waits?); retry", closing: snapshot)
                }
                logger.debug("a snapshot's transactions interleave with the stream's; taking it again")
                continue
            case .expired:
                guard attempt < limits.attempts else {
                    return fail("snapshot_expired", Self.expiredMessage, closing: snapshot)
                }
                continue
            case .after(let cursor): boundary = cursor
            }
            // The rules as they stand now (checked again if the catalog moved on since the
            // client subscribed), and against the columns the snapshot reads: a type changed
            // before it and not yet seen by the capture drops that table from the view.
            var subscription = broadcaster.subscription(of: id) ?? subscription
            if subscription.claimedRules != nil {
                do throws(SnapshotError) {
                    var columns = capture.columns
                    for (table, kinds) in try snapshot.columns(of: tables) { columns[table] = kinds }
                    subscription = subscription.recheckingRules(by: capture, columns: columns).0
                } catch {
                    return fail("snapshot_failed", error.description, closing: snapshot)
                }
            }
            var rows = 0
            var tooLarge = false
            var tooLong = false
            var gaveWay = false
            let stopBy = started + .seconds(saturating: limits.seconds)
            for table in tables {
                var open = true
                do throws(SnapshotError) {
                    try snapshot.read(table, conditions: subscription.conditions(on: table), pageRows: limits.pageRows) { page in
                        var frames: [ByteBuffer] = []
                        frames.reserveCapacity(page.count)
                        for row in page where Self.matches(row, of: table, subscription: subscription) {
                            rows += 1
                            if rows > limits.rows {
                                tooLarge = true
                                break
                            }
                            frames.append(framing.frame(snapshotRow: row, of: table, source: mode))
                        }
                        open = broadcaster.sendSnapshotRows(frames, to: id, gate: gate, deadline: stopBy) {
                            gaveWay = snapshot.blocksAnother()
                            return gaveWay
                        }
                        tooLong = ContinuousClock.now > stopBy
                        // The application's DDL waits for no snapshot (checked once a page).
                        if open, !tooLarge, !tooLong, !gaveWay { gaveWay = snapshot.blocksAnother() }
                        return open && !tooLarge && !tooLong && !gaveWay
                    }
                } catch {
                    return fail("snapshot_failed", error.description, closing: snapshot)
                }
                if tooLarge {
                    return fail("snapshot_too_large", "more than \(limits.rows) rows match; narrow the filter or the tables (the server's --snapshot-rows)", closing: snapshot)
                }
                if gaveWay {
                    return fail("snapshot_failed", "another session (DDL on \(table)?) waited for a lock this snapshot held, and the snapshot gave way; subscribe with snapshot again", closing: snapshot)
                }
                if tooLong {
                    return fail("snapshot_failed", "the snapshot took longer than \(String(format: "%g", limits.seconds)) s to read (the server's --snapshot-seconds: its transaction holds back vacuum); narrow it, or read faster", closing: snapshot)
                }
                guard open else { return }
            }
            // The transaction ends before the stream goes on: nothing is held for it, and
            // the slot is free before the client hears the snapshot ended.
            snapshot.close()
            gate.giveBack(to: slots)
            broadcaster.endSnapshot(id, gate: gate, after: boundary, rows: rows)
            logger.debug("a snapshot of \(rows) rows ended after \(ContinuousClock.now - started), attempt \(attempt)")
            return
        }
    }

    static let expiredMessage = "the stream moved on past the resume window while the snapshot was taken; subscribe with snapshot again, narrow it, or raise --resume-window"

    /// Whether `row` is in the client's view and its filter takes it (PostgreSQL only
    /// narrowed what it read).
    static func matches(_ row: RawJSON, of table: TableName, subscription: Subscription) -> Bool {
        // Without a rule or filter, still not a table that left the client's view.
        guard subscription.readsValues(of: table) else { return subscription.knownTables?.contains(table) ?? true }
        var record = ChangeRecord(cursor: .trigger(stream: 0, sequence: 0), source: .trigger, op: .insert)
        record.schema = table.schema
        record.table = table.name
        record.row = row
        var values = RecordValues(record)
        return subscription.sees(&values)
    }
}

/// How many snapshot readers run, in all and per client address (`--max-snapshots`,
/// `--max-snapshots-per-address`). A slot is taken when a snapshot starts and given
/// back when its reader's thread ends, not when the client leaves or asks again.
package final class SnapshotSlots: Sendable {
    struct Slot: Sendable {
        let address: ClientAddress?
    }

    private let total: Int
    private let perAddress: Int
    private let running = Mutex<(total: Int, byAddress: [ClientAddress: Int])>((0, [:]))

    init(total: Int, perAddress: Int) {
        self.total = total
        self.perAddress = perAddress
    }

    /// A slot, or nil when every one is taken (in all, or for `address`).
    func take(for address: ClientAddress?) -> Slot? {
        running.withLock { running in
            guard running.total < total else { return nil }
            if let address {
                guard running.byAddress[address, default: 0] < perAddress else { return nil }
                running.byAddress[address, default: 0] += 1
            }
            running.total += 1
            return Slot(address: address)
        }
    }

    func give(back slot: Slot) {
        running.withLock { running in
            running.total -= 1
            if let address = slot.address {
                let left = running.byAddress[address, default: 1] - 1
                running.byAddress[address] = left > 0 ? left : nil
            }
        }
    }

    /// Snapshot readers running now.
    var count: Int { running.withLock { $0.total } }

    func refusal(for address: ClientAddress?) -> String {
        let full = running.withLock { $0.total >= total }
        return full
            ? "\(total) snapshots are being read already; retry shortly (the server's --max-snapshots)"
            : "this address has \(perAddress) snapshots being read already; retry once one ends (the server's --max-snapshots-per-address)"
    }
}
