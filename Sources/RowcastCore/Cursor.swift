/// A position in a record stream, handed to clients as an opaque string.
///
/// Cursors are unique and increase within one stream. Their text is fixed-width hex,
/// so within one stream string order is stream order too:
/// - trigger mode: `t<stream>.<sequence>`, where `stream` identifies one rowcast
///   process (its start time) and `sequence` counts the records it produced;
/// - replication mode: `r<commit LSN>.<index>`, the change's position in its
///   transaction, which survives restarts because the slot replays the same LSNs.
package struct Cursor: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Which capture mode produced the cursor.
    package enum Kind: Sendable, Hashable { case trigger, replication }

    /// The capture mode.
    package let kind: Kind
    /// Trigger: the stream id. Replication: the commit LSN.
    package let major: UInt64
    /// Trigger: the sequence number. Replication: the index in the transaction.
    package let minor: UInt64

    /// A trigger-mode cursor.
    package static func trigger(stream: UInt64, sequence: UInt64) -> Cursor {
        Cursor(kind: .trigger, major: stream, minor: sequence)
    }

    /// A replication-mode cursor.
    package static func replication(commitLSN: UInt64, index: UInt32) -> Cursor {
        Cursor(kind: .replication, major: commitLSN, minor: UInt64(index))
    }

    /// Parses the text form; nil when `text` is not a cursor rowcast made.
    package init?(_ text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 1 + 16 + 1 + 16, utf8[17] == UInt8(ascii: ".") else { return nil }
        switch utf8[0] {
        case UInt8(ascii: "t"): kind = .trigger
        case UInt8(ascii: "r"): kind = .replication
        default: return nil
        }
        // Hex digits only: UInt64(_:radix:) also takes a sign, and "t+0…" is no cursor rowcast made.
        let hex: (UInt8) -> Bool = { (48...57).contains($0) || (97...102).contains($0) || (65...70).contains($0) }
        guard utf8[1..<17].allSatisfy(hex), utf8[18...].allSatisfy(hex),
            let major = UInt64(String(decoding: utf8[1..<17], as: UTF8.self), radix: 16),
            let minor = UInt64(String(decoding: utf8[18...], as: UTF8.self), radix: 16)
        else { return nil }
        self.major = major
        self.minor = minor
    }

    /// A replication-mode cursor from its two parts as stored (``ChangeRecord/init(binary:)``).
    package init(replicationMajor major: UInt64, minor: UInt64) {
        self.init(kind: .replication, major: major, minor: minor)
    }

    private init(kind: Kind, major: UInt64, minor: UInt64) {
        self.kind = kind
        self.major = major
        self.minor = minor
    }

    /// The text form clients see.
    package var description: String {
        var writer = JSONWriter(capacity: 34)
        appendText(to: &writer)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// Appends the text form, unquoted (it never needs escaping).
    package func appendText(to writer: inout JSONWriter) {
        writer.append(byte: kind == .trigger ? UInt8(ascii: "t") : UInt8(ascii: "r"))
        writer.appendHex(major, width: 16)
        writer.append(byte: UInt8(ascii: "."))
        writer.appendHex(minor, width: 16)
    }

    /// Stream order within one kind. Cursors of different kinds come from different
    /// streams and are never in order with each other: trigger cursors sort first,
    /// so that the order stays total and a cursor of the other mode never skips a record.
    package static func < (lhs: Cursor, rhs: Cursor) -> Bool {
        if lhs.kind != rhs.kind { return lhs.kind == .trigger }
        return (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }
}
