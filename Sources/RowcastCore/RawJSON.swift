/// A JSON value kept as the exact bytes PostgreSQL (or rowcast's decoder) produced.
///
/// Rows travel as raw JSON so that numbers keep every digit and scale `to_jsonb`
/// gave them: parsing into `Double` and printing again would change `1.10` into `1.1`
/// and lose digits past 2^53. Construct one through ``JSONScanner`` (which validates)
/// or from bytes rowcast wrote itself.
package struct RawJSON: Sendable, Hashable {
    /// The UTF-8 bytes of one complete JSON value.
    package let bytes: [UInt8]

    /// Wraps bytes the caller vouches for: produced by ``JSONWriter`` or already validated.
    package init(trusted bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Validates `bytes` as exactly one JSON value (surrounding whitespace allowed).
    package init(validating bytes: [UInt8]) throws(JSONSyntaxError) {
        var scanner = JSONScanner(bytes)
        try scanner.skipValue()
        try scanner.expectEnd()
        self.bytes = bytes
    }

    /// The JSON text.
    package var text: String { String(decoding: bytes, as: UTF8.self) }
}
