/// A CopyData payload of the streaming replication protocol, server to client.
///
/// Wire layout (first byte is the tag):
/// - `w` XLogData: Int64 start of WAL data, Int64 server WAL end, Int64 send time
///   (µs since 2000-01-01), then the plugin's bytes (here one pgoutput message);
/// - `k` primary keepalive: Int64 server WAL end, Int64 send time, Byte1 1 when the
///   server asks for a reply at once.
package enum ReplicationMessage: Sendable, Equatable {
    /// The tags, as ASCII.
    enum Tag: UInt8 {
        case xLogData = 0x77  // 'w'
        case keepalive = 0x6B  // 'k'
    }

    case xLogData(XLogData)
    case keepalive(PrimaryKeepalive)

    /// Decodes one CopyData payload; requires every byte consumed.
    package static func decode(_ bytes: ArraySlice<UInt8>) throws(DecodingError) -> ReplicationMessage {
        var reader = ByteReader(bytes, message: "CopyData")
        let tagByte = try reader.readUInt8("a tag")
        guard let tag = Tag(rawValue: tagByte) else {
            throw DecodingError(message: "CopyData", expected: "tag 'w' or 'k'", found: describe(tag: tagByte), offset: 0)
        }
        switch tag {
        case .xLogData:
            reader = ByteReader(bytes, message: "XLogData")
            _ = try reader.readUInt8("a tag")
            let start = try reader.readUInt64("the WAL start")
            let end = try reader.readUInt64("the WAL end")
            let time = try reader.readInt64("the send time")
            let data = try reader.readBytes(reader.remaining, "the message")
            return .xLogData(XLogData(walStart: start, walEnd: end, sendTime: time, data: data))
        case .keepalive:
            reader = ByteReader(bytes, message: "keepalive")
            _ = try reader.readUInt8("a tag")
            let end = try reader.readUInt64("the WAL end")
            let time = try reader.readInt64("the send time")
            let reply = try reader.readUInt8("the reply flag")
            try reader.expectEnd()
            return .keepalive(PrimaryKeepalive(walEnd: end, sendTime: time, replyRequested: reply != 0))
        }
    }
}

/// `w`: a chunk of decoded WAL.
package struct XLogData: Sendable, Equatable {
    package let walStart: UInt64
    package let walEnd: UInt64
    package let sendTime: Int64
    /// The plugin's output: one pgoutput message.
    package let data: ArraySlice<UInt8>
}

/// `k`: the server's keepalive.
package struct PrimaryKeepalive: Sendable, Equatable {
    /// The end of WAL the server has sent.
    package let walEnd: UInt64
    package let sendTime: Int64
    /// The server wants a standby status update now (or it will time us out).
    package let replyRequested: Bool
}

/// The client's standby status update, `r`.
///
/// Wire layout: Byte1 `r`, Int64 written LSN, Int64 flushed LSN, Int64 applied LSN,
/// Int64 client time (µs since 2000-01-01), Byte1 1 to ask the server for a reply.
/// 34 bytes. The slot's `confirmed_flush_lsn` follows the flushed LSN.
package struct StandbyStatusUpdate: Sendable, Equatable {
    package var written: UInt64
    package var flushed: UInt64
    package var applied: UInt64
    package var clock: Int64
    package var replyRequested: Bool

    package init(written: UInt64, flushed: UInt64, applied: UInt64, clock: Int64, replyRequested: Bool = false) {
        self.written = written
        self.flushed = flushed
        self.applied = applied
        self.clock = clock
        self.replyRequested = replyRequested
    }

    /// The 34 bytes to send with CopyData.
    package var bytes: [UInt8] {
        var out: [UInt8] = [0x72]  // 'r'
        out.reserveCapacity(34)
        for value in [written, flushed, applied, UInt64(bitPattern: clock)] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
        }
        out.append(replyRequested ? 1 : 0)
        return out
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's, 2000-01-01.
package let postgresEpochOffsetMicroseconds: Int64 = 946_684_800_000_000

func describe(tag: UInt8) -> String {
    (0x20..<0x7F).contains(tag) ? "'\(Character(Unicode.Scalar(tag)))'" : "byte 0x" + String(tag, radix: 16)
}
