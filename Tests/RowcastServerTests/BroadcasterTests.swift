import Foundation
import NIOCore
import RowcastCore
import RowcastServer
import RowcastWire
import RowcastTestSupport
import Testing

@Suite struct BroadcasterTests {
    static func record(_ n: UInt64, table: String = "t") -> ChangeRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 9, sequence: n), source: .trigger, op: .insert)
        record.schema = "public"
        record.table = table
        record.row = RawJSON(trusted: Array(#"{"id":\#(n)}"#.utf8))
        return record
    }

    @Test func eachRecordIsEncodedOnceAndItsBytesShared() async throws {
        try await within(60, "each record is encoded once and its bytes shared") {
            let broadcaster = Broadcaster(queueLimit: 16, resumeWindow: 0)
            let a = broadcaster.register(framing: .webSocket), b = broadcaster.register(framing: .webSocket)
            broadcaster.subscribe(a.id, to: .everything)
            broadcaster.subscribe(b.id, to: .everything)
            broadcaster.deliver(Self.record(1))
            var frames: [ByteBuffer] = []
            for registration in [a, b] {
                var iterator = registration.stream.makeAsyncIterator()
                _ = await iterator.next()  // subscribed
                if let item = await iterator.next() {
                    frames.append(item.bytes)
                    #expect(item.cursor == Self.record(1).cursor.description)
                }
            }
            #expect(frames.count == 2)
            // Same storage, not an equal copy.
            let pointers = frames.map { $0.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
            #expect(pointers[0] == pointers[1])
        }
    }

    /// Socket.IO clients share one packet per record too, built from the same frame:
    /// `42["update",RECORD,"CURSOR"]`; `subscribed` ends with the offset to recover from.
    @Test func socketIOClientsShareOnePacketPerRecord() async throws {
        try await within(60, "socket i o clients share one packet per record") {
            let broadcaster = Broadcaster(queueLimit: 16, resumeWindow: 0)
            let a = broadcaster.register(framing: .socketIO), b = broadcaster.register(framing: .socketIO), plain = broadcaster.register(framing: .webSocket)
            for client in [a, b, plain] { broadcaster.subscribe(client.id, to: .everything) }
            broadcaster.deliver(Self.record(1))
            let cursor = Self.record(1).cursor.description
            var packets: [ByteBuffer] = []
            for registration in [a, b] {
                var iterator = registration.stream.makeAsyncIterator()
                let subscribed = await iterator.next()
                #expect(subscribed?.cursor == nil)
                #expect(subscribed.map { String(buffer: $0.bytes) }?.hasPrefix(#"42["subscribed",{"#) == true)
                if let item = await iterator.next(), item.cursor == cursor { packets.append(item.bytes) }
            }
            #expect(packets.count == 2)
            #expect(packets.first.map { String(buffer: $0) } == #"42["update",{"cursor":"\#(cursor)","source":"trigger","op":"insert","schema":"public","table":"t","row":{"id":1}},"\#(cursor)"]"#)
            let pointers = packets.map { $0.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
            #expect(pointers[0] == pointers[1])
            var iterator = plain.stream.makeAsyncIterator()
            _ = await iterator.next()
            let update = await iterator.next()
            #expect(update.map { String(buffer: $0.bytes) }?.hasPrefix(#"{"event":"update","data":"#) == true)
        }
    }

    /// Recovery queues the CONNECT answer, then what the client missed, then live
    /// records: no `subscribed`, no gap, no repeat; an offset older than the window
    /// recovers nothing.
    @Test func recoverQueuesTheReplyThenTheMissedRecords() async throws {
        try await within(60, "recover queues the reply then the missed records") {
            let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 3)
            for n in 1...5 { broadcaster.deliver(Self.record(UInt64(n))) }
            let client = broadcaster.register(framing: .socketIO)
            #expect(!broadcaster.subscribe(client.id, to: .everything, since: Self.record(1).cursor, announcing: .message(ByteBuffer(string: "40{}"))))
            #expect(broadcaster.subscribe(client.id, to: .everything, since: Self.record(3).cursor, announcing: .message(ByteBuffer(string: "40{}"))))
            broadcaster.deliver(Self.record(6))
            var seen: [String] = []
            var iterator = client.stream.makeAsyncIterator()
            for _ in 0..<4 {
                if let item = await iterator.next() { seen.append(item.cursor ?? String(buffer: item.bytes)) }
            }
            #expect(seen == ["40{}"] + [4, 5, 6].map { Self.record($0).cursor.description })
        }
    }

    /// The broadcaster is the one holder of a subscription: leaving hands it back, also
    /// after the client was ended, so a Socket.IO session cut off as too slow can still
    /// be recovered with what it was subscribed to.
    @Test func unregisteringHandsBackTheSubscriptionEvenAfterAnEnd() {
        let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 0)
        let odd = Subscription(tables: ["public.odd"], ops: [.insert], filter: nil)
        let ended = broadcaster.register(framing: .socketIO), live = broadcaster.register(framing: .webSocket)
        let never = broadcaster.register(framing: .webSocket)
        broadcaster.subscribe(ended.id, to: odd)
        broadcaster.subscribe(live.id, to: .everything)
        broadcaster.expire(ended.id)
        #expect(ended.endReason == .credentialExpired)
        #expect(broadcaster.unregister(ended.id) == odd)
        #expect(broadcaster.unregister(ended.id) == nil, "once")
        #expect(broadcaster.unregister(live.id) == .everything)
        #expect(broadcaster.unregister(never.id) == nil)
        #expect(broadcaster.connectionCount == 0)
    }

    /// Clients that never subscribe (a Socket.IO handshake that never joins, a /ws that
    /// never sends ready for data) cost a record nothing: only subscribers are matched.
    @Test func onlySubscribedClientsAreMatchedAgainstARecord() {
        let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 0)
        let idle = (0..<1_000).map { _ in broadcaster.register(framing: .socketIO) }
        let reader = broadcaster.register(framing: .webSocket), leaver = broadcaster.register(framing: .webSocket)
        broadcaster.subscribe(reader.id, to: .everything)
        broadcaster.subscribe(leaver.id, to: .everything)
        broadcaster.unsubscribe(leaver.id)
        for n in UInt64(1)...10 { broadcaster.deliver(Self.record(n)) }
        #expect(broadcaster.clientsExamined == 10, "\(broadcaster.clientsExamined) clients matched for 10 records")
        for client in idle + [reader, leaver] { broadcaster.unregister(client.id) }
    }

    /// A trigger-mode cursor beyond the stream's newest record was never issued: it
    /// is expired, not a point to skip to (which would drop every record until then).
    @Test func aTriggerCursorThatWasNeverIssuedIsExpired() {
        let broadcaster = Broadcaster(resumeWindow: 100, origin: .trigger(stream: 9, sequence: 0))
        for n in UInt64(1)...3 { broadcaster.deliver(Self.record(n)) }
        let client = broadcaster.register(framing: .webSocket)
        #expect(!broadcaster.subscribe(client.id, to: .everything, since: .trigger(stream: 9, sequence: 1000)))
        #expect(broadcaster.subscribe(client.id, to: .everything, since: .trigger(stream: 9, sequence: 3)))
        #expect(broadcaster.subscribe(client.id, to: .everything, since: .trigger(stream: 9, sequence: 0)))
        broadcaster.unregister(client.id)
    }

    @Test func aClientThatFallsBehindIsCutOffWithoutTouchingTheOthers() async throws {
        try await within(60, "a client that falls behind is cut off without touching the others") {
            let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 0)
            let slow = broadcaster.register(framing: .webSocket), fast = broadcaster.register(framing: .webSocket)
            broadcaster.subscribe(slow.id, to: .everything)
            broadcaster.subscribe(fast.id, to: .everything)
            var fastFrames = 0
            var iterator = fast.stream.makeAsyncIterator()
            _ = await iterator.next()  // subscribed
            for n in 1...1_000 {
                broadcaster.deliver(Self.record(UInt64(n)))
                // The fast client keeps up; the slow one never reads.
                if await iterator.next()?.cursor != nil { fastFrames += 1 }
            }
            #expect(fastFrames == 1_000)
            #expect(slow.endReason == .tooSlow)
            #expect(fast.endReason == nil)
            // The slow client's queue ends after what it had room for, so its session can close it.
            var queued = 0
            for await _ in slow.stream { queued += 1 }
            #expect(queued == 64)
            #expect(broadcaster.clientCount == 1)
        }
    }

    @Test func closeAllEndsEveryQueueAfterWhatIsQueuedAndCountsConnectionsUntilTheyLeave() async throws {
        try await within(60, "close all ends every queue after what is queued and counts connections until they leave") {
            let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 0)
            let client = broadcaster.register(framing: .webSocket)
            broadcaster.subscribe(client.id, to: .everything)
            for n in 1...3 { broadcaster.deliver(Self.record(UInt64(n))) }
            broadcaster.closeAll()
            #expect(client.endReason == .shuttingDown)
            // Shutting down, the session still writes what was queued (subscribed + 3 updates).
            var queued = 0
            for await _ in client.stream { queued += 1 }
            #expect(queued == 4)
            #expect(broadcaster.clientCount == 0)
            #expect(broadcaster.connectionCount == 1, "still open until its session unregisters")
            broadcaster.unregister(client.id)
            #expect(broadcaster.connectionCount == 0)
            // Newcomers during shutdown get an ended queue.
            let late = broadcaster.register(framing: .webSocket)
            var lateItems = 0
            for await _ in late.stream { lateItems += 1 }
            #expect(lateItems == 0)
            #expect(broadcaster.connectionCount == 0)
        }
    }

    static func replicated(_ lsn: UInt64) -> ChangeRecord {
        var record = ChangeRecord(cursor: .replication(commitLSN: lsn, index: 0), source: .replication, op: .insert)
        record.schema = "public"
        record.table = "t"
        record.row = RawJSON(trusted: Array(#"{"id":\#(lsn)}"#.utf8))
        return record
    }

    @Test func theCaptureMayForgetOnlyWhatTheWindowLetGo() {
        let origin = Cursor.replication(commitLSN: 99, index: .max)
        let broadcaster = Broadcaster(resumeWindow: 3, origin: origin)
        // Nothing evicted yet: only what came before the window's start.
        #expect(broadcaster.flush() == .delivered(through: origin))
        for lsn in UInt64(100)...104 { broadcaster.deliver(Self.replicated(lsn)) }
        // The window holds 102, 103, 104: 101 is the newest record it let go.
        #expect(broadcaster.flush() == .delivered(through: Self.replicated(101).cursor))
    }

    @Test func aSinceAheadOfThisNodeSkipsWhatTheClientAlreadyHas() async throws {
        try await within(60, "a since ahead of this node skips what the client already has") {
            // A client coming from a node further ahead (or back before this one rebuilt
            // its window from the slot): it has everything through 105.
            let broadcaster = Broadcaster(resumeWindow: 100, origin: .replication(commitLSN: 99, index: .max))
            for lsn in UInt64(100)...102 { broadcaster.deliver(Self.replicated(lsn)) }
            let client = broadcaster.register(framing: .webSocket)
            #expect(broadcaster.subscribe(client.id, to: .everything, since: Self.replicated(105).cursor))
            for lsn in UInt64(103)...107 { broadcaster.deliver(Self.replicated(lsn)) }
            broadcaster.unregister(client.id)
            var cursors: [String] = []
            for await item in client.stream {
                if let cursor = item.cursor { cursors.append(cursor) }
            }
            #expect(cursors == [Self.replicated(106).cursor.description, Self.replicated(107).cursor.description])
        }
    }

    @Test func sinceReplaysTheWindowAndRefusesWhatFellOutOfIt() async throws {
        try await within(60, "since replays the window and refuses what fell out of it") {
            let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 5)
            for n in 1...8 { broadcaster.deliver(Self.record(UInt64(n), table: n % 2 == 0 ? "even" : "odd")) }
            let client = broadcaster.register(framing: .webSocket)
            #expect(!broadcaster.subscribe(client.id, to: .everything, since: Self.record(2).cursor), "record 3 fell out of the window")
            let evens = Subscription(tables: ["public.even"], ops: nil, filter: nil)
            #expect(broadcaster.subscribe(client.id, to: evens, since: Self.record(4).cursor))
            broadcaster.deliver(Self.record(10, table: "even"))
            broadcaster.unregister(client.id)
            var cursors: [String] = []
            for await item in client.stream { if let cursor = item.cursor { cursors.append(cursor) } }
            #expect(cursors == [6, 8, 10].map { Self.record($0).cursor.description })
        }
    }

    @Test func replayAppliesRowFiltersToRowsTheWindowKeepsOnlyInTheirFrames() async throws {
        try await within(60, "replay applies row filters to rows the window keeps only in their frames") {
            let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 10)
            for n in 1...4 { broadcaster.deliver(Self.record(UInt64(n))) }
            // A row over 1 MB goes into its frame without an intermediate copy.
            var big = Self.record(5)
            let pad = String(repeating: "é", count: 1 << 20)
            big.row = RawJSON(trusted: Array(#"{"id":5,"pad":"\#(pad)"}"#.utf8))
            broadcaster.deliver(big)
            let frame = EncodedRecord(big).bytes
            let decoded = try JSONSerialization.jsonObject(with: Data(frame.readableBytesView)) as? [String: Any]
            #expect(((decoded?["data"] as? [String: Any])?["row"] as? [String: Any])?["pad"] as? String == pad)

            let client = broadcaster.register(framing: .webSocket)
            let odd = Subscription(tables: nil, ops: nil, filter: try RowFilter(parsing: "id=in.(1,3,5)"))
            #expect(broadcaster.subscribe(client.id, to: odd, since: Self.record(1).cursor))
            broadcaster.unregister(client.id)
            var cursors: [String] = []
            for await item in client.stream { if let cursor = item.cursor { cursors.append(cursor) } }
            #expect(cursors == [3, 5].map { Self.record($0).cursor.description })
        }
    }
}

extension Broadcaster {
    /// A broadcaster with ``ServerOptions``' defaults but for the limits a test sets.
    convenience init(
        queueLimit: Int? = nil, queueBytes: Int? = nil, resumeWindow: Int, resumeWindowBytes: Int? = nil, origin: Cursor? = nil,
        catalog: CaptureState? = nil, onRulesDropped: (@Sendable (String) -> Void)? = nil
    ) {
        var options = ServerOptions()
        if let queueLimit { options.clientQueueLimit = queueLimit }
        if let queueBytes { options.clientQueueBytes = queueBytes }
        options.resumeWindow = resumeWindow
        if let resumeWindowBytes { options.resumeWindowBytes = resumeWindowBytes }
        self.init(options: options, origin: origin, catalog: catalog, onRulesDropped: onRulesDropped)
    }
}
