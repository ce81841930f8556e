import RowcastCore
import Testing

struct DeliveredBatchesTests {
    @Test func aBatchIsRememberedUntilItsRetentionEnds() {
        var batches = DeliveredBatches(retention: 60, orphanRetention: 3600)
        batches.insert(10, at: 0)
        batches.insert(7, at: 5)
        batches.insert(10, at: 6)  // a replay does not extend it
        #expect(batches.contains(10) && batches.contains(7))
        #expect(batches.takeExpired(at: 59.9).isEmpty)
        #expect(batches.takeExpired(at: 60) == [10])
        #expect(!batches.contains(10) && batches.contains(7))
        #expect(batches.takeExpired(at: 1000) == [7])
        #expect(batches.count == 0)
    }

    @Test func expiryIsBoundedPerCallAndKeepsOrder() {
        var batches = DeliveredBatches(retention: 1, orphanRetention: 1)
        for id in 0..<25_000 { batches.insert(Int64(id), at: Double(id) / 1000) }
        var taken: [Int64] = []
        while case let next = batches.takeExpired(at: 100, limit: 10_000), !next.isEmpty {
            #expect(next.count <= 10_000)
            taken += next
        }
        #expect(taken == (0..<25_000).map(Int64.init))
        #expect(batches.count == 0)
    }

    @Test func theOrphanHorizonIsTheNewestSampleOlderThanItsRetention() {
        var batches = DeliveredBatches(retention: 60, orphanRetention: 3600)
        batches.noteHorizon(xmin: 100, at: 0)
        batches.noteHorizon(xmin: 200, at: 10)
        batches.noteHorizon(xmin: 300, at: 4000)
        #expect(batches.orphanHorizon(at: 3599) == nil)
        #expect(batches.orphanHorizon(at: 3610) == 200)
        #expect(batches.orphanHorizon(at: 3620) == nil)
        #expect(batches.orphanHorizon(at: 7600) == 300)
    }
}
