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
        let done: Void? = utf8.withContiguousStorageIfAvailable { appendString(buffer: $0) }
        if done == nil { Array(utf8).withUnsafeBufferPointer { appendString(buffer: $0) } }
    }

    /// The escaping loop: most text needs no escape, so it scans eight bytes at a time
    /// for `"`, `\` or a control character and copies the clean runs in bulk.
    private mutating func appendString(buffer: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        guard let base = buffer.baseAddress else {
            bytes.append(UInt8(ascii: "\""))
            return
        }
        let count = buffer.count
        var runStart = 0
        var index = 0
        while index < count {
            if count - index >= 8,
                !Self.mayNeedEscape(UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self))
            {
                index += 8
                continue
            }
            let byte = base[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else {
                index += 1
                continue
            }
            if runStart < index { bytes.append(contentsOf: UnsafeBufferPointer(start: base + runStart, count: index - runStart)) }
            appendEscape(byte)
            index += 1
            runStart = index
        }
        if runStart < count { bytes.append(contentsOf: UnsafeBufferPointer(start: base + runStart, count: count - runStart)) }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Whether any of the eight bytes in `word` is below 0x20, `"` or `\`. Exact when
    /// false; a true may be a false alarm, and the bytes are then looked at one by one.
    @inline(__always)
    private static func mayNeedEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highBits: UInt64 = 0x8080_8080_8080_8080
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let control = word &- (ones &* 0x20)
        let hasQuote = (quote &- ones) & ~quote
        let hasBackslash = (backslash &- ones) & ~backslash
        return (control | hasQuote | hasBackslash) & ~word & highBits != 0  // `&` binds before `!=`
    }

    private mutating func appendEscape(_ byte: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(byte)
        case 0x08: bytes.append(UInt8(ascii: "b"))
        case 0x0C: bytes.append(UInt8(ascii: "f"))
        case 0x0A: bytes.append(UInt8(ascii: "n"))
        case 0x0D: bytes.append(UInt8(ascii: "r"))
        case 0x09: bytes.append(UInt8(ascii: "t"))
        default:
            bytes.append(UInt8(ascii: "u"))
            bytes.append(UInt8(ascii: "0"))
            bytes.append(UInt8(ascii: "0"))
            bytes.append(Self.hexDigit(byte >> 4))
            bytes.append(Self.hexDigit(byte & 0x0F))
        }
    }

    /// Appends a decimal integer.
    package mutating func appendInteger(_ value: some BinaryInteger) {
        if let small = UInt64(exactly: value) {
            appendDecimal(small)
        } else {
            bytes.append(contentsOf: Array(String(value).utf8))
        }
    }

    private mutating func appendDecimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)  // 32 bytes: room for 20 digits
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                count += 1
                buffer[32 - count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            bytes.append(contentsOf: buffer[(32 - count)...])
        }
    }

    /// Appends `value` in upper-case hexadecimal, zero-padded to `width` digits
    /// (PostgreSQL's LSN halves use no padding: width 1).
    package mutating func appendHex(_ value: UInt64, width: Int) {
        let significant = value == 0 ? 1 : (64 - value.leadingZeroBitCount + 3) / 4
        var shift = max(significant, width) * 4
        while shift > 0 {
            shift -= 4
            let nibble = UInt8(truncatingIfNeeded: shift < 64 ? value >> UInt64(shift) : 0) & 0x0F
            bytes.append(nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "A") + nibble - 10)
        }
    }

    /// Appends a WAL position as PostgreSQL writes it, `16/B374D848`, without quotes.
    package mutating func appendLSN(_ lsn: UInt64) {
        appendHex(lsn >> 32, width: 1)
        bytes.append(UInt8(ascii: "/"))
        appendHex(lsn & 0xFFFF_FFFF, width: 1)
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
