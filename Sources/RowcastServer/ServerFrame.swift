import NIOCore
import RowcastCore

/// The frames the server sends, `{"event": NAME, "data": OBJECT}` (SPEC section 4).
public enum ServerFrame {
    /// `connected` `{"connected": true, "mode": M}`, sent on open.
    public static func connected(mode: CaptureMode) -> ByteBuffer {
        var writer = JSONWriter(capacity: 64)
        writer.appendASCII(#"{"event":"connected","data":{"connected":true,"mode":"#)
        writer.appendString(mode.rawValue)
        writer.appendASCII("}}")
        return ByteBuffer(bytes: writer.bytes)
    }

    /// `update` with the record as `data`. Built once per record and shared by every client.
    public static func update(_ record: ChangeRecord) -> ByteBuffer {
        var writer = JSONWriter(capacity: 160 + (record.row?.bytes.count ?? 0) + (record.old?.bytes.count ?? 0))
        writer.appendASCII(#"{"event":"update","data":"#)
        record.encode(into: &writer)
        writer.append(byte: UInt8(ascii: "}"))
        return ByteBuffer(bytes: writer.bytes)
    }

    /// `subscribed`, echoing what the client asked for.
    public static func subscribed(cursor: String?) -> ByteBuffer {
        var writer = JSONWriter(capacity: 96)
        writer.appendASCII(#"{"event":"subscribed","data":{"#)
        if let cursor {
            writer.appendASCII(#""cursor":"#)
            writer.appendString(cursor)
        }
        writer.appendASCII("}}")
        return ByteBuffer(bytes: writer.bytes)
    }

    /// `error` `{"code": C, "message": M}`; the connection stays open.
    public static func error(code: String, message: String) -> ByteBuffer {
        var writer = JSONWriter(capacity: 96 + message.utf8.count)
        writer.appendASCII(#"{"event":"error","data":{"code":"#)
        writer.appendString(code)
        writer.appendASCII(#","message":"#)
        writer.appendString(message)
        writer.appendASCII("}}")
        return ByteBuffer(bytes: writer.bytes)
    }
}
