import Foundation
import RowcastCore
import RowcastWire
import Synchronization
import Testing

@testable import RowcastServer

/// `serve`'s resume window on disk (``WindowLog``): what it reads back is what was
/// written, a torn tail is cut, a damaged or foreign log is never taken for a whole
/// one, and the disk it takes follows the window.
@Suite struct WindowLogTests {
    static func directory() -> String {
        let path = NSTemporaryDirectory() + "window-log-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        return path
    }

    static func record(_ n: UInt32, commit: UInt64 = 0x1000, pad: Int = 10) -> ChangeRecord {
        var record = ChangeRecord(cursor: .replication(commitLSN: commit, index: n), source: .replication, op: .insert)
        record.schema = "public"
        record.table = "orders"
        record.row = RawJSON(trusted: Array(#"{"id":\#(n),"title":"\#(String(repeating: "x", count: pad))"}"#.utf8))
        record.xid = 700
        record.lsn = commit
        record.commitTime = "2026-12-07T12:00:00.000000Z"
        return record
    }

    /// A record of every shape, with random text in every field.
    static func randomRecord(_ n: UInt32, using generator: inout some RandomNumberGenerator) -> ChangeRecord {
        let op = Operation.allCases.randomElement(using: &generator) ?? .insert
        var record = ChangeRecord(
            cursor: Bool.random(using: &generator) ? .replication(commitLSN: UInt64(n) << 8, index: n) : .trigger(stream: 9, sequence: UInt64(n)),
            source: CaptureMode.allCases.randomElement(using: &generator) ?? .replication, op: op
        )
        func text() -> String? {
            guard Bool.random(using: &generator) else { return nil }
            let alphabet = Array("aé\"\\\n\u{0}😀 {}[],:")
            return String((0..<Int.random(in: 0...40, using: &generator)).map { _ in alphabet.randomElement(using: &generator) ?? "a" })
        }
        func json() -> RawJSON? {
            guard Bool.random(using: &generator) else { return nil }
            return RawJSON(trusted: Array(#"{"k":\#(Int.random(in: -5...5, using: &generator)),"t":"\#(String(repeating: "y", count: Int.random(in: 0...300, using: &generator)))"}"#.utf8))
        }
        record.schema = text()
        record.table = text()
        record.row = json()
        record.old = json()
        record.unchanged = Bool.random(using: &generator) ? (0..<Int.random(in: 0...3, using: &generator)).compactMap { _ in text() } : nil
        record.generated = Bool.random(using: &generator) ? (0..<Int.random(in: 0...3, using: &generator)).compactMap { _ in text() } : nil
        record.xid = Bool.random(using: &generator) ? UInt32.random(in: 0...UInt32.max, using: &generator) : nil
        record.lsn = Bool.random(using: &generator) ? UInt64.random(in: 0...UInt64.max, using: &generator) : nil
        record.commitTime = text()
        record.channel = text()
        record.payload = text()
        record.prefix = text()
        record.content = text()
        record.contentIsBase64 = Bool.random(using: &generator)
        record.transactional = Bool.random(using: &generator) ? Bool.random(using: &generator) : nil
        return record
    }

    /// A log in `directory` holding record 1 after `origin`, marked at 0x5000; let go at once.
    static func writeOne(_ directory: String, identity: String = "1/db/slot", origin: Cursor? = .replication(commitLSN: 0xFF, index: .max)) throws {
        let (log, _) = try WindowLog.open(directory: directory, identity: identity, policy: .never)
        log.reset(origin: origin)
        log.append(record(1), at: 5)
        log.mark(0x5000)
        _ = log.sync()
    }

    @Test func everyRecordReadBackEncodesToTheSameBytes() {
        var generator = SystemRandomNumberGenerator()
        for n in 0..<2_000 {
            let record = Self.randomRecord(UInt32(n), using: &generator)
            var bytes: [UInt8] = []
            record.appendBinary(to: &bytes)
            let back = ChangeRecord(binary: bytes[...])
            #expect(back == record, "record \(n) came back different")
            #expect(back.map { EncodedRecord($0).bytes } == EncodedRecord(record).bytes)
            // Cut anywhere, it is no record (never a wrong one, never a trap).
            let cut = Int.random(in: 0..<bytes.count, using: &generator)
            #expect(ChangeRecord(binary: bytes[..<cut]) == nil, "record \(n) cut at \(cut) of \(bytes.count) read as a record")
        }
    }

    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)[...]) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()[...]) == 0)
    }

    /// Written, synced, and reopened: the same records, origin and mark; the next
    /// segment starts after them.
    @Test func whatWasSyncedIsReadBackWhole() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let origin = Cursor.replication(commitLSN: 0xFFF, index: .max)
        do {
            let (log, loaded) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .always)
            #expect(!loaded.found)
            log.reset(origin: origin)
            for n in 0..<100 { log.append(Self.record(UInt32(n)), at: 1_000 + Int64(n)) }
            log.mark(0x2000)
            let durable = log.sync()
            #expect(durable?.cursor == Self.record(99).cursor)
            #expect(durable?.mark == 0x2000)
        }
        let (_, loaded) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .always)
        #expect(loaded.found)
        #expect(loaded.origin == origin)
        #expect(loaded.kept == 0x2000)
        #expect(loaded.records.map(\.record) == (0..<100).map { Self.record(UInt32($0)) })
        #expect(loaded.records.map(\.at) == (0..<100).map { 1_000 + Int64($0) })
        #expect(loaded.repairs.isEmpty)
    }

    /// `kill -9` mid-write leaves part of an entry at the end: it is cut, every whole
    /// record before it stays, and the file is whole again for the next start.
    @Test func aTornTailIsCutAndEveryWholeRecordStays() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let (log, _) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
            log.reset(origin: nil)
            for n in 0..<10 { log.append(Self.record(UInt32(n)), at: 5) }
            log.mark(0x1500)
            _ = log.sync()
            for n in 10..<12 { log.append(Self.record(UInt32(n), pad: 5_000), at: 5) }
            _ = log.sync()
        }
        let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasSuffix(".seg") })
        let path = directory + "/" + segment
        let whole = try #require(FileManager.default.contents(atPath: path))
        // The last record half written: its length and checksum, half of its payload.
        let torn = whole.prefix(whole.count - 2_600)
        try torn.write(to: URL(fileURLWithPath: path))
        let (_, loaded) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
        #expect(loaded.records.map(\.record.cursor) == (0..<11).map { Self.record(UInt32($0)).cursor })
        #expect(loaded.kept == 0x1500)
        #expect(loaded.repairs.count == 1 && loaded.repairs[0].contains("cut a torn tail"), "\(loaded.repairs)")
        let after = try #require(FileManager.default.contents(atPath: path))
        #expect(after.count < torn.count)
        // A flipped bit in a record is caught by its checksum: cut there too.
        var damaged = after
        damaged[damaged.count - 100] ^= 0x10
        try damaged.write(to: URL(fileURLWithPath: path))
        let (_, again) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
        #expect(again.records.map(\.record.cursor) == (0..<10).map { Self.record(UInt32($0)).cursor })
    }

    /// The disk follows the window: a segment goes once the window let go of all its
    /// records, and what is read back after that starts where the window does.
    @Test func segmentsGoOnceTheWindowLetsGoOfThem() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var kept: Int = 0
        do {
            let (log, _) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never, segmentBytes: 64 << 10)
            log.reset(origin: nil)
            for n in 0..<5_000 {
                log.append(Self.record(UInt32(n), pad: 200), at: 5)
                if n % 100 == 99 {
                    _ = log.sync()
                    // The window holds the last 500.
                    if n >= 500 { log.release(through: Self.record(UInt32(n - 500)).cursor) }
                }
            }
            log.mark(0x9999)
            _ = log.sync()
            let usage = log.diskUsage
            kept = usage.bytes
            #expect(usage.bytes < 300 << 10, "\(usage.bytes) bytes in \(usage.segments) segments for a window of about 130 KB")
        }
        let (_, loaded) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
        #expect(kept > 0)
        let first = try #require(loaded.records.first?.record.cursor)
        // Everything after the origin is there, and the window's 500 at least.
        #expect(loaded.origin.map { $0 < first } == true)
        #expect(loaded.records.count >= 500 && loaded.records.count < 2_000)
        #expect(loaded.records.last?.record.cursor == Self.record(4_999).cursor)
        #expect(loaded.kept == 0x9999)
    }

    /// A segment missing between two others is a gap: the log ends before it, never
    /// reads on past it.
    @Test func aSegmentMissingBetweenOthersEndsTheLogThere() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let (log, _) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never, segmentBytes: 8 << 10)
            log.reset(origin: nil)
            for n in 0..<300 {
                log.append(Self.record(UInt32(n), pad: 200), at: 5)
                if n % 20 == 19 { _ = log.sync() }
            }
            log.mark(0x7777)
            _ = log.sync()
        }
        let segments = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".seg") }.sorted()
        try #require(segments.count >= 4, "\(segments)")
        let (_, whole) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
        #expect(whole.records.count == 300)
        try FileManager.default.removeItem(atPath: directory + "/" + segments[1])
        let (_, cut) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
        let first = try #require(cut.records.last?.record.cursor)
        #expect(cut.records.count < 300 && cut.records.count > 0)
        #expect(cut.records.map(\.record.cursor) == (0..<cut.records.count).map { Self.record(UInt32($0)).cursor }, "records after the gap were read")
        #expect(cut.kept < 0x7777, "the mark after the gap was kept")
        #expect(first < Self.record(299).cursor)
    }

    /// A log of another cluster, database or slot is none of this stream's: discarded.
    @Test func aLogOfAnotherStreamIsDiscarded() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.writeOne(directory, origin: nil)
        let opened = try OpenedWindowLog.open(
            directory: directory, identity: "2/db/slot", policy: .never, slot: .init(confirmed: 0x100, origin: .replication(commitLSN: 0xFF, index: .max))
        ) { _, _ in }
        #expect(opened.restored.isEmpty)
        #expect(opened.origin == .replication(commitLSN: 0xFF, index: .max))
    }

    /// A log that ends before the slot's position (a machine crash with `never`, a
    /// restored disk, a slot dropped and made again) may miss records before it: the
    /// window starts empty at the slot, and says so, never with a gap.
    @Test func aLogThatEndsBeforeTheSlotIsDiscardedWithAWarning() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.writeOne(directory)
        var said: [String] = []
        let behind = try OpenedWindowLog.open(
            directory: directory, identity: "1/db/slot", policy: .never, slot: .init(confirmed: 0x6000, origin: .replication(commitLSN: 0x5FFF, index: .max))
        ) { line, warning in if warning { said.append(line) } }
        #expect(behind.restored.isEmpty)
        #expect(behind.origin == .replication(commitLSN: 0x5FFF, index: .max))
        #expect(said.count == 1 && said[0].contains("ends before the slot's confirmed position 0/6000"), "\(said)")
    }

    /// The same log reaching the slot's position is restored, its origin with it.
    @Test func aLogReachingTheSlotIsRestored() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.writeOne(directory)
        let opened = try OpenedWindowLog.open(
            directory: directory, identity: "1/db/slot", policy: .never, slot: .init(confirmed: 0x5000, origin: .replication(commitLSN: 0x4FFF, index: .max))
        ) { _, _ in }
        #expect(opened.restored.map(\.record) == [Self.record(1)])
        #expect(opened.origin == .replication(commitLSN: 0xFF, index: .max))
    }

    /// A log kept for one history, then read beside another: a failover to a standby
    /// (the slot made just now there, or a new timeline) or a restore (the log reaches
    /// past the server's WAL end). Each is discarded, never restored.
    @Test func aLogOfAnotherHistoryIsDiscarded() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func write() throws { try Self.writeOne(directory, identity: "1/1/db/slot") }
        let origin = Cursor.replication(commitLSN: 0x1FFF, index: .max)
        // Each opened log is let go (its lock with it) before the next is written.
        func open(_ slot: OpenedWindowLog.Slot, identity: String = "1/1/db/slot") throws -> (restored: Int, lostBefore: Cursor?, said: [String]) {
            try write()
            var said: [String] = []
            let opened = try OpenedWindowLog.open(directory: directory, identity: identity, policy: .never, slot: slot) { line, _ in said.append(line) }
            #expect(opened.origin == (opened.restored.isEmpty ? origin : .replication(commitLSN: 0xFF, index: .max)))
            return (opened.restored.count, opened.lostBefore, said)
        }
        let madeNow = try open(.init(confirmed: 0x2000, origin: origin, isNew: true))
        #expect(madeNow.restored == 0 && madeNow.said.contains { $0.contains("the slot was made just now") }, "\(madeNow.said)")
        let ahead = try open(.init(confirmed: 0x2000, origin: origin, serverWAL: 0x3000))
        #expect(ahead.restored == 0 && ahead.said.contains { $0.contains("past the server's WAL end 0/3000") }, "\(ahead.said)")
        let timeline = try open(.init(confirmed: 0x2000, origin: origin, serverWAL: 0x9000), identity: "1/2/db/slot")
        #expect(timeline.restored == 0 && timeline.said.contains { $0.contains("timeline") }, "\(timeline.said)")
        let recreated = try open(.init(confirmed: 0x2000, origin: origin, recreated: true, serverWAL: 0x9000))
        #expect(recreated.restored == 0 && recreated.lostBefore == origin)
        // The same history, reaching the slot: restored.
        let same = try open(.init(confirmed: 0x2000, origin: origin, serverWAL: 0x9000))
        #expect(same.restored == 1)
    }

    /// A table no longer captured is not served from the log either.
    @Test func restoredRecordsOfTablesNoLongerCapturedAreLeftOut() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let (log, _) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
            log.reset(origin: .replication(commitLSN: 0xFF, index: .max))
            var secret = Self.record(2)
            secret.table = "secrets"
            log.append(Self.record(1), at: 5)
            log.append(secret, at: 5)
            log.mark(0x5000)
            _ = log.sync()
        }
        let opened = try OpenedWindowLog.open(
            directory: directory, identity: "1/db/slot", policy: .never, slot: .init(confirmed: 0x1000, origin: .replication(commitLSN: 0xFFF, index: .max)),
            captures: { $0.table == "orders" }
        ) { _, _ in }
        #expect(opened.restored.map(\.record) == [Self.record(1)])
    }

    /// The slot resends what the log holds: skipped. A resent record the log does not
    /// hold as it is (another history: a restore) starts the window again before it,
    /// and is delivered; what the log holds before its origin is skipped too, even with
    /// no record left in the log.
    @Test func aResentRecordTheLogDoesNotHoldStartsTheWindowAgain() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = ServerOptions(port: 0)
        options.resumeWindowAge = .seconds(600)
        let origin = Cursor.replication(commitLSN: 0xFFF, index: .max)
        let (log, _) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
        log.reset(origin: origin)
        let restored = (0..<3).map { (record: Self.record(UInt32($0)), at: Broadcaster.wallMillis()) }
        let divergences = Mutex<[String]>([])
        let broadcaster = Broadcaster(
            options: options, origin: origin, log: log, restored: restored, onDivergence: { line in divergences.withLock { $0.append(line) } }
        )
        #expect(broadcaster.windowStats.records == 3)
        // Before the origin: skipped. The first two as the log holds them: skipped.
        broadcaster.deliver(Self.record(7, commit: 0x800))
        broadcaster.deliver(Self.record(0))
        broadcaster.deliver(Self.record(1))
        #expect(broadcaster.windowStats.records == 3 && divergences.withLock { $0.isEmpty })
        // The third is another row: the log is another history's.
        var other = Self.record(2)
        other.row = RawJSON(trusted: Array(#"{"id":2,"title":"restored"}"#.utf8))
        broadcaster.deliver(other)
        #expect(divergences.withLock { $0.count } == 1)
        #expect(broadcaster.windowStats.records == 1)
        // It starts just after the last record that matched.
        #expect(broadcaster.wasLost(before: Self.record(0).cursor) && !broadcaster.wasLost(before: Self.record(1).cursor))
        // And from then on, everything is new.
        broadcaster.deliver(Self.record(3))
        #expect(broadcaster.windowStats.records == 2)

        // A log with an origin and no record left: the slot's resend up to the origin is not new.
        let fresh = Broadcaster(options: options, origin: Self.record(5).cursor, log: log, restored: [])
        fresh.deliver(Self.record(4))
        fresh.deliver(Self.record(5))
        #expect(fresh.windowStats.records == 0)
        fresh.deliver(Self.record(6))
        #expect(fresh.windowStats.records == 1)
    }

    /// Two processes never share one log.
    @Test func aSecondOpenOfTheSameDirectoryIsRefused() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (log, _) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
        #expect(throws: WindowLogError.self) { _ = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never) }
        withExtendedLifetime(log) {}
    }

    /// The broadcaster reports what the log kept, not what the window let go, and a
    /// restarted one skips what it restored when the capture hands it again.
    @Test func theBroadcasterReportsWhatTheLogKeptAndSkipsWhatItRestored() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = ServerOptions(port: 0)
        options.resumeWindowAge = .seconds(600)
        let origin = Cursor.replication(commitLSN: 0xFFF, index: .max)
        do {
            let (log, _) = try WindowLog.open(directory: directory, identity: "1/db/slot", policy: .never)
            log.reset(origin: origin)
            let broadcaster = Broadcaster(options: options, origin: origin, log: log)
            for n in 0..<5 { broadcaster.deliver(Self.record(UInt32(n))) }
            broadcaster.passed(0x2000)
            // The window holds all five for ten minutes; the log has them now.
            #expect(broadcaster.flush() == .delivered(through: Self.record(4).cursor))
            #expect(broadcaster.keptPosition == 0x2000)
        }
        let opened = try OpenedWindowLog.open(
            directory: directory, identity: "1/db/slot", policy: .never, slot: .init(confirmed: 0x1000, origin: origin)
        ) { _, _ in }
        let broadcaster = Broadcaster(options: options, origin: opened.origin, log: opened.log, restored: opened.restored)
        #expect(broadcaster.windowStats.records == 5)
        // The slot resends from 0x1000: the five again, then a new one.
        for n in 0..<6 { broadcaster.deliver(Self.record(UInt32(n))) }
        #expect(broadcaster.windowStats.records == 6)
        #expect(broadcaster.flush() == .delivered(through: Self.record(5).cursor))
    }
}
