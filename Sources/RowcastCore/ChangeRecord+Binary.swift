/// A record in a compact binary form, for `serve`'s window log: every field, so that
/// the record read back encodes to exactly the same JSON.
///
/// Layout: the cursor (kind byte, major, minor), source and op bytes, a presence
/// bitmap of the optional fields, then each present field in declaration order;
/// strings and raw JSON as a 32-bit length and their UTF-8 bytes; integers little-endian.
extension ChangeRecord {
    private struct Field: OptionSet {
        let rawValue: UInt16
        static let schema = Field(rawValue: 1 << 0)
        static let table = Field(rawValue: 1 << 1)
        static let row = Field(rawValue: 1 << 2)
        static let old = Field(rawValue: 1 << 3)
        static let unchanged = Field(rawValue: 1 << 4)
        static let xid = Field(rawValue: 1 << 5)
        static let lsn = Field(rawValue: 1 << 6)
        static let commitTime = Field(rawValue: 1 << 7)
        static let channel = Field(rawValue: 1 << 8)
        static let payload = Field(rawValue: 1 << 9)
        static let prefix = Field(rawValue: 1 << 10)
        static let content = Field(rawValue: 1 << 11)
        static let contentIsBase64 = Field(rawValue: 1 << 12)
        static let transactional = Field(rawValue: 1 << 13)
        static let transactionalValue = Field(rawValue: 1 << 14)
        static let generated = Field(rawValue: 1 << 15)
    }

    /// Appends the record's binary form to `bytes`.
    package func appendBinary(to bytes: inout [UInt8]) {
        bytes.append(cursor.kind == .trigger ? 0 : 1)
        Self.append(cursor.major, to: &bytes)
        Self.append(cursor.minor, to: &bytes)
        bytes.append(UInt8(CaptureMode.allCases.firstIndex(of: source) ?? 0))
        bytes.append(UInt8(Operation.allCases.firstIndex(of: op) ?? 0))
        var fields: Field = []
        if schema != nil { fields.insert(.schema) }
        if table != nil { fields.insert(.table) }
        if row != nil { fields.insert(.row) }
        if old != nil { fields.insert(.old) }
        if unchanged != nil { fields.insert(.unchanged) }
        if xid != nil { fields.insert(.xid) }
        if lsn != nil { fields.insert(.lsn) }
        if commitTime != nil { fields.insert(.commitTime) }
        if channel != nil { fields.insert(.channel) }
        if payload != nil { fields.insert(.payload) }
        if prefix != nil { fields.insert(.prefix) }
        if content != nil { fields.insert(.content) }
        if contentIsBase64 { fields.insert(.contentIsBase64) }
        if generated != nil { fields.insert(.generated) }
        if let transactional {
            fields.insert(.transactional)
            if transactional { fields.insert(.transactionalValue) }
        }
        bytes.append(UInt8(truncatingIfNeeded: fields.rawValue))
        bytes.append(UInt8(truncatingIfNeeded: fields.rawValue >> 8))
        if let schema { Self.append(schema.utf8, to: &bytes) }
        if let table { Self.append(table.utf8, to: &bytes) }
        if let row { Self.append(row.bytes, to: &bytes) }
        if let old { Self.append(old.bytes, to: &bytes) }
        if let unchanged { Self.append(unchanged, to: &bytes) }
        if let xid { Self.append(xid, to: &bytes) }
        if let lsn { Self.append(lsn, to: &bytes) }
        if let commitTime { Self.append(commitTime.utf8, to: &bytes) }
        if let channel { Self.append(channel.utf8, to: &bytes) }
        if let payload { Self.append(payload.utf8, to: &bytes) }
        if let prefix { Self.append(prefix.utf8, to: &bytes) }
        if let content { Self.append(content.utf8, to: &bytes) }
        if let generated { Self.append(generated, to: &bytes) }
    }

    /// Reads a record written by ``appendBinary(to:)``; nil when the bytes are not one.
    package init?(binary bytes: ArraySlice<UInt8>) {
        var reader = BinaryReader(bytes)
        guard let kind = reader.byte(), kind <= 1, let major = reader.uint64(), let minor = reader.uint64(),
            let sourceIndex = reader.byte(), Int(sourceIndex) < CaptureMode.allCases.count,
            let opIndex = reader.byte(), Int(opIndex) < Operation.allCases.count,
            let low = reader.byte(), let high = reader.byte()
        else { return nil }
        let cursor = kind == 0 ? Cursor.trigger(stream: major, sequence: minor) : Cursor(replicationMajor: major, minor: minor)
        self.init(cursor: cursor, source: CaptureMode.allCases[Int(sourceIndex)], op: Operation.allCases[Int(opIndex)])
        let fields = Field(rawValue: UInt16(low) | UInt16(high) << 8)
        func string(_ field: Field) -> String?? {
            guard fields.contains(field) else { return .some(nil) }
            guard let bytes = reader.lengthPrefixed() else { return nil }
            return .some(String(decoding: bytes, as: UTF8.self))
        }
        guard let schema = string(.schema), let table = string(.table) else { return nil }
        self.schema = schema
        self.table = table
        if fields.contains(.row) {
            guard let bytes = reader.lengthPrefixed() else { return nil }
            row = RawJSON(trusted: Array(bytes))
        }
        if fields.contains(.old) {
            guard let bytes = reader.lengthPrefixed() else { return nil }
            old = RawJSON(trusted: Array(bytes))
        }
        if fields.contains(.unchanged) {
            guard let columns = reader.strings() else { return nil }
            unchanged = columns
        }
        if fields.contains(.xid) {
            guard let xid = reader.uint32() else { return nil }
            self.xid = xid
        }
        if fields.contains(.lsn) {
            guard let lsn = reader.uint64() else { return nil }
            self.lsn = lsn
        }
        guard let commitTime = string(.commitTime), let channel = string(.channel), let payload = string(.payload),
            let prefix = string(.prefix), let content = string(.content)
        else { return nil }
        self.commitTime = commitTime
        self.channel = channel
        self.payload = payload
        self.prefix = prefix
        self.content = content
        contentIsBase64 = fields.contains(.contentIsBase64)
        if fields.contains(.transactional) { transactional = fields.contains(.transactionalValue) }
        if fields.contains(.generated) {
            guard let columns = reader.strings() else { return nil }
            generated = columns
        }
        guard reader.remaining == 0 else { return nil }
    }

    private static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    private static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// A count, then each string length-prefixed.
    private static func append(_ strings: [String], to bytes: inout [UInt8]) {
        append(UInt32(clamping: strings.count), to: &bytes)
        for string in strings { append(string.utf8, to: &bytes) }
    }

    private static func append(_ text: some Collection<UInt8>, to bytes: inout [UInt8]) {
        append(UInt32(clamping: text.count), to: &bytes)
        bytes.append(contentsOf: text)
    }
}

/// Reads little-endian integers and length-prefixed byte strings, never past the end.
package struct BinaryReader {
    private let bytes: ArraySlice<UInt8>
    private var offset: Int

    package init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.offset = bytes.startIndex
    }

    package var remaining: Int { bytes.endIndex - offset }

    package mutating func byte() -> UInt8? {
        guard offset < bytes.endIndex else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    package mutating func uint32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        var value: UInt32 = 0
        for shift in 0..<4 { value |= UInt32(bytes[offset + shift]) << (8 * shift) }
        offset += 4
        return value
    }

    package mutating func uint64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        var value: UInt64 = 0
        for shift in 0..<8 { value |= UInt64(bytes[offset + shift]) << (8 * shift) }
        offset += 8
        return value
    }

    /// A count, then that many length-prefixed UTF-8 strings.
    package mutating func strings() -> [String]? {
        guard let count = uint32(), count <= remaining else { return nil }
        var strings: [String] = []
        for _ in 0..<count {
            guard let bytes = lengthPrefixed() else { return nil }
            strings.append(String(decoding: bytes, as: UTF8.self))
        }
        return strings
    }

    /// A 32-bit length, then that many bytes.
    package mutating func lengthPrefixed() -> ArraySlice<UInt8>? {
        guard let length = uint32(), Int(length) <= remaining else { return nil }
        defer { offset += Int(length) }
        return bytes[offset..<offset + Int(length)]
    }
}
