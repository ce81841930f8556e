import NIOCore
import RowcastCore

/// How one transport frames what rowcast sends: each client registers with one, and
/// the broadcaster frames each record once per framing, not once per client.
package enum Framing: Sendable, Hashable, CaseIterable {
    /// `/ws`: one text frame per event, `{"event":NAME,"data":DATA}`.
    case webSocket
    /// `/events`: `id: CURSOR` and `data: RECORD` per record; errors as `event: error`.
    case serverSentEvents
    /// `/socket.io/`: Engine.IO message packets carrying Socket.IO events in the
    /// default namespace, `42["NAME",DATA]` (records end with their cursor, which
    /// `socket.io-client` keeps as the offset it recovers from).
    case socketIO

    /// A record as this framing sends it. `/ws` shares the encoded buffer itself; the
    /// others are built from its record slice, once per record by ``FramedRecord``.
    package func frame(_ record: EncodedRecord) -> ByteBuffer {
        switch self {
        case .webSocket:
            return record.bytes
        case .serverSentEvents:
            let cursor = record.cursorText
            var buffer = ByteBuffer()
            buffer.reserveCapacity(record.recordRange.count + cursor.utf8.count + 12)
            buffer.writeStaticString("id: ")
            buffer.writeString(cursor)  // hex digits and slashes: nothing to escape in a field
            buffer.writeStaticString("\ndata: ")
            var json = record.json
            buffer.writeBuffer(&json)
            buffer.writeStaticString("\n\n")
            return buffer
        case .socketIO:
            var buffer = ByteBuffer()
            buffer.reserveCapacity(record.recordRange.count + record.cursorText.utf8.count + 16)
            buffer.writeStaticString(#"42["update","#)
            var json = record.json
            buffer.writeBuffer(&json)
            buffer.writeStaticString(#",""#)
            buffer.writeString(record.cursorText)
            buffer.writeStaticString(#""]"#)
            return buffer
        }
    }

    /// A message as this framing sends it; nil when the transport has no such event
    /// (SSE carries records and errors only).
    package func frame(_ message: ServerMessage) -> ByteBuffer? {
        switch self {
        case .webSocket:
            var buffer = ByteBuffer()
            buffer.reserveCapacity(message.data.count + 24)
            buffer.writeStaticString(#"{"event":""#)
            buffer.writeStaticString(message.event)
            buffer.writeStaticString(#"","data":"#)
            buffer.writeBytes(message.data)
            buffer.writeStaticString("}")
            return buffer
        case .serverSentEvents:
            let event = message.event.description
            guard event == "error" || event == "snapshot_end" else { return nil }
            var buffer = ByteBuffer()
            buffer.writeStaticString("event: ")
            buffer.writeStaticString(message.event)
            // `snapshot_end`'s cursor is where EventSource resumes from (Last-Event-ID).
            if let offset = message.offset {
                buffer.writeStaticString("\nid: ")
                buffer.writeString(offset)
            }
            buffer.writeStaticString("\ndata: ")
            buffer.writeBytes(message.data)  // one line: JSONWriter escapes newlines
            buffer.writeStaticString("\n\n")
            return buffer
        case .socketIO:
            var buffer = ByteBuffer()
            buffer.reserveCapacity(message.data.count + 16 + (message.offset?.utf8.count ?? 0))
            buffer.writeStaticString(#"42[""#)
            buffer.writeStaticString(message.event)
            buffer.writeStaticString(#"","#)
            buffer.writeBytes(message.data)
            if let offset = message.offset {
                buffer.writeStaticString(#",""#)
                buffer.writeString(offset)  // a cursor: hex digits and slashes
                buffer.writeStaticString(#"""#)
            }
            buffer.writeStaticString("]")
            return buffer
        }
    }

    /// One row of a snapshot as this framing sends it: an `update` whose record is
    /// `{"source":M,"op":"snapshot","schema":S,"table":T,"row":ROW}`. It has no cursor
    /// (the snapshot is not a place in the stream: `snapshot_end` names where the stream
    /// goes on), so SSE gives it no id and Socket.IO no offset: a reconnect mid-snapshot
    /// resumes from nothing it did not finish.
    package func frame(snapshotRow row: RawJSON, of table: TableName, source: CaptureMode) -> ByteBuffer {
        var writer = JSONWriter(capacity: 96 + row.bytes.count)
        writer.appendSnapshotRowHead(of: table, source: source)
        writer.appendRaw(row.bytes)
        writer.append(byte: UInt8(ascii: "}"))
        var buffer = ByteBuffer()
        switch self {
        case .webSocket:
            buffer.reserveCapacity(writer.bytes.count + 28)
            buffer.writeStaticString(#"{"event":"update","data":"#)
            buffer.writeBytes(writer.bytes)
            buffer.writeStaticString("}")
        case .serverSentEvents:
            buffer.reserveCapacity(writer.bytes.count + 8)
            buffer.writeStaticString("data: ")
            buffer.writeBytes(writer.bytes)
            buffer.writeStaticString("\n\n")
        case .socketIO:
            buffer.reserveCapacity(writer.bytes.count + 14)
            buffer.writeStaticString(#"42["update","#)
            buffer.writeBytes(writer.bytes)
            buffer.writeStaticString("]")
        }
        return buffer
    }

    /// A sign of life on a quiet stream, where the transport has none of its own (SSE's
    /// comment line; WebSocket has ping frames, Engine.IO its `2`).
    package var heartbeat: ByteBuffer? {
        self == .serverSentEvents ? ByteBuffer(string: ": keepalive\n\n") : nil
    }
}

/// One record and its frames, each built the first time a client of that framing
/// needs it and then shared by every such client.
package struct FramedRecord {
    package let encoded: EncodedRecord
    private var serverSentEvents: ByteBuffer?
    private var socketIO: ByteBuffer?

    package init(_ encoded: EncodedRecord) { self.encoded = encoded }

    package mutating func bytes(for framing: Framing) -> ByteBuffer {
        switch framing {
        case .webSocket: return encoded.bytes
        case .serverSentEvents:
            if let serverSentEvents { return serverSentEvents }
            let built = framing.frame(encoded)
            serverSentEvents = built
            return built
        case .socketIO:
            if let socketIO { return socketIO }
            let built = framing.frame(encoded)
            socketIO = built
            return built
        }
    }
}
