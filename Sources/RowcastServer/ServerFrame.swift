import NIOCore
import RowcastCore

/// The frames the server sends, `{"event": NAME, "data": OBJECT}` (SPEC section 4).
package enum ServerFrame {
    /// `connected` `{"connected": true, "mode": M}`, sent on open.
    package static func connected(mode: CaptureMode) -> ByteBuffer {
        var writer = JSONWriter(capacity: 64)
        writer.appendASCII(#"{"event":"connected","data":{"connected":true,"mode":"#)
        writer.appendString(mode.rawValue)
        writer.appendASCII("}}")
        return ByteBuffer(bytes: writer.bytes)
    }

    /// `update` with the record as `data`. Built once per record and shared by every client.
    package static func update(_ record: ChangeRecord) -> ByteBuffer {
        let (row, old) = (record.row?.bytes.count ?? 0, record.old?.bytes.count ?? 0)
        var frame = ByteBuffer()
        frame.reserveCapacity(160 + row + old)
        // Sized for what goes through the writer: everything but the large values.
        let limit = ChangeRecord.largeValueBytes
        let small = (row < limit ? row : 0) + (old < limit ? old : 0)
        var writer = JSONWriter(capacity: 160 + small)
        writer.appendASCII(updatePrefix)
        // Large values are copied once, straight into the frame.
        record.encode(into: &writer) { writer, value in
            frame.writeBytes(writer.bytes)
            writer.truncate(to: 0)
            frame.writeBytes(value.bytes)
        }
        writer.append(byte: UInt8(ascii: "}"))
        frame.writeBytes(writer.bytes)
        return frame
    }

    /// The `row` and `old` values inside an `update` frame, copied out (for matching a
    /// row filter against a record the resume window keeps without them).
    static func values(inUpdate frame: ByteBuffer) -> (row: RawJSON?, old: RawJSON?) {
        guard let record = self.record(inUpdate: frame) else { return (nil, nil) }
        let bytes = Array(record.readableBytesView)
        var row: RawJSON?, old: RawJSON?
        var scanner = JSONScanner(bytes)
        try? scanner.scanObject { (key, range) throws(JSONSyntaxError) in
            if key == "row" { row = RawJSON(trusted: Array(bytes[range])) }
            if key == "old" { old = RawJSON(trusted: Array(bytes[range])) }
        }
        return (row, old)
    }

    private static let updatePrefix: StaticString = #"{"event":"update","data":"#

    /// The record inside an `update` frame, as a slice of the same bytes (for SSE).
    package static func record(inUpdate frame: ByteBuffer) -> ByteBuffer? {
        let prefix = updatePrefix.utf8CodeUnitCount
        return frame.getSlice(at: frame.readerIndex + prefix, length: frame.readableBytes - prefix - 1)
    }

    /// `subscribed`, echoing the subscription, with the cursor of the last record
    /// published before it (absent when there was none).
    package static func subscribed(_ subscription: Subscription, cursor: String?) -> ByteBuffer {
        var writer = JSONWriter(capacity: 128)
        writer.appendASCII(#"{"event":"subscribed","data":{"#)
        var first = true
        func list(_ key: StaticString, _ values: [String]) {
            writer.appendKey(key, first: &first)
            writer.append(byte: UInt8(ascii: "["))
            for (index, value) in values.enumerated() {
                if index > 0 { writer.append(byte: UInt8(ascii: ",")) }
                writer.appendString(value)
            }
            writer.append(byte: UInt8(ascii: "]"))
        }
        if let tables = subscription.tables { list("tables", tables.map(\.description).sorted()) }
        if let ops = subscription.ops { list("ops", ops.map(\.rawValue).sorted()) }
        if let filter = subscription.filter {
            writer.appendKey("filter", first: &first)
            writer.appendString(filter.description)
        }
        if let cursor {
            writer.appendKey("cursor", first: &first)
            writer.appendString(cursor)
        }
        writer.appendASCII("}}")
        return ByteBuffer(bytes: writer.bytes)
    }

    /// `error` `{"code": C, "message": M}`; the connection stays open.
    package static func error(code: String, message: String) -> ByteBuffer {
        var writer = JSONWriter(capacity: 96 + message.utf8.count)
        writer.appendASCII(#"{"event":"error","data":"#)
        appendErrorObject(code: code, message: message, to: &writer)
        writer.append(byte: UInt8(ascii: "}"))
        return ByteBuffer(bytes: writer.bytes)
    }

    /// `{"code": C, "message": M}` alone: the body of HTTP errors and SSE `error` events.
    package static func errorObject(code: String, message: String) -> [UInt8] {
        var writer = JSONWriter(capacity: 64 + message.utf8.count)
        appendErrorObject(code: code, message: message, to: &writer)
        return writer.bytes
    }

    private static func appendErrorObject(code: String, message: String, to writer: inout JSONWriter) {
        writer.appendASCII(#"{"code":"#)
        writer.appendString(code)
        writer.appendASCII(#","message":"#)
        writer.appendString(message)
        writer.append(byte: UInt8(ascii: "}"))
    }

    /// `pong`, answering a client's `ping` with the same `data`.
    package static func pong(echoing data: String) -> ByteBuffer {
        var writer = JSONWriter(capacity: 32 + data.utf8.count)
        writer.appendASCII(#"{"event":"pong","data":"#)
        writer.appendRaw(Array(data.utf8))
        writer.append(byte: UInt8(ascii: "}"))
        return ByteBuffer(bytes: writer.bytes)
    }
}
