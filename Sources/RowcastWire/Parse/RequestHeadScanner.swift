/// Finds the end of an HTTP request head in bytes as they arrive, in pieces of any
/// size: the first `\r\n\r\n` after the first byte that is not CR or LF (the HTTP
/// parser skips blank lines before a request, so they are no head). Pure, so that
/// `make fuzz` holds it to a plain reference on every way of cutting a request.
package struct RequestHeadScanner: Sendable {
    /// How much of `\r\n\r\n` the bytes read so far end with.
    private var matched = 0
    /// Whether a byte other than CR or LF arrived.
    private var started = false
    /// Whether the head ended; later bytes are not looked at.
    package private(set) var ended = false

    package init() {}

    /// Reads the next piece; returns how many of its bytes belong to the head when the
    /// head ends in it, nil when it does not (or ended before).
    package mutating func scan(_ bytes: some Sequence<UInt8>) -> Int? {
        guard !ended else { return nil }
        var taken = 0
        for byte in bytes {
            taken += 1
            if !started {
                guard byte != 13, byte != 10 else { continue }
                started = true
            }
            matched = Self.advance(matched, byte)
            if matched == 4 {
                ended = true
                return taken
            }
        }
        return nil
    }

    /// One byte further through `\r\n\r\n`: `matched` bytes of it were seen last.
    static func advance(_ matched: Int, _ byte: UInt8) -> Int {
        let expected: UInt8 = matched % 2 == 0 ? 13 : 10
        if byte == expected { return matched + 1 }
        return byte == 13 ? 1 : 0
    }
}
