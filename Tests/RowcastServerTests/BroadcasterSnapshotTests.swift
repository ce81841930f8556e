import Foundation
import NIOCore
import RowcastCore
import RowcastTestSupport
import RowcastWire
import Testing

@testable import RowcastServer

/// The broadcaster's side of a snapshot, without a database: the boundary it finds in
/// the window, and what it queues.
@Suite struct BroadcasterSnapshotTests {
    static func record(_ n: UInt64, xid: UInt32) -> ChangeRecord {
        var record = BroadcasterTests.record(n)
        record.xid = xid
        return record
    }

    static func row(bytes: Int) -> RawJSON {
        RawJSON(trusted: Array((#"{"pad":""# + String(repeating: "x", count: bytes) + #""}"#).utf8))
    }

    /// A row larger than the client's whole budget, still queued when the snapshot ends:
    /// `snapshot_end` follows it (it cut the client off as too slow, and the page saw
    /// its snapshot end in a close instead).
    @Test func snapshotEndFollowsARowLargerThanTheClientsBudget() async throws {
        let broadcaster = Broadcaster(queueBytes: 1024, resumeWindow: 10)
        let client = broadcaster.register(framing: .webSocket)
        let slots = SnapshotSlots(total: 1, perAddress: 1)
        let (gate, framing) = try #require(try broadcaster.beginSnapshot(client.id, to: .everything, slots: slots))
        var iterator = client.stream.makeAsyncIterator()
        // The writer took `subscribed`: the queue is empty, and the row goes whole.
        let subscribed = try #require(await iterator.next())
        client.wrote(bytes: subscribed.bytes.readableBytes)
        var events = [String(buffer: subscribed.bytes).prefix(28).description]
        let frame = framing.frame(snapshotRow: Self.row(bytes: 4_000), of: "public.t", source: .trigger)
        #expect(broadcaster.sendSnapshotRows([frame], to: client.id, gate: gate, deadline: .now + .seconds(60)))
        broadcaster.endSnapshot(client.id, gate: gate, after: nil, rows: 1)
        #expect(client.endReason == nil)
        for _ in 0..<2 {
            guard let item = await iterator.next() else { break }
            events.append(String(buffer: item.bytes).prefix(28).description)
        }
        #expect(events == [#"{"event":"subscribed","data""#, #"{"event":"update","data":{"s"#, #"{"event":"snapshot_end","dat"#])
    }

    /// A snapshot refused for want of a slot leaves the subscription before it as it
    /// was: the snapshot being sent goes on, and no live record reaches the client
    /// outside it (it used to end that snapshot and leave the client live without one).
    @Test func aRefusedSnapshotLeavesTheOneBeingSentAsItWas() async throws {
        let broadcaster = Broadcaster(resumeWindow: 10)
        let client = broadcaster.register(framing: .webSocket)
        let slots = SnapshotSlots(total: 1, perAddress: 1)
        let (gate, _) = try #require(try broadcaster.beginSnapshot(client.id, to: .everything, slots: slots))
        #expect(throws: ClientMessageError.self) { try broadcaster.beginSnapshot(client.id, to: .everything, slots: slots) }
        #expect(!gate.isCancelled)
        broadcaster.deliver(Self.record(1, xid: 7))
        broadcaster.endSnapshot(client.id, gate: gate, after: nil, rows: 0)
        var events: [String] = []
        var iterator = client.stream.makeAsyncIterator()
        for _ in 0..<3 {
            guard let item = await iterator.next() else { break }
            events.append(String(buffer: item.bytes).prefix(24).description)
        }
        // The record came once, replayed after snapshot_end, not live before it.
        #expect(events == [#"{"event":"subscribed","d"#, #"{"event":"snapshot_end","#, #"{"event":"update","data""#])
    }

    /// The boundary: the newest matching record of a transaction the snapshot sees;
    /// an older one it does not see means there is none; none it sees, where the window
    /// begins if it still reaches back to where the snapshot began.
    @Test func theBoundaryIsTheNewestRecordTheSnapshotSees() throws {
        let visibility = TransactionSnapshot(xmin: 100, xmax: 110, xip: [105])
        func boundary(_ xids: [UInt32], window: Int = 100, delivered before: [UInt32] = []) throws -> Broadcaster.SnapshotBoundary {
            let broadcaster = Broadcaster(resumeWindow: window, origin: .trigger(stream: 9, sequence: 0))
            var n: UInt64 = 0
            for xid in before {
                n += 1
                broadcaster.deliver(Self.record(n, xid: xid))
            }
            let client = broadcaster.register(framing: .webSocket)
            let (gate, _) = try #require(try broadcaster.beginSnapshot(client.id, to: .everything, slots: SnapshotSlots(total: 1, perAddress: 1)))
            for xid in xids {
                n += 1
                broadcaster.deliver(Self.record(n, xid: xid))
            }
            return broadcaster.snapshotBoundary(for: client.id, gate: gate, visibility: visibility)
        }
        let cursor = { (n: UInt64) in Broadcaster.SnapshotBoundary.after(.trigger(stream: 9, sequence: n)) }
        // Seen, seen, then not seen (105 was running, 111 came after).
        #expect(try boundary([99, 104, 105, 111]) == cursor(2))
        #expect(try boundary([99, 104], delivered: [98]) == cursor(3))
        // One it does not see before one it sees.
        #expect(try boundary([105, 104, 111]) == .interleaved)
        // None it sees: where the window begins, which still reaches back far enough.
        #expect(try boundary([105, 111]) == .after(.trigger(stream: 9, sequence: 0)))
        // None it sees, and the window let go of what came after the snapshot began.
        #expect(try boundary([105, 111, 112, 113], window: 2) == .expired)
        // The epoch: a 32-bit id just below the wrap is seen by a snapshot just past it.
        let wrapped = TransactionSnapshot(xmin: (1 << 32) + 5, xmax: (1 << 32) + 9, xip: [])
        #expect(wrapped.sees(xid: UInt32.max) && wrapped.sees(xid: 4) && !wrapped.sees(xid: 9))
    }
}
