import Testing
@testable import RowcastCore

@Suite struct JSONWriterTests {
    @Test func escapesWhatJSONRequires() throws {
        var writer = JSONWriter()
        writer.appendString("q\"b\\n\n\r\t\u{08}\u{0C}\u{01}\u{1F}é😀")
        #expect(String(decoding: writer.bytes, as: UTF8.self) == #""q\"b\\n\n\r\t\b\f\u0001\u001fé😀""#)
        var scanner = JSONScanner(writer.bytes)
        #expect(try scanner.readString() == "q\"b\\n\n\r\t\u{08}\u{0C}\u{01}\u{1F}é😀")
    }

    @Test func recordOmitsKeysThatDoNotApply() {
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 2), source: .trigger, op: .notify)
        record.channel = "addedrecord"
        record.payload = "hello"
        let text = String(decoding: record.jsonBytes(), as: UTF8.self)
        #expect(text == #"{"cursor":"t0000000000000001.0000000000000002","source":"trigger","op":"notify","channel":"addedrecord","payload":"hello"}"#)
    }

    @Test func recordEmbedsRowBytesVerbatim() throws {
        var record = ChangeRecord(cursor: .replication(commitLSN: 0x16B3748, index: 3), source: .replication, op: .update)
        record.schema = "public"
        record.table = "t"
        record.xid = 42
        record.row = try RawJSON(validating: Array(#"{"n": 1.10, "big": 123456789012345678901234567890}"#.utf8))
        record.unchanged = ["blob"]
        let text = String(decoding: record.jsonBytes(), as: UTF8.self)
        #expect(text.contains(#""row":{"n": 1.10, "big": 123456789012345678901234567890}"#))
        #expect(text.contains(#""unchanged":["blob"]"#))
        #expect(text.contains(#""cursor":"r00000000016B3748.0000000000000003""#))
        _ = try RawJSON(validating: record.jsonBytes())
    }
}
