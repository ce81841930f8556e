import NIOCore
import RowcastCore
import RowcastTestSupport
import RowcastWire
import Testing

@testable import RowcastServer

/// A replay is read from the shared resume window as the client drains, so a client's
/// own budget bounds what it holds, whatever the window holds (Centrifugo's 1 MiB, not
/// the window's 64).
@Suite struct ReplayFromWindowTests {
    static func record(_ n: UInt64, padding: Int = 100_000, table: String = "t") -> ChangeRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 5, sequence: n), source: .trigger, op: .insert)
        record.schema = "public"
        record.table = table
        record.row = RawJSON(trusted: Array(#"{"id":\#(n),"pad":"\#(String(repeating: "x", count: padding))"}"#.utf8))
        return record
    }

    static func broadcaster(budget: Int = 1 << 20, window: Int = 1000, windowBytes: Int = 64 << 20) -> Broadcaster {
        var options = ServerOptions()
        options.clientQueueBytes = budget
        options.resumeWindow = window
        options.resumeWindowBytes = windowBytes
        return Broadcaster(options: options, origin: .trigger(stream: 5, sequence: 0))
    }

    /// "same" or where two cursor lists first differ, short enough for a failure message.
    static func difference(_ got: [String], _ wanted: [String]) -> String {
        guard got != wanted else { return "same" }
        let index = zip(got, wanted).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, wanted.count)
        return "got \(got.count) records, wanted \(wanted.count); first difference at \(index): \(index < got.count ? got[index] : "none") instead of \(index < wanted.count ? wanted[index] : "none")"
    }

    /// Reads what is queued, reporting each batch written, as a writer does.
    static func drain(_ client: Broadcaster.Registration, until done: (String) -> Bool) async -> [String] {
        var cursors: [String] = []
        while let batch = await client.queue.next() {
            cursors += batch.compactMap(\.cursor)
            client.wrote(bytes: batch.reduce(0) { $0 + $1.bytes.readableBytes })
            if let last = cursors.last, done(last) { break }
        }
        return cursors
    }

    @Test func aStalledReplayHoldsItsBudgetNotTheWindowAndThenGetsEverythingOnce() async throws {
        try await within(60, "a stalled replay holds its budget") {
            let broadcaster = Self.broadcaster()
            for n in UInt64(1)...300 { broadcaster.deliver(Self.record(n)) }
            #expect(broadcaster.windowStats.bytes > 25 << 20)
            let client = broadcaster.register(framing: .webSocket)
            #expect(broadcaster.subscribe(client.id, to: .everything, since: .trigger(stream: 5, sequence: 0)))
            // It reads nothing: what it holds stays within its budget, and it is not cut off.
            #expect(client.control.queued <= 1 << 20, "a stalled client holds \(client.control.queued) bytes")
            #expect(client.endReason == nil)
            for n in UInt64(301)...310 { broadcaster.deliver(Self.record(n)) }
            #expect(client.control.queued <= 1 << 20)
            // Once it reads, every record comes once, in order, replay then live.
            let last = Self.record(320).cursor.description
            let reader = Task { await Self.drain(client) { $0 == last } }
            for n in UInt64(311)...320 { broadcaster.deliver(Self.record(n)) }
            let cursors = await reader.value
            #expect(Self.difference(cursors, (UInt64(1)...320).map { Self.record($0).cursor.description }) == "same")
            #expect(client.endReason == nil)
            broadcaster.unregister(client.id)
        }
    }

    /// `last` reads from the window too: the newest matching records, then live ones.
    @Test func lastAndFiltersReplayOnlyWhatMatches() async throws {
        try await within(60, "last and filters replay only what matches") {
            let broadcaster = Self.broadcaster()
            for n in UInt64(1)...200 { broadcaster.deliver(Self.record(n, table: n % 2 == 0 ? "even" : "odd")) }
            let evens = Subscription(tables: ["public.even"], ops: nil, filter: nil)
            let client = broadcaster.register(framing: .webSocket)
            #expect(broadcaster.subscribe(client.id, to: evens, last: 30))
            #expect(client.control.queued <= 1 << 20)
            broadcaster.deliver(Self.record(201, table: "odd"))
            broadcaster.deliver(Self.record(202, table: "even"))
            let last = Self.record(202).cursor.description
            let cursors = await Self.drain(client) { $0 == last }
            #expect(Self.difference(cursors, stride(from: UInt64(142), through: 202, by: 2).map { Self.record($0).cursor.description }) == "same")
            broadcaster.unregister(client.id)
        }
    }

    /// A replay that the window overtakes (the client reads slower than records are
    /// evicted) ends as too slow, with the last cursor it got: never a gap.
    @Test func aReplayTheWindowOvertakesIsCutOffNotGapped() async throws {
        try await within(60, "a replay the window overtakes is cut off") {
            let broadcaster = Self.broadcaster(window: 50)
            for n in UInt64(1)...50 { broadcaster.deliver(Self.record(n)) }
            let client = broadcaster.register(framing: .webSocket)
            #expect(broadcaster.subscribe(client.id, to: .everything, since: .trigger(stream: 5, sequence: 0)))
            // The window moves on by a whole window while the client reads nothing.
            for n in UInt64(51)...120 { broadcaster.deliver(Self.record(n)) }
            var cursors: [String] = []
            while let batch = await client.queue.next() {
                cursors += batch.compactMap(\.cursor)
                client.wrote(bytes: batch.reduce(0) { $0 + $1.bytes.readableBytes })
            }
            #expect(client.endReason == .tooSlow)
            let expected = (UInt64(1)...UInt64(cursors.count)).map { Self.record($0).cursor.description }
            #expect(Self.difference(cursors, expected) == "same", "what it got is a prefix, in order")
            #expect(cursors.count < 120)
            broadcaster.unregister(client.id)
        }
    }

    /// `last` whose oldest record the window lets go before the client read on: cut
    /// off, never started at a later record (a gap).
    @Test func lastWhoseFirstRecordAgesOutBeforeItIsReadIsCutOff() async throws {
        try await within(60, "last whose first record ages out is cut off") {
            let broadcaster = Self.broadcaster(window: 3)
            // Each record is over half the budget: after `subscribed`, the first waits.
            for n in UInt64(1)...3 { broadcaster.deliver(Self.record(n, padding: 600_000)) }
            let client = broadcaster.register(framing: .webSocket)
            #expect(broadcaster.subscribe(client.id, to: .everything, last: 2))
            for n in UInt64(4)...5 { broadcaster.deliver(Self.record(n, padding: 600_000)) }
            var cursors: [String] = []
            while let batch = await client.queue.next() {
                cursors += batch.compactMap(\.cursor)
                client.wrote(bytes: batch.reduce(0) { $0 + $1.bytes.readableBytes })
            }
            #expect(client.endReason == .tooSlow)
            #expect(cursors.isEmpty, "got \(cursors.count) records instead of none")
            broadcaster.unregister(client.id)
        }
    }

    /// A Socket.IO recovery of a window many times the client's budget: its CONNECT
    /// answer, then every record after its offset as packets, then live ones; never cut
    /// off by its own budget (it used to be, and then looped reconnecting).
    @Test func aSocketIORecoveryOfAWholeWindowLargerThanTheBudgetCompletes() async throws {
        try await within(60, "a Socket.IO recovery of a whole window completes") {
            let broadcaster = Self.broadcaster()
            for n in UInt64(1)...100 { broadcaster.deliver(Self.record(n)) }
            let client = broadcaster.register(framing: .socketIO)
            let reply = ByteBuffer(string: #"40{"sid":"s","pid":"p"}"#)
            #expect(broadcaster.subscribe(client.id, to: .everything, since: .trigger(stream: 5, sequence: 0), announcing: .message(reply)))
            #expect(client.control.queued <= 1 << 20)
            let last = Self.record(101).cursor.description
            let reader = Task { () -> (first: String?, cursors: [String], packets: Bool) in
                var first: String?
                var cursors: [String] = []
                var packets = true
                while let batch = await client.queue.next() {
                    if first == nil { first = batch.first.map { String(buffer: $0.bytes) } }
                    for item in batch where item.cursor != nil { packets = packets && item.bytes.readableBytesView.starts(with: Array(#"42["update","#.utf8)) }
                    cursors += batch.compactMap(\.cursor)
                    client.wrote(bytes: batch.reduce(0) { $0 + $1.bytes.readableBytes })
                    if cursors.last == last { break }
                }
                return (first, cursors, packets)
            }
            broadcaster.deliver(Self.record(101))
            let (first, cursors, packets) = await reader.value
            #expect(first == String(buffer: reply))
            #expect(packets)
            #expect(Self.difference(cursors, (UInt64(1)...101).map { Self.record($0).cursor.description }) == "same")
            #expect(client.endReason == nil)
            broadcaster.unregister(client.id)
        }
    }

    /// A client that stops reading in the middle of a replay is cut off once the window
    /// lets go of where it is, as a live client is once it falls a window behind: it
    /// never holds its connection and its part of the replay for ever.
    @Test func aReplayingClientThatStopsReadingIsCutOffWhenTheWindowMovesOn() {
        let broadcaster = Self.broadcaster(window: 50)
        for n in UInt64(1)...50 { broadcaster.deliver(Self.record(n)) }
        let client = broadcaster.register(framing: .serverSentEvents)
        #expect(broadcaster.subscribe(client.id, to: .everything, since: .trigger(stream: 5, sequence: 0)))
        #expect(client.endReason == nil)
        for n in UInt64(51)...60 { broadcaster.deliver(Self.record(n)) }
        #expect(client.endReason == .tooSlow, "a stalled replay the window overtook is still open")
        broadcaster.unregister(client.id)
    }
}
