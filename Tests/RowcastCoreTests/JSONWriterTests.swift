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

@Suite struct JSONWriterEscapingTests {
    /// The escape every byte needs, one at a time: the definition the fast path must match.
    static func slowEscape(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): out += Array(#"\""#.utf8)
            case UInt8(ascii: "\\"): out += Array(#"\\"#.utf8)
            case 0x08: out += Array(#"\b"#.utf8)
            case 0x0C: out += Array(#"\f"#.utf8)
            case 0x0A: out += Array(#"\n"#.utf8)
            case 0x0D: out += Array(#"\r"#.utf8)
            case 0x09: out += Array(#"\t"#.utf8)
            case 0x00..<0x20: out += Array(#"\u00"#.utf8) + [JSONWriter.hexDigit(byte >> 4), JSONWriter.hexDigit(byte & 0x0F)]
            default: out.append(byte)
            }
        }
        return out + [UInt8(ascii: "\"")]
    }

    /// Every byte value at every offset within and around an eight-byte word, in clean
    /// text of every length up to 24: the word-at-a-time scan misses none and invents none.
    @Test func everyByteAtEveryOffsetMatchesTheByteByByteDefinition() {
        let filler = Array("abcdefghijklmnopqrstuvwxyz".utf8)
        var mismatches: [String] = []
        for length in 1...24 {
            for position in 0..<length {
                for value in UInt8.min...UInt8.max {
                    var text = Array(filler.prefix(length))
                    text[position] = value
                    var writer = JSONWriter()
                    writer.appendString(utf8: text[...])
                    if writer.bytes != Self.slowEscape(text) { mismatches.append("byte \(value) at \(position) of \(length)") }
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5)) and \(max(0, mismatches.count - 5)) more")
    }

    /// Long text past the 4 kB stack buffer: escapes densely packed (the buffer fills
    /// and is flushed mid-run), and clean runs longer than the buffer between escapes.
    @Test func longTextAcrossTheEscapeBuffer() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        let alphabet: [UInt8] = Array("ab \"\\\n\u{01}é".utf8)
        for (length, cleanRun) in [(50_000, 0), (50_000, 5_000), (20_000, 4_090)] {
            var text: [UInt8] = []
            while text.count < length {
                text.append(alphabet[Int(next() % UInt64(alphabet.count))])
                if cleanRun > 0, next() % 50 == 0 { text += Array(repeating: UInt8(ascii: "x"), count: cleanRun + Int(next() % 20)) }
            }
            var writer = JSONWriter()
            writer.appendString(utf8: text[...])
            #expect(writer.bytes == Self.slowEscape(text), "length \(length), clean runs of \(cleanRun)")
        }
    }

    @Test func runsOfEscapesAndNonASCIIAndEmptyText() {
        for text in ["", "\"\"\"\"\"\"\"\"\"", "\\\\\\\\\\\\\\\\", "\n\n\n\n\n\n\n\n\n", "ééééééééé😀😀", "\u{7F}\u{80}x\u{1F}\u{20}"] {
            var writer = JSONWriter()
            writer.appendString(text)
            #expect(writer.bytes == Self.slowEscape(Array(text.utf8)), "\(text.debugDescription)")
        }
    }
}

@Suite struct JSONWriterNumberTests {
    static let samples: [UInt64] = [0, 1, 9, 10, 15, 16, 255, 256, 0xFFFF_FFFF, 0x1_0000_0000, 0x16_B374_D848, UInt64.max - 1, UInt64.max]
        + (0..<64).map { UInt64(1) << $0 } + (0..<64).map { (UInt64(1) << $0) &- 1 }

    @Test func integersPositionsAndCursorsMatchTheirStringForms() {
        for value in Self.samples {
            var decimal = JSONWriter()
            decimal.appendInteger(value)
            #expect(String(decoding: decimal.bytes, as: UTF8.self) == String(value))
            var lsn = JSONWriter()
            lsn.appendLSN(value)
            #expect(String(decoding: lsn.bytes, as: UTF8.self)
                == String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true))
            let cursor = Cursor.replication(commitLSN: value, index: UInt32(truncatingIfNeeded: value))
            let digits = String(value, radix: 16, uppercase: true)
            #expect(cursor.description.hasPrefix("r" + String(repeating: "0", count: 16 - digits.count) + digits + "."))
            #expect(Cursor(cursor.description) == cursor)
        }
        for value in [Int.min, -1, -10, Int.max] {
            var writer = JSONWriter()
            writer.appendInteger(value)
            #expect(String(decoding: writer.bytes, as: UTF8.self) == String(value))
        }
    }
}
