import Testing

@testable import RowcastCore
import RowcastTestSupport

/// pgoutput and replication-protocol bytes, written the way the server writes them.
enum WireBytes {
    static func u64(_ value: UInt64) -> [UInt8] { (0..<8).reversed().map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }
    static func u32(_ value: UInt32) -> [UInt8] { (0..<4).reversed().map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) } }
    static func u16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
    static func cString(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }

    static func xLogData(_ message: [UInt8], start: UInt64 = 0, end: UInt64 = 0) -> [UInt8] {
        [0x77] + u64(start) + u64(end) + u64(0) + message
    }
    static func keepalive(walEnd: UInt64, reply: Bool = false) -> [UInt8] {
        [0x6B] + u64(walEnd) + u64(0) + [reply ? 1 : 0]
    }
    static func begin(finalLSN: UInt64, xid: UInt32 = 700) -> [UInt8] {
        xLogData([0x42] + u64(finalLSN) + u64(0) + u32(xid), start: finalLSN - 100, end: finalLSN)
    }
    static func commit(commitLSN: UInt64, endLSN: UInt64) -> [UInt8] {
        xLogData([0x43, 0] + u64(commitLSN) + u64(endLSN) + u64(0), start: endLSN, end: endLSN)
    }
    /// `public.<name>(id int4 key, title text)`, or with `titleType` for the second column.
    static func relation(oid: UInt32, name: String, titleType: UInt32 = 25) -> [UInt8] {
        xLogData(
            [0x52] + u32(oid) + cString("public") + cString(name) + [0x64] + u16(2)
                + [1] + cString("id") + u32(23) + u32(UInt32(bitPattern: -1))
                + [0] + cString("title") + u32(titleType) + u32(UInt32(bitPattern: -1))
        )
    }
    static func insert(oid: UInt32, id: Int, title: String) -> [UInt8] {
        let idText = Array(String(id).utf8)
        let titleText = Array(title.utf8)
        return xLogData(
            [0x49] + u32(oid) + [0x4E] + u16(2)
                + [0x74] + u32(UInt32(idText.count)) + idText
                + [0x74] + u32(UInt32(titleText.count)) + titleText
        )
    }
    static func message(lsn: UInt64, prefix: String, content: String) -> [UInt8] {
        xLogData([0x4D, 0] + u64(lsn) + cString(prefix) + u32(UInt32(content.utf8.count)) + Array(content.utf8), start: lsn, end: lsn)
    }
}

/// Drives a session the way the capture loop does, recording what it asks for.
struct SessionHarness {
    var session: ReplicationSession
    var now: Double = 0
    var actions: [ReplicationSession.Action] = []

    /// A session that has sent its first status update at time 0, as a fresh stream does.
    init(_ configuration: ReplicationSession.Configuration = .init()) {
        session = ReplicationSession(configuration: configuration)
        feed(.tick(at: 0))
        feed(.sinkProgress(.delivered(through: nil), at: 0))
    }

    /// Feeds one event and returns the actions it produced (without answering flushes).
    @discardableResult
    mutating func feed(_ event: ReplicationSession.Event) -> [ReplicationSession.Action] {
        actions.removeAll()
        session.handle(event, into: &actions)
        return actions
    }

    mutating func receive(_ bytes: [UInt8]) -> [ReplicationSession.Action] { feed(.received(bytes, at: now)) }

    /// Answers a flush with the sink's progress.
    mutating func flushed(_ progress: SinkProgress) -> [ReplicationSession.Action] { feed(.sinkProgress(progress, at: now)) }

    /// A transaction of one insert into relation 1 (which must have been sent).
    mutating func transaction(finalLSN: UInt64, endLSN: UInt64, id: Int) -> [ReplicationSession.Action] {
        var all = receive(WireBytes.begin(finalLSN: finalLSN))
        all += receive(WireBytes.insert(oid: 1, id: id, title: "row \(id)"))
        all += receive(WireBytes.commit(commitLSN: finalLSN, endLSN: endLSN))
        return all
    }
}

extension [ReplicationSession.Action] {
    var records: [ChangeRecord] {
        compactMap { if case .deliver(let record) = $0 { record } else { nil } }
    }
    var statuses: [UInt64] {
        compactMap { if case .sendStatus(_, let flushed) = $0 { flushed } else { nil } }
    }
    var asksToFlush: Bool { contains(.flushSink) }
}

@Suite struct ReplicationSessionTests {
    @Test func aKeepaliveAskingForAReplyGetsOneAfterTheSinkFlushes() {
        var harness = SessionHarness()
        #expect(harness.receive(WireBytes.keepalive(walEnd: 0x500, reply: true)) == [.flushSink])
        // Nothing in flight: the server's WAL end is confirmed, so a quiet slot holds back no WAL.
        #expect(harness.flushed(.delivered(through: nil)) == [.sendStatus(written: 0x500, flushed: 0x500)])
    }

    @Test func aKeepaliveNotAskingGetsNoReplyBeforeTheTimer() {
        var harness = SessionHarness(.init(statusInterval: 10))
        harness.now = 1
        #expect(harness.receive(WireBytes.keepalive(walEnd: 0x500)) == [])
        harness.now = 11
        #expect(harness.feed(.tick(at: 11)) == [.flushSink])
        #expect(harness.flushed(.delivered(through: nil)).statuses == [0x500])
    }

    @Test func duringALongTransactionStatusGoesOutOnTheTimerWithoutConfirmingIt() {
        var harness = SessionHarness(.init(statusInterval: 10))
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        _ = harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1)
        _ = harness.feed(.caughtUp(at: 0))
        #expect(harness.flushed(.delivered(through: Cursor.replication(commitLSN: 0x1000, index: 0))).isEmpty)
        #expect(harness.session.acknowledgement.confirmed == 0x1010)
        _ = harness.receive(WireBytes.begin(finalLSN: 0x9000))
        var delivered: [ChangeRecord] = []
        for id in 2...50 {
            harness.now = Double(id)  // 49 seconds pass inside one transaction
            let actions = harness.receive(WireBytes.insert(oid: 1, id: id, title: "x"))
            delivered += actions.records
            if actions.asksToFlush {
                // The status confirms the last commit, not the transaction in flight.
                #expect(harness.flushed(.delivered(through: delivered.last?.cursor)).statuses == [0x1010])
            }
        }
        #expect(delivered.count == 49)
    }

    @Test func aPositionIsConfirmedOnlyAfterTheSinkDeliveredEveryRecordBeforeIt() {
        var harness = SessionHarness()
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        let first = harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1).records
        let second = harness.transaction(finalLSN: 0x2000, endLSN: 0x2010, id: 2).records
        #expect(first.count == 1 && second.count == 1)
        #expect(harness.feed(.caughtUp(at: 0)) == [.flushSink])
        // The sink wrote nothing yet.
        #expect(harness.flushed(.delivered(through: nil)).isEmpty)
        #expect(harness.session.acknowledgement.confirmed == 0)
        #expect(harness.feed(.caughtUp(at: 0)) == [.flushSink])
        // The sink wrote the first record only.
        #expect(harness.flushed(.delivered(through: first[0].cursor)).isEmpty)
        #expect(harness.session.acknowledgement.confirmed == 0x1010)
        #expect(harness.feed(.caughtUp(at: 0)) == [.flushSink])
        #expect(harness.flushed(.delivered(through: second[0].cursor)).isEmpty)
        #expect(harness.session.acknowledgement.confirmed == 0x2010)
    }

    @Test func aFailedSinkConfirmsNothingPastWhatItWroteAndEndsTheSession() {
        var harness = SessionHarness()
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        let first = harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1).records
        _ = harness.transaction(finalLSN: 0x2000, endLSN: 0x2010, id: 2)
        #expect(harness.feed(.caughtUp(at: 0)) == [.flushSink])
        let actions = harness.flushed(.failed(through: first[0].cursor, reason: "cannot write to stdout: No space left on device"))
        #expect(actions == [
            .sendStatus(written: 0x2010, flushed: 0x1010),
            .finish(.sinkFailed("cannot write to stdout: No space left on device")),
        ])
        // Finished: nothing more is read or delivered.
        #expect(harness.transaction(finalLSN: 0x3000, endLSN: 0x3010, id: 3).isEmpty)
        #expect(harness.session.finished == .sinkFailed("cannot write to stdout: No space left on device"))
    }

    @Test func endposDeliversExactlyTheTransactionsCommittedBeforeIt() {
        var harness = SessionHarness(.init(endPosition: 0x2000))
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        #expect(harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1).records.count == 1)
        // The next transaction commits at the end position: it is not printed, even
        // though no keepalive came between them.
        let begin = harness.receive(WireBytes.begin(finalLSN: 0x2000))
        #expect(begin == [.flushSink])
        #expect(harness.receive(WireBytes.insert(oid: 1, id: 2, title: "late")).isEmpty)
        let end = harness.flushed(.delivered(through: Cursor.replication(commitLSN: 0x1000, index: 0)))
        #expect(end == [.sendStatus(written: 0x2000, flushed: 0x2000), .finish(.reachedEnd)])
    }

    @Test func endposEndsAtACommitThatReachesItOrAKeepalivePastIt() {
        var atCommit = SessionHarness(.init(endPosition: 0x1010))
        _ = atCommit.receive(WireBytes.relation(oid: 1, name: "items"))
        let actions = atCommit.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1)
        #expect(actions.records.count == 1 && actions.last == .flushSink)
        #expect(atCommit.flushed(.delivered(through: actions.records[0].cursor)) == [.sendStatus(written: 0x1010, flushed: 0x1010), .finish(.reachedEnd)])

        var idle = SessionHarness(.init(endPosition: 0x3000))
        #expect(idle.receive(WireBytes.keepalive(walEnd: 0x2FFF)) == [])
        #expect(idle.receive(WireBytes.keepalive(walEnd: 0x4000)) == [.flushSink])
        #expect(idle.flushed(.delivered(through: nil)) == [.sendStatus(written: 0x4000, flushed: 0x3000), .finish(.reachedEnd)])
    }

    @Test func afterAReconnectResentRecordsAreSkippedByCursor() {
        var harness = SessionHarness()
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        let first = harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1).records
        #expect(first.count == 1)
        _ = harness.feed(.disconnected)
        // The slot resends from its confirmed position: the relation again, then the same transaction.
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        #expect(harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1).records.isEmpty)
        #expect(harness.transaction(finalLSN: 0x2000, endLSN: 0x2010, id: 2).records.map(\.cursor) == [.replication(commitLSN: 0x2000, index: 0)])
        _ = harness.feed(.caughtUp(at: 0))
        _ = harness.flushed(.delivered(through: .replication(commitLSN: 0x2000, index: 0)))
        #expect(harness.session.acknowledgement.confirmed == 0x2010)
    }

    @Test func sinceSkipsUpToAndIncludingItsCursor() {
        var harness = SessionHarness(.init(since: .replication(commitLSN: 0x1000, index: 0)))
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        #expect(harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1).records.isEmpty)
        #expect(harness.transaction(finalLSN: 0x2000, endLSN: 0x2010, id: 2).records.count == 1)
        // Positions whose records were skipped need no delivery to be confirmed.
        _ = harness.feed(.caughtUp(at: 0))
        _ = harness.flushed(.delivered(through: nil))
        #expect(harness.session.acknowledgement.confirmed == 0x1010)
    }

    @Test func recordsCarryTheRowCursorAndTransactionAndTheTableFilterApplies() throws {
        var harness = SessionHarness(.init(tables: [TableName(schema: "public", name: "items")]))
        #expect(harness.receive(WireBytes.relation(oid: 1, name: "items")) == [.tableSeen("public.items", columns: ["id": .number, "title": .text], wholeOldRows: false, relation: 1, types: ["id": 23, "title": 25]), .lookUpGenerated(1)])
        #expect(harness.receive(WireBytes.relation(oid: 2, name: "other")).isEmpty, "a table not asked for is not reported")
        _ = harness.receive(WireBytes.begin(finalLSN: 0x1000, xid: 42))
        var records = harness.receive(WireBytes.insert(oid: 2, id: 9, title: "skipped")).records
        records += harness.receive(WireBytes.insert(oid: 1, id: 7, title: "a \"q\"")).records
        let record = try #require(records.first)
        #expect(records.count == 1)
        #expect(record.row?.text == #"{"id":7,"title":"a \"q\""}"#)
        #expect(record.cursor == .replication(commitLSN: 0x1000, index: 1))
        #expect(record.xid == 42 && record.lsn == 0x1000 && record.table == "items" && record.schema == "public")
    }

    @Test func aColumnOfAUserTypeAsksTheCatalogOnceItsRelationArrives() {
        var harness = SessionHarness()
        #expect(harness.receive(WireBytes.relation(oid: 1, name: "items", titleType: 90001)) == [
            .lookUpTypes([90001]),
            .tableSeen("public.items", columns: ["id": .number, "title": .other], wholeOldRows: false, relation: 1, types: ["id": 23, "title": 90001]),
            .lookUpGenerated(1),
        ])
        harness.feed(.typesLearned([90001: .json]))
        _ = harness.receive(WireBytes.begin(finalLSN: 0x1000))
        let records = harness.receive(WireBytes.insert(oid: 1, id: 1, title: #"{"a":1}"#)).records
        #expect(records.first?.row?.text == #"{"id":1,"title":{"a":1}}"#)
    }

    /// pgoutput leaves stored generated columns out: each record of the table says
    /// which (those the server did send, a PostgreSQL 18 publication's, are not named).
    @Test func recordsNameTheGeneratedColumnsTheServerDidNotSend() {
        var harness = SessionHarness()
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        harness.feed(.generatedLearned(1, columns: ["total", "title"]))
        _ = harness.receive(WireBytes.begin(finalLSN: 0x1000))
        let records = harness.receive(WireBytes.insert(oid: 1, id: 1, title: "a")).records
        #expect(records.first?.generated == ["total"])
        #expect(records.first.map { String(decoding: $0.jsonBytes(), as: UTF8.self) }?.contains(#""generated":["total"]"#) == true)
        harness.feed(.generatedLearned(1, columns: []))
        let plain = harness.receive(WireBytes.insert(oid: 1, id: 2, title: "b")).records
        #expect(plain.first?.generated == nil)
    }

    @Test func malformedBytesAskForAReconnectNamingWhatWasWrong() {
        var harness = SessionHarness()
        let actions = harness.receive([0x77, 1, 2])
        guard case .reconnect(let violation)? = actions.first else {
            Issue.record("expected a reconnect, got \(actions)")
            return
        }
        #expect(violation.description.contains("XLogData"))
        #expect(harness.receive(WireBytes.insert(oid: 5, id: 1, title: "x")).first.map { if case .reconnect = $0 { true } else { false } } == true)
    }

    @Test func aStopFlushesConfirmsAndFinishes() {
        var harness = SessionHarness()
        _ = harness.receive(WireBytes.relation(oid: 1, name: "items"))
        let records = harness.transaction(finalLSN: 0x1000, endLSN: 0x1010, id: 1).records
        #expect(harness.feed(.stop) == [.flushSink])
        #expect(harness.flushed(.delivered(through: records.last?.cursor)) == [.sendStatus(written: 0x1010, flushed: 0x1010), .finish(.stopped)])
    }

    @Test func aNonTransactionalMessageIsDeliveredAndItsPositionConfirmed() {
        var harness = SessionHarness()
        let records = harness.receive(WireBytes.message(lsn: 0x3000, prefix: "app", content: "hello")).records
        #expect(records.map(\.content) == ["hello"])
        #expect(records.first?.transactional == false)
        _ = harness.feed(.caughtUp(at: 0))
        _ = harness.flushed(.delivered(through: records.first?.cursor))
        #expect(harness.session.acknowledgement.confirmed == 0x3000)
    }
}

@Suite struct AcknowledgementTests {
    let a = Cursor.replication(commitLSN: 0x100, index: 0)
    let b = Cursor.replication(commitLSN: 0x200, index: 0)

    @Test func positionsWaitForTheSinkInOrderAndNeverMoveBack() {
        var ack = Acknowledgement()
        ack.reach(0x110, after: a)
        ack.reach(0x150, after: a)  // a commit without records: merged with the one before
        ack.reach(0x210, after: b)
        #expect(ack.confirmed == 0 && ack.waiting == 2)
        ack.sinkDelivered(through: a)
        #expect(ack.confirmed == 0x150)
        ack.sinkDelivered(through: nil)
        ack.reach(0x140, after: a)
        #expect(ack.confirmed == 0x150)
        ack.sinkDelivered(through: b)
        #expect(ack.confirmed == 0x210 && ack.waiting == 0)
        ack.reach(0x300, after: b)
        #expect(ack.confirmed == 0x300)
    }

    /// A sink that keeps records itself (serve's window log) holds confirmation to
    /// what it durably kept, however far delivery went; never below the start.
    @Test func aSinkThatKeepsRecordsHoldsConfirmationToWhatItKept() {
        var ack = Acknowledgement(confirmed: 0x100)
        ack.reach(0x210, after: b)
        ack.sinkDelivered(through: b)
        #expect(ack.confirmed == 0x210)
        ack.sinkKept(0x180)
        #expect(ack.confirmed == 0x180)
        ack.reach(0x500, after: b)
        #expect(ack.confirmed == 0x180 && ack.reached == 0x500)
        ack.sinkKept(0x150)  // never back
        #expect(ack.confirmed == 0x180)
        ack.sinkKept(0x500)
        #expect(ack.confirmed == 0x500)
        ack.sinkKept(0x900)  // kept beyond what was delivered: delivery still bounds it
        ack.reach(0x950, after: .replication(commitLSN: 0x900, index: 0))
        #expect(ack.confirmed == 0x500)
        var fresh = Acknowledgement(confirmed: 0x100)
        fresh.sinkKept(0x50)
        #expect(fresh.confirmed == 0x100)
        // A sink that gives up keeping (a failed log): delivery alone decides again.
        ack.sinkKept(nil)
        #expect(ack.confirmed == 0x500)
    }

    @Test func staysBoundedWhenTheSinkKeepsUp() {
        var ack = Acknowledgement()
        for index in 0..<10_000 {
            let cursor = Cursor.replication(commitLSN: UInt64(index) * 16, index: 0)
            ack.reach(UInt64(index) * 16 + 8, after: cursor)
            ack.sinkDelivered(through: cursor)
        }
        #expect(ack.waiting == 0 && ack.confirmed == 9_999 * 16 + 8)
    }
}
