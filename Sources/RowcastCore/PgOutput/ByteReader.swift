/// Why bytes from the server could not be decoded. Carries what was expected, what
/// was found, and where, so a bad stream is reported in one precise line.
package struct DecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The message being decoded, e.g. "Insert".
    package let message: String
    /// What the decoder expected.
    package let expected: String
    /// What it found instead.
    package let found: String
    /// The offset in the message.
    package let offset: Int

    package var description: String {
        "malformed \(message) message at byte \(offset): expected \(expected), found \(found)"
    }
}

/// Bounds-checked big-endian reads over one message's bytes. Every read either
/// returns a value or throws a ``DecodingError``; nothing traps on short input.
package struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    private var index: Int
    /// The message name used in errors.
    let message: String

    package init(_ bytes: ArraySlice<UInt8>, message: String) {
        self.bytes = bytes
        self.index = bytes.startIndex
        self.message = message
    }

    /// Bytes not read yet.
    package var remaining: Int { bytes.endIndex - index }

    /// The offset of the next byte within the message.
    package var offset: Int { index - bytes.startIndex }

    package mutating func readUInt8(_ what: String) throws(DecodingError) -> UInt8 {
        try need(1, what)
        defer { index += 1 }
        return bytes[index]
    }

    package mutating func readUInt16(_ what: String) throws(DecodingError) -> UInt16 {
        UInt16(truncatingIfNeeded: try readInteger(2, what))
    }

    package mutating func readUInt32(_ what: String) throws(DecodingError) -> UInt32 {
        UInt32(truncatingIfNeeded: try readInteger(4, what))
    }

    package mutating func readUInt64(_ what: String) throws(DecodingError) -> UInt64 {
        try readInteger(8, what)
    }

    package mutating func readInt64(_ what: String) throws(DecodingError) -> Int64 {
        Int64(bitPattern: try readInteger(8, what))
    }

    /// Reads `count` bytes.
    package mutating func readBytes(_ count: Int, _ what: String) throws(DecodingError) -> ArraySlice<UInt8> {
        guard count >= 0 else { throw fail(what, found: "a negative length \(count)") }
        try need(count, what)
        defer { index += count }
        return bytes[index..<index + count]
    }

    /// Reads a NUL-terminated UTF-8 string.
    package mutating func readCString(_ what: String) throws(DecodingError) -> String {
        guard let end = bytes[index...].firstIndex(of: 0) else {
            throw fail("\(what) ending in NUL", found: "\(remaining) bytes without one")
        }
        guard let text = String(validating: bytes[index..<end], as: UTF8.self) else {
            throw fail("\(what) in UTF-8", found: "invalid UTF-8")
        }
        index = end + 1
        return text
    }

    /// Requires that every byte was read.
    package func expectEnd() throws(DecodingError) {
        if remaining != 0 { throw fail("end of message", found: "\(remaining) trailing bytes") }
    }

    /// An error at the current offset.
    package func fail(_ expected: String, found: String) -> DecodingError {
        DecodingError(message: message, expected: expected, found: found, offset: offset)
    }

    private mutating func readInteger(_ size: Int, _ what: String) throws(DecodingError) -> UInt64 {
        try need(size, what)
        var value: UInt64 = 0
        for byte in bytes[index..<index + size] { value = value << 8 | UInt64(byte) }
        index += size
        return value
    }

    private func need(_ count: Int, _ what: String) throws(DecodingError) {
        if remaining < count {
            throw fail("\(what) (\(count) bytes)", found: remaining == 0 ? "end of message" : "only \(remaining) bytes")
        }
    }
}

/// Formats an LSN as PostgreSQL does: `16/B374D848`.
package func formatLSN(_ lsn: UInt64) -> String {
    var writer = JSONWriter(capacity: 17)
    writer.appendLSN(lsn)
    return String(decoding: writer.bytes, as: UTF8.self)
}

/// Parses `16/B374D848`; nil when malformed.
package func parseLSN(_ text: String) -> UInt64? {
    let parts = text.split(separator: "/")
    guard parts.count == 2, let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16),
        high <= 0xFFFF_FFFF, low <= 0xFFFF_FFFF
    else { return nil }
    return high << 32 | low
}
