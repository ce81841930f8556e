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

    /// The escaping loop. Most text needs no escape: it scans eight bytes at a time for
    /// `"`, `\` or a control character and copies clean text in one piece. Text with
    /// escapes is written through a stack buffer, so that an escape costs a few stores
    /// rather than an array append each.
    private mutating func appendString(buffer: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        defer { bytes.append(UInt8(ascii: "\"")) }
        guard let base = buffer.baseAddress else { return }
        let count = buffer.count
        let firstEscape = Self.nextEscape(in: base, from: 0, count: count)
        bytes.append(contentsOf: UnsafeBufferPointer(start: base, count: firstEscape))
        guard firstEscape < count else { return }
        let capacity = 4096
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { scratch in
            guard let out = scratch.baseAddress else { return }
            var used = 0
            var index = firstEscape
            while index < count {
                if used > capacity - 6 {
                    bytes.append(contentsOf: UnsafeBufferPointer(start: out, count: used))
                    used = 0
                }
                used += Self.writeEscape(base[index], to: out + used)
                index += 1
                let runEnd = Self.nextEscape(in: base, from: index, count: count)
                let run = runEnd - index
                if used + run > capacity {
                    bytes.append(contentsOf: UnsafeBufferPointer(start: out, count: used))
                    used = 0
                }
                if run > capacity {
                    bytes.append(contentsOf: UnsafeBufferPointer(start: base + index, count: run))
                } else {
                    (out + used).update(from: base + index, count: run)
                    used += run
                }
                index = runEnd
            }
            bytes.append(contentsOf: UnsafeBufferPointer(start: out, count: used))
        }
    }

    /// The index of the first byte from `start` on that needs escaping, or `count`.
    @inline(__always)
    private static func nextEscape(in base: UnsafePointer<UInt8>, from start: Int, count: Int) -> Int {
        var index = start
        while count - index >= 8 {
            if mayNeedEscape(UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)) { break }
            index += 8
        }
        while index < count {
            let byte = base[index]
            if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { return index }
            index += 1
        }
        return count
    }

    /// Writes the escape for `byte` at `out` (room for six bytes); returns its length.
    @inline(__always)
    private static func writeEscape(_ byte: UInt8, to out: UnsafeMutablePointer<UInt8>) -> Int {
        out[0] = UInt8(ascii: "\\")
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): out[1] = byte
        case 0x08: out[1] = UInt8(ascii: "b")
        case 0x0C: out[1] = UInt8(ascii: "f")
        case 0x0A: out[1] = UInt8(ascii: "n")
        case 0x0D: out[1] = UInt8(ascii: "r")
        case 0x09: out[1] = UInt8(ascii: "t")
        default:
            out[1] = UInt8(ascii: "u")
            out[2] = UInt8(ascii: "0")
            out[3] = UInt8(ascii: "0")
            out[4] = hexDigit(byte >> 4)
            out[5] = hexDigit(byte & 0x0F)
            return 6
        }
        return 2
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

extension JSONWriter {
    /// A snapshot row's record up to its `row` value, which the caller appends (and
    /// then `}`): `{"source":M,"op":"snapshot","schema":S,"table":T,"row":`. One spelling
    /// for `serve`'s frames and `tail --snapshot`'s lines.
    package mutating func appendSnapshotRowHead(of table: TableName, source: CaptureMode) {
        appendASCII(#"{"source":"#)
        appendString(source.rawValue)
        appendASCII(#","op":"snapshot","schema":"#)
        appendString(table.schema)
        appendASCII(#","table":"#)
        appendString(table.name)
        appendASCII(#","row":"#)
    }
}
