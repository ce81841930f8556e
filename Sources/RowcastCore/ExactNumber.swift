/// A decimal number compared exactly, as PostgreSQL compares `numeric`: a filter's
/// `id=eq.9007199254740993` matches that id and not its neighbour, which parsing both
/// into `Double` (53 bits) would confuse; `1.10` equals `1.1`, and `1e2` equals `100`.
///
/// Kept as its significant digits and the position of the decimal point: the value is
/// `0.DIGITS × 10^exponent` (zero has no digits). Parsing never traps: an exponent too
/// large for any real value saturates.
package struct ExactNumber: Sendable, Comparable {
    package let negative: Bool
    /// Significant digits, no leading or trailing zeros (ASCII `0`...`9`).
    package let digits: [UInt8]
    package let exponent: Int

    /// Decimal text: an optional sign, digits with an optional fraction (`7`, `-1.5`,
    /// `.5`, `5.`), an optional exponent (`1e-3`). JSON numbers are all of this form;
    /// anything else (`0x10`, `inf`, `nan`, spaces) is not a number here.
    package init?(_ text: some StringProtocol) {
        var bytes = Array(text.utf8)[...]
        var negative = false
        if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        var digits: [UInt8] = []
        var pointAt: Int?
        var sawDigit = false
        while let byte = bytes.first, byte != UInt8(ascii: "e"), byte != UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if byte == UInt8(ascii: ".") {
                guard pointAt == nil else { return nil }
                pointAt = digits.count
            } else if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                sawDigit = true
                digits.append(byte)
            } else {
                return nil
            }
        }
        guard sawDigit else { return nil }
        var exponent = 0
        if !bytes.isEmpty {
            bytes = bytes.dropFirst()  // e or E
            var exponentNegative = false
            if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
                exponentNegative = sign == UInt8(ascii: "-")
                bytes = bytes.dropFirst()
            }
            guard !bytes.isEmpty else { return nil }
            for byte in bytes {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                // Saturates far beyond any value a column holds.
                if exponent < 1_000_000_000 { exponent = exponent * 10 + Int(byte - UInt8(ascii: "0")) }
            }
            if exponentNegative { exponent = -exponent }
        }
        // 0.DIGITS × 10^(point position + exponent), leading and trailing zeros dropped.
        var point = (pointAt ?? digits.count) + exponent
        let leading = digits.prefix { $0 == UInt8(ascii: "0") }.count
        digits.removeFirst(leading)
        point -= leading
        while digits.last == UInt8(ascii: "0") { digits.removeLast() }
        self.negative = negative && !digits.isEmpty
        self.digits = digits
        self.exponent = digits.isEmpty ? 0 : point
    }

    package static func < (a: ExactNumber, b: ExactNumber) -> Bool {
        if a.negative != b.negative { return a.negative }
        let magnitude = Self.compareMagnitude(a, b)
        return a.negative ? magnitude > 0 : magnitude < 0
    }

    /// -1, 0 or 1 comparing |a| with |b|.
    private static func compareMagnitude(_ a: ExactNumber, _ b: ExactNumber) -> Int {
        if a.digits.isEmpty || b.digits.isEmpty { return a.digits.isEmpty ? (b.digits.isEmpty ? 0 : -1) : 1 }
        if a.exponent != b.exponent { return a.exponent < b.exponent ? -1 : 1 }
        for (x, y) in zip(a.digits, b.digits) where x != y { return x < y ? -1 : 1 }
        return a.digits.count == b.digits.count ? 0 : (a.digits.count < b.digits.count ? -1 : 1)
    }
}
