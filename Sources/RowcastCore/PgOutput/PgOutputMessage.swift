/// One message of the `pgoutput` plugin, protocol version 1 with `messages 'true'`.
///
/// Each case's type documents its wire layout (see PostgreSQL's
/// `src/backend/replication/logical/proto.c`). Decoding checks every length and
/// tag, and requires the message to be consumed exactly.
package enum PgOutputMessage: Sendable, Equatable {
    /// The tags, as ASCII.
    enum Tag: UInt8 {
        case begin = 0x42  // 'B'
        case commit = 0x43  // 'C'
        case origin = 0x4F  // 'O'
        case relation = 0x52  // 'R'
        case type = 0x59  // 'Y'
        case insert = 0x49  // 'I'
        case update = 0x55  // 'U'
        case delete = 0x44  // 'D'
        case truncate = 0x54  // 'T'
        case message = 0x4D  // 'M'
    }

    case begin(Begin)
    case commit(Commit)
    case origin(Origin)
    case relation(Relation)
    case type(TypeMessage)
    case insert(Insert)
    case update(Update)
    case delete(Delete)
    case truncate(Truncate)
    case message(LogicalMessage)

    /// Decodes one message from XLogData's payload.
    package static func decode(_ bytes: ArraySlice<UInt8>) throws(DecodingError) -> PgOutputMessage {
        guard let first = bytes.first else {
            throw DecodingError(message: "pgoutput", expected: "a message tag", found: "an empty message", offset: 0)
        }
        guard let tag = Tag(rawValue: first) else {
            throw DecodingError(message: "pgoutput", expected: "one of B C O R Y I U D T M", found: describe(tag: first), offset: 0)
        }
        let body = bytes.dropFirst()
        /// Decodes the body as one message type and requires every byte consumed.
        func decode<Message>(_ name: String, _ make: (inout ByteReader) throws(DecodingError) -> Message) throws(DecodingError) -> Message {
            var reader = ByteReader(body, message: name)
            let message = try make(&reader)
            try reader.expectEnd()
            return message
        }
        return switch tag {
        case .begin: .begin(try decode("Begin", Begin.init))
        case .commit: .commit(try decode("Commit", Commit.init))
        case .origin: .origin(try decode("Origin", Origin.init))
        case .relation: .relation(try decode("Relation", Relation.init))
        case .type: .type(try decode("Type", TypeMessage.init))
        case .insert: .insert(try decode("Insert", Insert.init))
        case .update: .update(try decode("Update", Update.init))
        case .delete: .delete(try decode("Delete", Delete.init))
        case .truncate: .truncate(try decode("Truncate", Truncate.init))
        case .message: .message(try decode("Message", LogicalMessage.init))
        }
    }
}

/// `B`: Int64 final (commit) LSN, Int64 commit time (µs since 2000-01-01), Int32 xid.
package struct Begin: Sendable, Equatable {
    package let finalLSN: UInt64
    package let commitTime: Int64
    package let xid: UInt32

    init(from reader: inout ByteReader) throws(DecodingError) {
        finalLSN = try reader.readUInt64("the final LSN")
        commitTime = try reader.readInt64("the commit time")
        xid = try reader.readUInt32("the xid")
    }
}

/// `C`: Int8 flags (0), Int64 commit LSN, Int64 end LSN, Int64 commit time.
package struct Commit: Sendable, Equatable {
    package let flags: UInt8
    package let commitLSN: UInt64
    /// The end of the commit record: the position to confirm once the transaction is delivered.
    package let endLSN: UInt64
    package let commitTime: Int64

    init(from reader: inout ByteReader) throws(DecodingError) {
        flags = try reader.readUInt8("the flags")
        commitLSN = try reader.readUInt64("the commit LSN")
        endLSN = try reader.readUInt64("the end LSN")
        commitTime = try reader.readInt64("the commit time")
    }
}

/// `O`: Int64 commit LSN on the origin server, String origin name.
package struct Origin: Sendable, Equatable {
    package let commitLSN: UInt64
    package let name: String

    init(from reader: inout ByteReader) throws(DecodingError) {
        commitLSN = try reader.readUInt64("the origin's commit LSN")
        name = try reader.readCString("the origin name")
    }
}

/// `R`: Int32 relation OID, String namespace (empty for `pg_catalog`), String name,
/// Int8 replica identity (`d`, `n`, `f`, `i`), Int16 column count, then per column:
/// Int8 flags (1 = part of the key), String name, Int32 type OID, Int32 typmod.
package struct Relation: Sendable, Equatable {
    package struct Column: Sendable, Equatable {
        package let isKey: Bool
        package let name: String
        package let typeOID: UInt32
        package let typeModifier: Int32
    }

    package let oid: UInt32
    package let namespace: String
    package let name: String
    package let replicaIdentity: UInt8
    package let columns: [Column]

    init(from reader: inout ByteReader) throws(DecodingError) {
        oid = try reader.readUInt32("the relation OID")
        let namespace = try reader.readCString("the namespace")
        self.namespace = namespace.isEmpty ? "pg_catalog" : namespace
        name = try reader.readCString("the relation name")
        replicaIdentity = try reader.readUInt8("the replica identity")
        let count = Int(Int16(bitPattern: try reader.readUInt16("the column count")))
        guard count >= 0 else { throw reader.fail("a column count", found: "\(count)") }
        var columns: [Column] = []
        columns.reserveCapacity(count)
        for _ in 0..<count {
            let flags = try reader.readUInt8("the column flags")
            let name = try reader.readCString("the column name")
            let type = try reader.readUInt32("the column type")
            let modifier = Int32(bitPattern: try reader.readUInt32("the type modifier"))
            columns.append(Column(isKey: flags & 1 == 1, name: name, typeOID: type, typeModifier: modifier))
        }
        self.columns = columns
    }
}

/// `Y`: Int32 type OID, String namespace, String name. Sent before a relation that
/// uses a non-built-in type.
package struct TypeMessage: Sendable, Equatable {
    package let oid: UInt32
    package let namespace: String
    package let name: String

    init(from reader: inout ByteReader) throws(DecodingError) {
        oid = try reader.readUInt32("the type OID")
        namespace = try reader.readCString("the namespace")
        name = try reader.readCString("the type name")
    }
}

/// `I`: Int32 relation OID, Byte1 `N`, TupleData.
package struct Insert: Sendable, Equatable {
    package let relationOID: UInt32
    package let new: TupleData

    init(from reader: inout ByteReader) throws(DecodingError) {
        relationOID = try reader.readUInt32("the relation OID")
        let marker = try reader.readUInt8("'N'")
        guard marker == 0x4E else { throw reader.fail("'N'", found: describe(tag: marker)) }
        new = try TupleData(from: &reader)
    }
}

/// `U`: Int32 relation OID, optionally Byte1 `K` (old key) or `O` (old row) with a
/// TupleData, then Byte1 `N` and the new TupleData.
package struct Update: Sendable, Equatable {
    package let relationOID: UInt32
    /// The old key (`K`) or the old row (`O`, REPLICA IDENTITY FULL), when sent.
    package let old: OldTuple?
    package let new: TupleData

    init(from reader: inout ByteReader) throws(DecodingError) {
        relationOID = try reader.readUInt32("the relation OID")
        var marker = try reader.readUInt8("'K', 'O' or 'N'")
        switch marker {
        case 0x4B:
            old = .key(try TupleData(from: &reader))
            marker = try reader.readUInt8("'N'")
        case 0x4F:
            old = .row(try TupleData(from: &reader))
            marker = try reader.readUInt8("'N'")
        case 0x4E:
            old = nil
        default:
            throw reader.fail("'K', 'O' or 'N'", found: describe(tag: marker))
        }
        guard marker == 0x4E else { throw reader.fail("'N'", found: describe(tag: marker)) }
        new = try TupleData(from: &reader)
    }
}

/// `D`: Int32 relation OID, Byte1 `K` (key) or `O` (whole old row), TupleData.
package struct Delete: Sendable, Equatable {
    package let relationOID: UInt32
    package let old: OldTuple

    init(from reader: inout ByteReader) throws(DecodingError) {
        relationOID = try reader.readUInt32("the relation OID")
        let marker = try reader.readUInt8("'K' or 'O'")
        switch marker {
        case 0x4B: old = .key(try TupleData(from: &reader))
        case 0x4F: old = .row(try TupleData(from: &reader))
        default: throw reader.fail("'K' or 'O'", found: describe(tag: marker))
        }
    }
}

/// The old side of an update or delete.
package enum OldTuple: Sendable, Equatable {
    /// Only the replica identity's key columns carry values.
    case key(TupleData)
    /// The whole old row (REPLICA IDENTITY FULL).
    case row(TupleData)
}

/// `T`: Int32 relation count, Int8 options (1 CASCADE, 2 RESTART IDENTITY), Int32 OIDs.
package struct Truncate: Sendable, Equatable {
    package let options: UInt8
    package let relationOIDs: [UInt32]

    init(from reader: inout ByteReader) throws(DecodingError) {
        let count = try reader.readUInt32("the relation count")
        options = try reader.readUInt8("the options")
        guard Int(count) <= reader.remaining / 4 else {
            throw reader.fail("\(count) relation OIDs", found: "\(reader.remaining) bytes")
        }
        var oids: [UInt32] = []
        oids.reserveCapacity(Int(count))
        for _ in 0..<count { oids.append(try reader.readUInt32("a relation OID")) }
        relationOIDs = oids
    }
}

/// `M`: Int8 flags (1 = transactional), Int64 LSN, String prefix, Int32 length, content.
package struct LogicalMessage: Sendable, Equatable {
    package let transactional: Bool
    package let lsn: UInt64
    package let prefix: String
    package let content: ArraySlice<UInt8>

    init(from reader: inout ByteReader) throws(DecodingError) {
        transactional = try reader.readUInt8("the flags") & 1 == 1
        lsn = try reader.readUInt64("the LSN")
        prefix = try reader.readCString("the prefix")
        let length = Int(Int32(bitPattern: try reader.readUInt32("the content length")))
        content = try reader.readBytes(length, "the content")
    }
}

/// TupleData: Int16 column count, then per column Byte1 `n` (null), `u` (unchanged
/// TOASTed value, not sent), or `t` with Int32 length and that many bytes of text.
/// (`b`, binary, is only sent when asked for; rowcast never asks.)
package struct TupleData: Sendable, Equatable {
    package enum Value: Sendable, Equatable {
        case null
        case unchangedToast
        case text(ArraySlice<UInt8>)
    }

    package let values: [Value]

    init(from reader: inout ByteReader) throws(DecodingError) {
        let count = Int(Int16(bitPattern: try reader.readUInt16("the column count")))
        guard count >= 0 else { throw reader.fail("a column count", found: "\(count)") }
        var values: [Value] = []
        values.reserveCapacity(count)
        for _ in 0..<count {
            let kind = try reader.readUInt8("a column kind")
            switch kind {
            case 0x6E: values.append(.null)  // 'n'
            case 0x75: values.append(.unchangedToast)  // 'u'
            case 0x74:  // 't'
                let length = Int(Int32(bitPattern: try reader.readUInt32("the value length")))
                values.append(.text(try reader.readBytes(length, "the value")))
            default:
                throw reader.fail("'n', 'u' or 't'", found: describe(tag: kind))
            }
        }
        self.values = values
    }
}
