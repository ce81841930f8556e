/// Appends JSON text to a byte buffer.
///
/// rowcast encodes each record exactly once, straight into bytes; this is the only
/// place that knows how a JSON string is escaped. Output is RFC 8259 JSON: `"`, `\`
/// and control characters are escaped, every other scalar is written as UTF-8.
package struct JSONWriter: Sendable {
    /// The bytes written so far.
    package private(set) var bytes: [UInt8]

    /// Starts an empty buffer with room for `capacity` bytes.
    package init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends bytes that are already JSON (a raw value or punctuation).
    package mutating func appendRaw(_ raw: some Collection<UInt8>) {
        bytes.append(contentsOf: raw)
    }

    /// Drops everything after the first `count` bytes (to undo a failed append).
    package mutating func truncate(to count: Int) {
        bytes.removeSubrange(count...)
    }

    /// Appends one ASCII byte of punctuation.
    package mutating func append(byte: UInt8) {
        bytes.append(byte)
    }

    /// Appends ASCII text that needs no escaping (keys and numbers we produce ourselves).
    package mutating func appendASCII(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// Appends `value` as a quoted, escaped JSON string.
    package mutating func appendString(_ value: String) {
        var value = value
        value.withUTF8 { appendString(utf8: $0) }
    }

    /// Appends UTF-8 bytes as a quoted, escaped JSON string. The bytes must be valid UTF-8.
    package mutating func appendString(utf8: some Collection<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case 0x08: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "b"))
            case 0x0C: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "f"))
            case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0x00..<0x20:
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(Self.hexDigit(byte >> 4))
                bytes.append(Self.hexDigit(byte & 0x0F))
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Appends a decimal integer.
    package mutating func appendInteger(_ value: some BinaryInteger) {
        bytes.append(contentsOf: Array(String(value).utf8))
    }

    /// Appends `true` or `false`.
    package mutating func appendBool(_ value: Bool) {
        if value { appendASCII("true") } else { appendASCII("false") }
    }

    /// Appends `"key":` for a key that needs no escaping. Writes the separating comma
    /// when `first` is false and then clears it.
    package mutating func appendKey(_ key: StaticString, first: inout Bool) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        bytes.append(UInt8(ascii: "\""))
        appendASCII(key)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }
}
