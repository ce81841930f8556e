import Testing
@testable import RowcastCore

@Suite struct JSONScannerTests {
    @Test(arguments: [
        "{}", "[]", "0", "-0.5e+10", "\"a\\u00e9\\ud83d\\ude00\"", "true", "false", "null",
        #"{"a": [1, 2.50, {"b": null}], "c": "x\"y\\z"}"#, " [ ] ",
    ])
    func acceptsValidJSON(_ text: String) throws {
        _ = try RawJSON(validating: Array(text.utf8))
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\"}", "{\"a\":}", "01", "1.", "-", "1e", "tru", "\"\u{01}\"", "\"\\x\"",
        "\"\\u12\"", "[1] [2]", "{\"a\":1,}", "nul", "\"unterminated",
    ])
    func rejectsInvalidJSON(_ text: String) {
        #expect(throws: JSONSyntaxError.self) { try RawJSON(validating: Array(text.utf8)) }
    }

    @Test func rejectsInvalidUTF8InKeys() {
        var scanner = JSONScanner([UInt8(ascii: "{"), UInt8(ascii: "\""), 0xFF, UInt8(ascii: "\""), UInt8(ascii: ":"), UInt8(ascii: "1"), UInt8(ascii: "}")])
        #expect(throws: JSONSyntaxError.self) { try scanner.scanObject { _, _ in } }
    }

    @Test func reportsMemberRangesWithoutReencoding() throws {
        let text = #"{"row": {"n": 1.10, "s": "a\"b"}, "op":"insert"}"#
        let bytes = Array(text.utf8)
        var scanner = JSONScanner(bytes)
        var members: [String: String] = [:]
        try scanner.scanObject { key, range in members[key] = String(decoding: bytes[range], as: UTF8.self) }
        #expect(members["row"] == #"{"n": 1.10, "s": "a\"b"}"#)
        #expect(members["op"] == #""insert""#)
    }

    @Test func unescapesStrings() throws {
        var scanner = JSONScanner(Array(#""tab\there \u00e9 \ud83d\ude00 \/""#.utf8))
        #expect(try scanner.readString() == "tab\there é 😀 /")
    }

    @Test func refusesAbsurdNesting() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONSyntaxError.self) { try RawJSON(validating: Array(deep.utf8)) }
    }

    @Test func neverCrashesOnTruncationsOrRandomBytes() {
        let sample = Array(#"{"op":"update","schema":"public","table":"t","xid":7,"row":{"a":[1,"x\u0001",{"b":null}]},"old":{"a":2}}"#.utf8)
        for length in 0...sample.count {
            _ = try? RawJSON(validating: Array(sample[0..<length]))
            _ = try? TriggerPayload.decode(Array(sample[0..<length]))
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = sample
            for _ in 0..<3 {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            _ = try? RawJSON(validating: bytes)
            _ = try? TriggerPayload.decode(bytes)
        }
    }
}
