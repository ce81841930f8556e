import RowcastCore

/// An event rowcast sends besides records: its name and its data object, before any
/// transport frames it (SPEC section 4). ``Framing`` turns it into `/ws`'s
/// `{"event":NAME,"data":DATA}`, a Socket.IO event packet or an SSE event.
package struct ServerMessage: Sendable, Equatable {
    /// rowcast's own event names: lower-case ASCII words, nothing to escape.
    package let event: StaticString
    /// One JSON object.
    package let data: [UInt8]
    /// Socket.IO's recovery offset: the cursor from which a reconnect recovers (the
    /// client keeps each event's last string argument). Other framings ignore it.
    package var offset: String?

    package static func == (a: ServerMessage, b: ServerMessage) -> Bool {
        a.event.description == b.event.description && a.data == b.data && a.offset == b.offset
    }

    /// `connected` `{"connected": true, "mode": M}`, sent on open.
    package static func connected(mode: CaptureMode) -> ServerMessage {
        var writer = JSONWriter(capacity: 48)
        writer.appendASCII(#"{"connected":true,"mode":"#)
        writer.appendString(mode.rawValue)
        writer.append(byte: UInt8(ascii: "}"))
        return ServerMessage(event: "connected", data: writer.bytes)
    }

    /// `subscribed`, echoing the subscription, with the cursor of the last record
    /// published before it (absent when there was none).
    package static func subscribed(_ subscription: Subscription, cursor: String?) -> ServerMessage {
        var writer = JSONWriter(capacity: 96)
        writer.append(byte: UInt8(ascii: "{"))
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
        writer.append(byte: UInt8(ascii: "}"))
        return ServerMessage(event: "subscribed", data: writer.bytes)
    }

    /// `snapshot_end` `{"cursor": C, "rows": N}`: every row of the snapshot was sent;
    /// the stream goes on after `cursor` (resume from it like from any record's), which
    /// Socket.IO keeps as its offset and SSE as the event's id. No cursor when the
    /// stream has delivered nothing yet.
    package static func snapshotEnd(cursor: String?, rows: Int) -> ServerMessage {
        var writer = JSONWriter(capacity: 64)
        writer.append(byte: UInt8(ascii: "{"))
        var first = true
        if let cursor {
            writer.appendKey("cursor", first: &first)
            writer.appendString(cursor)
        }
        writer.appendKey("rows", first: &first)
        writer.appendInteger(rows)
        writer.append(byte: UInt8(ascii: "}"))
        var message = ServerMessage(event: "snapshot_end", data: writer.bytes)
        message.offset = cursor
        return message
    }

    /// `error` `{"code": C, "message": M}`; the connection stays open.
    package static func error(code: String, message: String, reason: String? = nil) -> ServerMessage {
        ServerMessage(event: "error", data: errorObject(code: code, message: message, reason: reason))
    }

    /// `pong`, answering a client's `ping` with the same data (one JSON object).
    package static func pong(echoing data: String) -> ServerMessage {
        ServerMessage(event: "pong", data: Array(data.utf8))
    }

    /// `{"code": C, "message": M}` alone: the body of HTTP errors, and of `error` events.
    package static func errorObject(code: String, message: String, reason: String? = nil) -> [UInt8] {
        var writer = JSONWriter(capacity: 32 + message.utf8.count)
        writer.appendASCII(#"{"code":"#)
        writer.appendString(code)
        writer.appendASCII(#","message":"#)
        writer.appendString(message)
        if let reason {
            writer.appendASCII(#","reason":"#)
            writer.appendString(reason)
        }
        writer.append(byte: UInt8(ascii: "}"))
        return writer.bytes
    }
}
