import NIOCore
import RowcastCore

/// The packets rowcast sends over Engine.IO, as the bytes of one packet each.
enum SocketIOFrame {
    /// Engine.IO's open packet: the session id and the heartbeat the client must keep.
    static func open(sid: String, upgrades: Bool, pingInterval: Duration, pingTimeout: Duration, maxPayload: Int) -> ByteBuffer {
        var writer = JSONWriter(capacity: 160)
        writer.appendASCII(#"0{"sid":"#)
        writer.appendString(sid)
        writer.appendASCII(upgrades ? #","upgrades":["websocket"],"pingInterval":"# : #","upgrades":[],"pingInterval":"#)
        writer.appendInteger(pingInterval.milliseconds)
        writer.appendASCII(#","pingTimeout":"#)
        writer.appendInteger(pingTimeout.milliseconds)
        writer.appendASCII(#","maxPayload":"#)
        writer.appendInteger(maxPayload)
        writer.append(byte: UInt8(ascii: "}"))
        return ByteBuffer(bytes: writer.bytes)
    }

    static let ping = ByteBuffer(string: "2")
    static let close = ByteBuffer(string: "1")
    static let noop = ByteBuffer(string: "6")

    /// CONNECT accepted, in the default namespace: the socket id and the private id
    /// the client sends back to recover the session after a disconnection.
    static func connected(sid: String, pid: String) -> ByteBuffer {
        var writer = JSONWriter(capacity: 96)
        writer.appendASCII(#"40{"sid":"#)
        writer.appendString(sid)
        writer.appendASCII(#","pid":"#)
        writer.appendString(pid)
        writer.append(byte: UInt8(ascii: "}"))
        return ByteBuffer(bytes: writer.bytes)
    }

    /// CONNECT refused; `socket.io-client` raises `connect_error` with this message.
    static func connectError(namespace: String, message: String) -> ByteBuffer {
        var writer = JSONWriter(capacity: 64 + message.utf8.count)
        writer.appendASCII("44")
        if namespace != "/" {
            writer.appendRaw(Array(namespace.utf8))
            writer.append(byte: UInt8(ascii: ","))
        }
        writer.appendASCII(#"{"message":"#)
        writer.appendString(message)
        writer.append(byte: UInt8(ascii: "}"))
        return ByteBuffer(bytes: writer.bytes)
    }

    /// The server leaving the namespace (`socket.io-client` does not reconnect by itself).
    static let disconnect = ByteBuffer(string: "41")

    /// An acknowledgement: `43<id>[]`, or `43<id>[{"code","message"}]` for a refusal.
    static func ack(_ id: Int, error: ClientMessageError?) -> ByteBuffer {
        var writer = JSONWriter(capacity: 32)
        writer.appendASCII("43")
        writer.appendInteger(id)
        writer.append(byte: UInt8(ascii: "["))
        if let error { writer.appendRaw(ServerFrame.errorObject(code: error.code, message: error.message)) }
        writer.append(byte: UInt8(ascii: "]"))
        return ByteBuffer(bytes: writer.bytes)
    }

    /// rowcast's `error` event, `42["error",{"code":C,"message":M}]`.
    static func error(code: String, message: String) -> ByteBuffer {
        event(fromFrame: ServerFrame.error(code: code, message: message), offset: nil)
    }

    private static let eventPrefix = Array(#"{"event":"#.utf8)
    private static let dataKey = Array(#","data":"#.utf8)

    /// A rowcast frame, `{"event":"NAME","data":DATA}`, as a Socket.IO event packet in
    /// the default namespace: `42["NAME",DATA]`, or `42["NAME",DATA,"OFFSET"]`.
    ///
    /// `socket.io-client` keeps the last argument of each event, when it is a string, as
    /// the offset it sends back to recover a session; rowcast's is the record's cursor.
    /// Built once per record and shared by every Socket.IO client, as the frame it
    /// comes from is by every WebSocket client.
    static func event(fromFrame frame: ByteBuffer, offset: String?) -> ByteBuffer {
        frame.withUnsafeReadableBytes { bytes in
            let count = bytes.count
            var nameEnd = eventPrefix.count
            // Event names are rowcast's own and have no quotes: the name ends at `","data":`.
            while nameEnd + dataKey.count <= count, !bytes[nameEnd..<nameEnd + dataKey.count].elementsEqual(dataKey) {
                nameEnd += 1
            }
            let dataStart = min(nameEnd + dataKey.count, count)
            let dataEnd = max(dataStart, count - 1)
            var packet = ByteBuffer()
            packet.reserveCapacity(count + 8 + (offset?.utf8.count ?? 0))
            packet.writeStaticString("42[")
            packet.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[eventPrefix.count..<min(nameEnd, count)]))
            packet.writeStaticString(",")
            packet.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[dataStart..<dataEnd]))
            if let offset {
                packet.writeStaticString(",\"")
                packet.writeString(offset)  // cursors are hex digits and slashes
                packet.writeStaticString("\"")
            }
            packet.writeStaticString("]")
            return packet
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
