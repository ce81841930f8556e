import RowcastCore
import Testing

struct TransactionSnapshotTests {
    @Test func parsesPostgreSQLsTextFormAndRefusesAnythingElse() throws {
        let snapshot = try #require(TransactionSnapshot("100:105:101,103"))
        #expect(snapshot.xmin == 100 && snapshot.xmax == 105 && snapshot.xip == [101, 103])
        #expect(snapshot.description == "100:105:101,103")
        #expect(TransactionSnapshot("7:7:") == TransactionSnapshot(xmin: 7, xmax: 7, xip: []))
        for bad in ["", "1:2", "2:1:", "a:2:", "1:2:x", "1:2:3:4", "-1:2:"] {
            #expect(TransactionSnapshot(bad) == nil, "\(bad)")
        }
    }

    @Test func seesWhatCommittedBeforeIt() throws {
        let snapshot = try #require(TransactionSnapshot("100:105:101,103"))
        #expect(snapshot.sees(99) && snapshot.sees(100) && snapshot.sees(102) && snapshot.sees(104))
        #expect(!snapshot.sees(101) && !snapshot.sees(103) && !snapshot.sees(105) && !snapshot.sees(1_000))
    }

    /// A record carries the low 32 bits: read next to the snapshot's epoch, across the
    /// wrap from one epoch to the next in both directions.
    @Test func aRecordsThirtyTwoBitIdIsReadInTheSnapshotsEpoch() {
        let epoch: UInt64 = 7 << 32
        let near = TransactionSnapshot(xmin: epoch + 10, xmax: epoch + 20, xip: [epoch + 12])
        #expect(near.full(15) == epoch + 15)
        #expect(near.full(25) == epoch + 25)
        #expect(near.full(UInt32.max) == epoch - 1)
        #expect(near.sees(xid: 15) && !near.sees(xid: 12) && !near.sees(xid: 25) && near.sees(xid: UInt32.max))
        let end = TransactionSnapshot(xmin: epoch - 10, xmax: epoch - 2, xip: [])
        #expect(end.full(1) == epoch + 1)
        #expect(!end.sees(xid: 1) && end.sees(xid: UInt32.max - 5))
        let first = TransactionSnapshot(xmin: 3, xmax: 5, xip: [])
        #expect(first.full(4) == 4)
    }

    @Test func aLaterSnapshotCoversAnEarlierOne() {
        let earlier = TransactionSnapshot(xmin: 100, xmax: 105, xip: [101, 103])
        #expect(TransactionSnapshot(xmin: 101, xmax: 110, xip: [101, 103, 107]).covers(earlier))
        #expect(TransactionSnapshot(xmin: 110, xmax: 110, xip: []).covers(earlier))
        #expect(earlier.covers(earlier))
        // One the earlier sees still running in the later: not covered.
        #expect(!TransactionSnapshot(xmin: 102, xmax: 110, xip: [102]).covers(earlier))
        // Taken before it.
        #expect(!TransactionSnapshot(xmin: 100, xmax: 104, xip: [101]).covers(earlier))
    }
}
