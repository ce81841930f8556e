/// How `to_jsonb` renders a value of some type: which of its JSON categories the
/// type falls in (after looking through domains), with the element or attribute
/// shapes for arrays and composites. Built from the catalog; used to turn
/// pgoutput's text values into exactly the JSON `to_jsonb` gives.
package indirect enum ValueShape: Sendable, Equatable {
    /// `bool`: `t`/`f` become true/false.
    case bool
    /// int2, int4, int8, float4, float8, numeric: a JSON number, or a string for
    /// NaN and ±Infinity.
    case number
    /// `date`: its ISO text (the session's DateStyle is pinned to ISO).
    case date
    /// `timestamp`: ISO text with `T` between date and time.
    case timestamp
    /// `timestamptz`: ISO text with `T` and a `+hh:mm` offset.
    case timestamptz
    /// json and jsonb: embedded as JSON.
    case json
    /// Every other type: its text output, as a JSON string.
    case text
    /// An array of `element`, written with `delimiter` (`,`, or `;` for box).
    case array(element: ValueShape, delimiter: UInt8)
    /// A composite type: its attributes in order.
    case composite([Attribute])

    /// One attribute of a composite type.
    package struct Attribute: Sendable, Equatable {
        package let name: String
        package let shape: ValueShape

        package init(name: String, shape: ValueShape) {
            self.name = name
            self.shape = shape
        }
    }

    /// The shape of a built-in scalar type by OID, or nil when the catalog must be asked.
    package static func builtin(_ oid: UInt32) -> ValueShape? {
        switch oid {
        case 16: .bool
        case 20, 21, 23, 700, 701, 1700: .number
        case 1082: .date
        case 1114: .timestamp
        case 1184: .timestamptz
        case 114, 3802: .json
        case 25, 1043, 1042, 19, 17, 1083, 1266, 1186, 2950, 869, 650, 829, 774, 790, 1560, 1562, 26, 18:
            .text
        default: nil
        }
    }
}

/// A text value that does not parse as its type's output should.
package struct ValueConversionError: Error, Sendable, Equatable, CustomStringConvertible {
    package let expected: String
    package let offset: Int

    package var description: String { "cannot convert a value to JSON: expected \(expected) at byte \(offset)" }
}

/// Turns a type's text output into the JSON `to_jsonb` gives for it.
package enum ValueJSON {
    /// Appends the JSON for `text`, a value of shape `shape`.
    package static func append(
        _ text: ArraySlice<UInt8>,
        shape: ValueShape,
        to writer: inout JSONWriter
    ) throws(ValueConversionError) {
        switch shape {
        case .bool:
            writer.appendBool(text.first == UInt8(ascii: "t"))
        case .number:
            if isJSONNumber(text) { writer.appendRaw(text) } else { writer.appendString(utf8: text) }
        case .date, .text:
            writer.appendString(utf8: text)
        case .timestamp:
            appendTimestamp(text, colonOffset: false, to: &writer)
        case .timestamptz:
            appendTimestamp(text, colonOffset: true, to: &writer)
        case .json:
            writer.appendRaw(text)
        case .array(let element, let delimiter):
            var parser = CompositeTextParser(text)
            try parser.array(element: element, delimiter: delimiter, to: &writer)
        case .composite(let attributes):
            var parser = CompositeTextParser(text)
            try parser.record(attributes, to: &writer)
        }
    }

    /// Whether PostgreSQL's text is a JSON number (NaN and Infinity are not).
    static func isJSONNumber(_ text: ArraySlice<UInt8>) -> Bool {
        var index = text.startIndex
        func digits() -> Int {
            let start = index
            while index < text.endIndex, text[index] >= 0x30, text[index] <= 0x39 { index += 1 }
            return index - start
        }
        if index < text.endIndex, text[index] == UInt8(ascii: "-") { index += 1 }
        guard index < text.endIndex else { return false }
        if text[index] == UInt8(ascii: "0") {
            index += 1
        } else if digits() == 0 {
            return false
        }
        if index < text.endIndex, text[index] == UInt8(ascii: ".") {
            index += 1
            if digits() == 0 { return false }
        }
        if index < text.endIndex, text[index] == UInt8(ascii: "e") || text[index] == UInt8(ascii: "E") {
            index += 1
            if index < text.endIndex, text[index] == UInt8(ascii: "+") || text[index] == UInt8(ascii: "-") { index += 1 }
            if digits() == 0 { return false }
        }
        return index == text.endIndex
    }

    /// ``isoT(_:)``, then ``withColonOffset(_:)`` when `colonOffset`, written straight
    /// into `writer` without building the new text.
    static func appendTimestamp(_ text: ArraySlice<UInt8>, colonOffset: Bool, to writer: inout JSONWriter) {
        guard !text.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
            // Never PostgreSQL's output; escaped the slow way rather than trusted.
            writer.appendString(utf8: colonOffset ? withColonOffset(isoT(text)) : isoT(text))
            return
        }
        guard let space = text.firstIndex(of: UInt8(ascii: " ")),
            space + 1 < text.endIndex, text[space + 1] >= 0x30, text[space + 1] <= 0x39
        else {
            writer.append(byte: UInt8(ascii: "\""))
            writer.appendRaw(text)
            writer.append(byte: UInt8(ascii: "\""))
            return
        }
        var insertion = text.endIndex + 1  // where `:00` goes; past the end when nowhere
        if colonOffset {
            var end = text.endIndex
            if text.count >= 3, text.suffix(3).elementsEqual(" BC".utf8) { end -= 3 }
            if let sign = text[space..<end].lastIndex(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") }),
                end - sign == 3
            {
                insertion = end
            }
        }
        writer.append(byte: UInt8(ascii: "\""))
        writer.appendRaw(text[..<space])
        writer.append(byte: UInt8(ascii: "T"))
        if insertion <= text.endIndex {
            writer.appendRaw(text[(space + 1)..<insertion])
            writer.appendASCII(":00")
            writer.appendRaw(text[insertion...])
        } else {
            writer.appendRaw(text[(space + 1)...])
        }
        writer.append(byte: UInt8(ascii: "\""))
    }

    /// `2024-01-01 10:00:00` → `2024-01-01T10:00:00` (the first space only).
    static func isoT(_ text: ArraySlice<UInt8>) -> [UInt8] {
        var out = Array(text)
        if let space = out.firstIndex(of: UInt8(ascii: " ")),
            space + 1 < out.count, out[space + 1] >= 0x30, out[space + 1] <= 0x39
        {
            out[space] = UInt8(ascii: "T")
        }
        return out
    }

    /// `…+00` → `…+00:00`: XSD offsets always carry minutes. Keeps a trailing ` BC`.
    static func withColonOffset(_ text: [UInt8]) -> [UInt8] {
        guard let t = text.firstIndex(of: UInt8(ascii: "T")) else { return text }
        var end = text.count
        if text.count >= 3, Array(text.suffix(3)) == Array(" BC".utf8) { end -= 3 }
        guard let sign = text[t..<end].lastIndex(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") }) else { return text }
        guard end - sign == 3 else { return text }
        return Array(text[..<end]) + Array(":00".utf8) + Array(text[end...])
    }
}

/// Parses PostgreSQL's array (`{…}`) and record (`(…)`) text output.
struct CompositeTextParser {
    private let text: ArraySlice<UInt8>
    private var index: Int

    init(_ text: ArraySlice<UInt8>) {
        self.text = text
        self.index = text.startIndex
    }

    /// `[lower:upper]={…}` or `{…}`, any dimension; bounds are dropped as `to_jsonb` drops them.
    mutating func array(element: ValueShape, delimiter: UInt8, to writer: inout JSONWriter) throws(ValueConversionError) {
        if peek() == UInt8(ascii: "[") {
            guard let equals = text[index...].firstIndex(of: UInt8(ascii: "=")) else { throw fail("'=' after array bounds") }
            index = equals + 1
        }
        try arrayLevel(element: element, delimiter: delimiter, to: &writer)
        guard index == text.endIndex else { throw fail("end of array") }
    }

    private mutating func arrayLevel(element: ValueShape, delimiter: UInt8, to writer: inout JSONWriter) throws(ValueConversionError) {
        try expect(UInt8(ascii: "{"))
        writer.append(byte: UInt8(ascii: "["))
        skipSpaces()
        if peek() == UInt8(ascii: "}") {
            index += 1
            writer.append(byte: UInt8(ascii: "]"))
            return
        }
        var first = true
        while true {
            if !first { writer.append(byte: UInt8(ascii: ",")) }
            first = false
            skipSpaces()
            if peek() == UInt8(ascii: "{") {
                try arrayLevel(element: element, delimiter: delimiter, to: &writer)
            } else {
                let (value, quoted) = try item(stoppingAt: [delimiter, UInt8(ascii: "}")])
                if !quoted, value.count == 4, String(decoding: value, as: UTF8.self).uppercased() == "NULL" {
                    writer.appendASCII("null")
                } else {
                    try ValueJSON.append(value[...], shape: element, to: &writer)
                }
            }
            skipSpaces()
            guard let next = peek() else { throw fail("'}'") }
            index += 1
            if next == UInt8(ascii: "}") { break }
            guard next == delimiter else { throw fail("a delimiter or '}'") }
        }
        writer.append(byte: UInt8(ascii: "]"))
    }

    /// `(a,b,…)`: an empty unquoted field is NULL.
    mutating func record(_ attributes: [ValueShape.Attribute], to writer: inout JSONWriter) throws(ValueConversionError) {
        try expect(UInt8(ascii: "("))
        writer.append(byte: UInt8(ascii: "{"))
        for (position, attribute) in attributes.enumerated() {
            if position > 0 {
                writer.append(byte: UInt8(ascii: ","))
                try expect(UInt8(ascii: ","))
            }
            writer.appendString(attribute.name)
            writer.append(byte: UInt8(ascii: ":"))
            if peek() == UInt8(ascii: ",") || peek() == UInt8(ascii: ")") {
                writer.appendASCII("null")
                continue
            }
            let (value, _) = try item(stoppingAt: [UInt8(ascii: ","), UInt8(ascii: ")")], trims: false)
            try ValueJSON.append(value[...], shape: attribute.shape, to: &writer)
        }
        try expect(UInt8(ascii: ")"))
        guard index == text.endIndex else { throw fail("end of record") }
        writer.append(byte: UInt8(ascii: "}"))
    }

    /// One element: quoted (with `\` escapes, and `""` in records) or bare up to a stop byte.
    private mutating func item(stoppingAt stops: [UInt8], trims: Bool = true) throws(ValueConversionError) -> ([UInt8], quoted: Bool) {
        var out: [UInt8] = []
        var quoted = false
        var inQuotes = false
        while let byte = peek() {
            if inQuotes {
                index += 1
                if byte == UInt8(ascii: "\\") {
                    guard let escaped = peek() else { throw fail("a character after '\\'") }
                    out.append(escaped)
                    index += 1
                } else if byte == UInt8(ascii: "\"") {
                    if peek() == UInt8(ascii: "\"") {
                        out.append(byte)
                        index += 1
                    } else {
                        inQuotes = false
                    }
                } else {
                    out.append(byte)
                }
                continue
            }
            if stops.contains(byte) { break }
            index += 1
            if byte == UInt8(ascii: "\"") {
                inQuotes = true
                quoted = true
            } else if byte == UInt8(ascii: "\\") {
                guard let escaped = peek() else { throw fail("a character after '\\'") }
                out.append(escaped)
                index += 1
            } else {
                out.append(byte)
            }
        }
        if inQuotes { throw fail("a closing quote") }
        if trims && !quoted {
            while let last = out.last, last == UInt8(ascii: " ") { out.removeLast() }
        }
        return (out, quoted)
    }

    private mutating func skipSpaces() {
        while peek() == UInt8(ascii: " ") { index += 1 }
    }

    private mutating func expect(_ byte: UInt8) throws(ValueConversionError) {
        guard peek() == byte else { throw fail("'\(Character(Unicode.Scalar(byte)))'") }
        index += 1
    }

    private func peek() -> UInt8? { index < text.endIndex ? text[index] : nil }

    private func fail(_ expected: String) -> ValueConversionError {
        ValueConversionError(expected: expected, offset: index - text.startIndex)
    }
}
