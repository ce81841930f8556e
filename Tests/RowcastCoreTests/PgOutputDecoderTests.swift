import Testing
@testable import RowcastCore

extension Array where Element == UInt8 {
    init(hex: String) {
        var bytes: [UInt8] = []
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            bytes.append(UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) ?? 0)
        }
        self = bytes
    }
}

@Suite struct PgOutputDecoderTests {
    static let decoded: [PgOutputMessage] = PgOutputFixtures.messages.compactMap {
        try? PgOutputMessage.decode([UInt8](hex: $0)[...])
    }

    @Test func everyCapturedMessageDecodes() throws {
        for hex in PgOutputFixtures.messages {
            _ = try PgOutputMessage.decode([UInt8](hex: hex)[...])
        }
        #expect(Self.decoded.count == PgOutputFixtures.messages.count)
    }

    @Test func decodesTheTransactionAsTheServerSentIt() throws {
        let messages = Self.decoded
        guard case .message(let raw) = messages[0] else { Issue.record("expected a message"); return }
        #expect(!raw.transactional)
        #expect(raw.prefix == "raw")
        #expect(Array(raw.content) == [0xFF, 0x00])

        guard case .begin(let begin) = messages[1], case .commit(let commit) = messages[14] else {
            Issue.record("expected Begin … Commit")
            return
        }
        #expect(begin.finalLSN == commit.commitLSN)
        #expect(commit.endLSN > commit.commitLSN)
        #expect(begin.commitTime == commit.commitTime)

        guard case .type(let mood) = messages[2] else { Issue.record("expected Type"); return }
        #expect(mood.name == "mood" && mood.namespace == "public")

        guard case .relation(let fx) = messages[3] else { Issue.record("expected Relation"); return }
        #expect(fx.namespace == "public" && fx.name == "fx")
        #expect(fx.replicaIdentity == UInt8(ascii: "d"))
        #expect(fx.columns.map(\.name) == ["id", "note", "m", "big"])
        #expect(fx.columns.map(\.isKey) == [true, false, false, false])
        #expect(fx.columns[0].typeOID == 23 && fx.columns[1].typeOID == 25 && fx.columns[2].typeOID == mood.oid)

        guard case .insert(let first) = messages[4], case .insert(let second) = messages[5] else {
            Issue.record("expected two inserts")
            return
        }
        #expect(first.relationOID == fx.oid)
        #expect(first.new.values[0] == .text(Array("1".utf8)[...]))
        #expect(first.new.values[1] == .text(Array("héllo".utf8)[...]))
        #expect(first.new.values[2] == .text(Array("happy".utf8)[...]))
        #expect(second.new.values[1...] == [.null, .null, .null])

        guard case .update(let toast) = messages[6] else { Issue.record("expected Update"); return }
        #expect(toast.old == nil)
        #expect(toast.new.values[3] == .unchangedToast)

        guard case .update(let rekey) = messages[7], case .key(let oldKey)? = rekey.old else {
            Issue.record("expected an Update with the old key")
            return
        }
        #expect(oldKey.values[0] == .text(Array("2".utf8)[...]))
        #expect(rekey.new.values[0] == .text(Array("3".utf8)[...]))

        guard case .delete(let delete) = messages[8], case .key(let deletedKey) = delete.old else {
            Issue.record("expected a Delete by key")
            return
        }
        #expect(deletedKey.values[0] == .text(Array("3".utf8)[...]))

        guard case .relation(let full) = messages[9], case .update(let fullUpdate) = messages[11],
            case .delete(let fullDelete) = messages[12]
        else {
            Issue.record("expected fxfull's Relation, Update and Delete")
            return
        }
        #expect(full.replicaIdentity == UInt8(ascii: "f"))
        #expect(fullUpdate.old == .row(TupleDataFixture.make(["1", "a"])))
        #expect(fullDelete.old == .row(TupleDataFixture.make(["1", "b"])))

        guard case .message(let transactional) = messages[13] else { Issue.record("expected a message"); return }
        #expect(transactional.transactional && transactional.prefix == "pfx" && Array(transactional.content) == Array("hi".utf8))

        guard case .truncate(let truncate) = messages[19] else { Issue.record("expected Truncate"); return }
        #expect(truncate.relationOIDs.count == 2)
        #expect(truncate.relationOIDs.contains(fx.oid))
    }

    @Test func truncatedMessagesAreTypedErrors() {
        for hex in PgOutputFixtures.messages {
            let bytes = [UInt8](hex: hex)
            for length in 0..<bytes.count {
                #expect(throws: DecodingError.self) { try PgOutputMessage.decode(bytes[0..<length]) }
            }
        }
    }

    @Test func trailingBytesAreTypedErrors() {
        for hex in PgOutputFixtures.messages {
            let bytes = [UInt8](hex: hex) + [0]
            // A Message's content and XLogData's payload take the rest by length: still one byte too many.
            #expect(throws: DecodingError.self) { try PgOutputMessage.decode(bytes[...]) }
        }
    }

    @Test func unknownTagsAndKindsAreNamed() throws {
        #expect {
            try PgOutputMessage.decode([UInt8(ascii: "Z"), 0, 0][...])
        } throws: { error in
            (error as? DecodingError)?.found == "'Z'"
        }
        // An Insert whose tuple has a column of kind 'x'.
        let insert: [UInt8] = [UInt8(ascii: "I"), 0, 0, 0, 1, UInt8(ascii: "N"), 0, 1, UInt8(ascii: "x")]
        #expect {
            try PgOutputMessage.decode(insert[...])
        } throws: { error in
            "\(error)" == "malformed Insert message at byte 8: expected 'n', 'u' or 't', found 'x'"
        }
        // An absurd length.
        let huge: [UInt8] = [UInt8(ascii: "I"), 0, 0, 0, 1, UInt8(ascii: "N"), 0, 1, UInt8(ascii: "t"), 0x7F, 0xFF, 0xFF, 0xFF, 1]
        #expect(throws: DecodingError.self) { try PgOutputMessage.decode(huge[...]) }
        let negative: [UInt8] = [UInt8(ascii: "I"), 0, 0, 0, 1, UInt8(ascii: "N"), 0xFF, 0xFF]
        #expect(throws: DecodingError.self) { try PgOutputMessage.decode(negative[...]) }
    }

    @Test func randomBytesNeverCrashTheDecoders() {
        var generator = SystemRandomNumberGenerator()
        let samples = PgOutputFixtures.messages.map { [UInt8](hex: $0) }
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else {
                bytes = samples[round % samples.count]
                for _ in 0..<Int.random(in: 1...4, using: &generator) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            }
            _ = try? PgOutputMessage.decode(bytes[...])
            _ = try? ReplicationMessage.decode(bytes[...])
        }
    }

    @Test func framesXLogDataAndKeepalives() throws {
        let payload = [UInt8](hex: PgOutputFixtures.messages[1])
        var frame: [UInt8] = [UInt8(ascii: "w")]
        for value: UInt64 in [0x0102, 0x0304, 0x0506] {
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
        }
        guard case .xLogData(let data) = try ReplicationMessage.decode((frame + payload)[...]) else {
            Issue.record("expected XLogData")
            return
        }
        #expect(data.walStart == 0x0102 && data.walEnd == 0x0304 && data.sendTime == 0x0506)
        #expect(Array(data.data) == payload)

        let keepalive: [UInt8] = [UInt8(ascii: "k")] + [0, 0, 0, 1, 0, 0, 0, 2] + [0, 0, 0, 0, 0, 0, 0, 3] + [1]
        #expect(try ReplicationMessage.decode(keepalive[...]) == .keepalive(PrimaryKeepalive(walEnd: 0x1_0000_0002, sendTime: 3, replyRequested: true)))
        #expect(throws: DecodingError.self) { try ReplicationMessage.decode((keepalive + [0])[...]) }
        #expect(throws: DecodingError.self) { try ReplicationMessage.decode(keepalive.dropLast()) }
        #expect(throws: DecodingError.self) { try ReplicationMessage.decode([UInt8(ascii: "q")][...]) }
    }

    @Test func standbyStatusUpdateIs34Bytes() {
        let update = StandbyStatusUpdate(written: 0x10, flushed: 0x0F, applied: 0x0E, clock: 7, replyRequested: true)
        let bytes = update.bytes
        #expect(bytes.count == 34)
        #expect(bytes[0] == UInt8(ascii: "r"))
        #expect(bytes[8] == 0x10 && bytes[16] == 0x0F && bytes[24] == 0x0E && bytes[32] == 7 && bytes[33] == 1)
    }

    @Test func lsnsRoundTrip() {
        #expect(formatLSN(0x16_B374_D848) == "16/B374D848")
        #expect(parseLSN("16/B374D848") == 0x16_B374_D848)
        #expect(parseLSN("nope") == nil)
        #expect(CommitTime.rfc3339(postgresMicroseconds: 0) == "2000-01-01T00:00:00.000000Z")
        #expect(CommitTime.rfc3339(postgresMicroseconds: 835_608_600_123_456) == "2026-06-24T09:30:00.123456Z")
        #expect(CommitTime.rfc3339(postgresMicroseconds: -1) == "1999-12-31T23:59:59.999999Z")
        #expect(Base64.encode([0xFF, 0x00]) == "/wA=")
        #expect(Base64.encode(Array("hello".utf8)) == "aGVsbG8=")
    }
}

enum TupleDataFixture {
    /// The TupleData for text values, built the way the server encodes it.
    static func make(_ values: [String]) -> TupleData {
        var bytes: [UInt8] = [0, UInt8(values.count)]
        for value in values {
            let utf8 = Array(value.utf8)
            bytes += [UInt8(ascii: "t"), 0, 0, 0, UInt8(utf8.count)] + utf8
        }
        var reader = ByteReader(bytes[...], message: "fixture")
        return (try? TupleData(from: &reader)) ?? TupleData.empty
    }
}

extension TupleData {
    static var empty: TupleData {
        var reader = ByteReader([0, 0][...], message: "fixture")
        return try! TupleData(from: &reader)
    }
}
