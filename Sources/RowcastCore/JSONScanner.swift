/// Where and why a JSON text is malformed.
package struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Byte offset of the problem.
    package let offset: Int
    /// What the scanner expected there.
    package let expected: String

    package var description: String { "invalid JSON at byte \(offset): expected \(expected)" }
}

/// A validating, non-allocating JSON scanner.
///
/// It does not build values: it walks the text, checks its syntax, and reports the
/// byte ranges of object members so that callers can lift raw values out of a larger
/// document without re-encoding them. Every read is bounds-checked; malformed input
/// is a ``JSONSyntaxError``, never a trap. Nesting is limited to ``maximumDepth``.
package struct JSONScanner {
    /// Deeper nesting than this is rejected rather than risking the stack.
    package static let maximumDepth = 512

    private let bytes: [UInt8]
    /// The offset of the next unread byte.
    package private(set) var offset: Int

    /// Starts scanning `bytes` from the beginning.
    package init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
    }

    /// Requires that only whitespace remains.
    package mutating func expectEnd() throws(JSONSyntaxError) {
        skipWhitespace()
        if offset != bytes.count { throw fail("end of input") }
    }

    /// Reads an object and calls `member` with each key and the byte range of its value.
    package mutating func scanObject(
        _ member: (String, Range<Int>) throws(JSONSyntaxError) -> Void
    ) throws(JSONSyntaxError) {
        skipWhitespace()
        try expect(UInt8(ascii: "{"), "'{'")
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { offset += 1; return }
        while true {
            skipWhitespace()
            let key = try readString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':'")
            skipWhitespace()
            let start = offset
            try skipValue(depth: 1)
            try member(key, start..<offset)
            skipWhitespace()
            guard let next = peek() else { throw fail("',' or '}'") }
            offset += 1
            if next == UInt8(ascii: "}") { return }
            if next != UInt8(ascii: ",") { offset -= 1; throw fail("',' or '}'") }
        }
    }

    /// Reads an array and calls `element` with the byte range of each value.
    package mutating func scanArray(
        _ element: (Range<Int>) throws(JSONSyntaxError) -> Void
    ) throws(JSONSyntaxError) {
        skipWhitespace()
        try expect(UInt8(ascii: "["), "'['")
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { offset += 1; return }
        while true {
            skipWhitespace()
            let start = offset
            try skipValue(depth: 1)
            try element(start..<offset)
            skipWhitespace()
            guard let next = peek() else { throw fail("',' or ']'") }
            offset += 1
            if next == UInt8(ascii: "]") { return }
            if next != UInt8(ascii: ",") { offset -= 1; throw fail("',' or ']'") }
        }
    }

    /// The first byte of the next value, after whitespace: `{`, `[`, `"`, a digit,
    /// `-`, `t`, `f` or `n`; nil at the end.
    package mutating func peekValue() -> UInt8? {
        skipWhitespace()
        return peek()
    }

    /// Skips one JSON value of any kind.
    package mutating func skipValue() throws(JSONSyntaxError) {
        try skipValue(depth: 0)
    }

    /// Reads a string value and returns it unescaped.
    package mutating func readString() throws(JSONSyntaxError) -> String {
        let start = offset + 1
        let plain = try skipString()
        let raw = bytes[start..<offset - 1]
        if plain {
            guard let text = String(validating: raw, as: UTF8.self) else {
                throw JSONSyntaxError(offset: start, expected: "valid UTF-8")
            }
            return text
        }
        return try Self.unescape(raw, at: start)
    }

    /// Skips a string, checking its escapes; returns whether it had none.
    private mutating func skipString() throws(JSONSyntaxError) -> Bool {
        try expect(UInt8(ascii: "\""), "'\"'")
        var plain = true
        while true {
            guard let byte = peek() else { throw fail("closing '\"'") }
            if byte == UInt8(ascii: "\"") { offset += 1; return plain }
            if byte < 0x20 { throw fail("escaped control character") }
            offset += 1
            guard byte == UInt8(ascii: "\\") else { continue }
            plain = false
            guard let escaped = peek() else { throw fail("escape character") }
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                offset += 1
            case UInt8(ascii: "u"):
                offset += 1
                for _ in 0..<4 {
                    guard let hex = peek(), Self.hexValue(hex) != nil else { throw fail("4 hex digits after \\u") }
                    offset += 1
                }
            default:
                throw fail("a valid escape character")
            }
        }
    }

    // MARK: - Internals

    private mutating func skipValue(depth: Int) throws(JSONSyntaxError) {
        guard depth < Self.maximumDepth else { throw fail("nesting shallower than \(Self.maximumDepth)") }
        skipWhitespace()
        guard let byte = peek() else { throw fail("a value") }
        switch byte {
        case UInt8(ascii: "{"):
            offset += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "}") { offset += 1; return }
            while true {
                skipWhitespace()
                _ = try skipString()
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "':'")
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard let next = peek() else { throw fail("',' or '}'") }
                if next == UInt8(ascii: "}") { offset += 1; return }
                try expect(UInt8(ascii: ","), "',' or '}'")
            }
        case UInt8(ascii: "["):
            offset += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "]") { offset += 1; return }
            while true {
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard let next = peek() else { throw fail("',' or ']'") }
                if next == UInt8(ascii: "]") { offset += 1; return }
                try expect(UInt8(ascii: ","), "',' or ']'")
            }
        case UInt8(ascii: "\""):
            _ = try skipString()
        case UInt8(ascii: "t"):
            try expectLiteral("true")
        case UInt8(ascii: "f"):
            try expectLiteral("false")
        case UInt8(ascii: "n"):
            try expectLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
        default:
            throw fail("a value")
        }
    }

    private mutating func skipNumber() throws(JSONSyntaxError) {
        if peek() == UInt8(ascii: "-") { offset += 1 }
        guard let first = peek(), Self.isDigit(first) else { throw fail("a digit") }
        offset += 1
        if first != UInt8(ascii: "0") { skipDigits() }
        if peek() == UInt8(ascii: ".") {
            offset += 1
            guard let digit = peek(), Self.isDigit(digit) else { throw fail("a digit after '.'") }
            skipDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            offset += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { offset += 1 }
            guard let digit = peek(), Self.isDigit(digit) else { throw fail("a digit in the exponent") }
            skipDigits()
        }
    }

    private mutating func skipDigits() {
        while let byte = peek(), Self.isDigit(byte) { offset += 1 }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONSyntaxError) {
        let expected = literal.withUTF8Buffer { Array($0) }
        guard offset + expected.count <= bytes.count, bytes[offset..<offset + expected.count].elementsEqual(expected) else {
            throw fail("'\(literal)'")
        }
        offset += expected.count
    }

    private mutating func expect(_ byte: UInt8, _ description: String) throws(JSONSyntaxError) {
        guard peek() == byte else { throw fail(description) }
        offset += 1
    }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { offset += 1 }
    }

    private func peek() -> UInt8? {
        offset < bytes.count ? bytes[offset] : nil
    }

    private func fail(_ expected: String) -> JSONSyntaxError {
        JSONSyntaxError(offset: offset, expected: expected)
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private static func hexValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Decodes the escapes of a string body already checked by `readString`.
    private static func unescape(_ raw: ArraySlice<UInt8>, at start: Int) throws(JSONSyntaxError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var index = raw.startIndex
        func hex4(_ at: Int) -> UInt32 {
            var value: UInt32 = 0
            for i in at..<at + 4 { value = value << 4 | (hexValue(raw[i]) ?? 0) }
            return value
        }
        while index < raw.endIndex {
            let byte = raw[index]
            guard byte == UInt8(ascii: "\\") else { out.append(byte); index += 1; continue }
            let escaped = raw[index + 1]
            index += 2
            switch escaped {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex4(index)
                index += 4
                if (0xD800..<0xDC00).contains(scalar), index + 6 <= raw.endIndex,
                    raw[index] == UInt8(ascii: "\\"), raw[index + 1] == UInt8(ascii: "u")
                {
                    let low = hex4(index + 2)
                    if (0xDC00..<0xE000).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        index += 6
                    }
                }
                guard let unicode = Unicode.Scalar(scalar) else {
                    throw JSONSyntaxError(offset: start, expected: "a valid Unicode escape")
                }
                out.append(contentsOf: Array(String(Character(unicode)).utf8))
            default: out.append(escaped)
            }
        }
        guard let text = String(validating: out, as: UTF8.self) else {
            throw JSONSyntaxError(offset: start, expected: "valid UTF-8")
        }
        return text
    }
}
