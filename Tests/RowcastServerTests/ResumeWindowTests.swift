import NIOCore
import RowcastCore
import RowcastWire
import RowcastTestSupport
import Synchronization
import Testing

@testable import RowcastServer

@Suite struct ResumeWindowTests {
    /// A record whose encoded frame is about `bytes` long (its row padded to it).
    static func entry(_ n: UInt64, bytes: Int) -> EncodedRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: n), source: .trigger, op: .insert)
        record.schema = "public"
        record.table = "t"
        record.row = RawJSON(trusted: Array(("\"" + String(repeating: " ", count: bytes) + "\"").utf8))
        return EncodedRecord(record)
    }

    @Test func recordsOlderThanTheAgeLimitAreDroppedAndTheirCursorsExpire() {
        let start = ContinuousClock.now
        let cursor = { (n: UInt64) in Cursor.trigger(stream: 1, sequence: n) }
        var window = ResumeWindow(limit: 1_000, byteLimit: 1 << 20, ageLimit: .seconds(10), origin: cursor(0))
        let records = (1...3).map { Self.entry($0, bytes: 10) }
        window.append(records[0], at: start)
        window.append(records[1], at: start + .seconds(5))
        window.append(records[2], at: start + .seconds(12))
        // Record 1 is 12 s old: gone, so a client that saw only the origin has missed it.
        #expect(window.records(after: cursor(0), lastCursor: cursor(3)) == nil)
        #expect(window.records(after: cursor(1), lastCursor: cursor(3))?.map(\.cursor) == [cursor(2), cursor(3)])
        #expect(window.retainedFrameBytes == records[1].size + records[2].size)
        window.expire(now: start + .seconds(30))
        #expect(window.retainedFrameBytes == 0)
        #expect(window.records(after: cursor(2), lastCursor: cursor(3)) == nil)
        #expect(window.records(after: cursor(3), lastCursor: cursor(3))?.isEmpty == true)
    }

    @Test func neverHoldsMoreThanItsByteBudget() {
        var window = ResumeWindow(limit: 100_000, byteLimit: 10 << 20)
        for n in 1...2_000 {
            window.append(Self.entry(UInt64(n), bytes: 100_000))
            #expect(window.retainedFrameBytes <= 10 << 20, "after \(n) records of 100 kB the window holds \(window.retainedFrameBytes) bytes")
            if window.retainedFrameBytes > 10 << 20 { return }
        }
        // Still answers for what it holds, and only that.
        #expect(window.records(after: .trigger(stream: 1, sequence: 1_950), lastCursor: .trigger(stream: 1, sequence: 2_000))?.count == 50)
        #expect(window.records(after: .trigger(stream: 1, sequence: 10), lastCursor: .trigger(stream: 1, sequence: 2_000)) == nil)
    }

    @Test func aClientIsCutOffByBytesQueuedNotOnlyByFrames() async throws {
        try await within(60, "a client is cut off by bytes queued not only by frames") {
            let broadcaster = Broadcaster(queueLimit: 10_000, queueBytes: 1 << 20, resumeWindow: 0, resumeWindowBytes: 1)
            let ended = Mutex<Broadcaster.EndReason?>(nil)
            let slow = broadcaster.register(framing: .webSocket) { reason in ended.withLock { $0 = reason } }
            let fast = broadcaster.register(framing: .webSocket)
            broadcaster.subscribe(slow.id, to: .everything)
            broadcaster.subscribe(fast.id, to: .everything)
            var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
            record.schema = "public"
            record.table = "t"
            record.row = RawJSON(trusted: Array(("{\"pad\":\"" + String(repeating: "x", count: 200_000) + "\"}").utf8))
            var fastIterator = fast.stream.makeAsyncIterator()
            _ = await fastIterator.next()  // subscribed
            for sequence in 1...20 {
                record.cursor = .trigger(stream: 1, sequence: UInt64(sequence))
                broadcaster.deliver(record)
                // The fast client writes each frame as it comes.
                if let item = await fastIterator.next() { fast.wrote(bytes: item.bytes.readableBytes) }
            }
            #expect(slow.endReason == .tooSlow)
            #expect(ended.withLock { $0 } == .tooSlow, "the session was told, so that it can close the connection")
            #expect(fast.endReason == nil)
        }
    }

    @Test func lastReplaysTheNewestMatchingRecordsThenGoesLive() async throws {
        try await within(60, "last replays the newest matching records then goes live") {
            let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 100)
            for n in 1...10 {
                var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: UInt64(n)), source: .trigger, op: .insert)
                record.schema = "public"
                record.table = n % 2 == 0 ? "even" : "odd"
                record.row = RawJSON(trusted: Array(#"{"n":\#(n)}"#.utf8))
                broadcaster.deliver(record)
            }
            let client = broadcaster.register(framing: .webSocket)
            broadcaster.subscribe(client.id, to: Subscription(tables: ["public.even"], ops: nil, filter: nil), last: 3)
            var cursors: [String] = []
            var iterator = client.stream.makeAsyncIterator()
            _ = await iterator.next()  // subscribed
            for _ in 0..<3 {
                if let cursor = await iterator.next()?.cursor { cursors.append(cursor) }
            }
            #expect(cursors == [6, 8, 10].map { Cursor.trigger(stream: 1, sequence: $0).description })
        }
    }
}
