import NIOCore
import RowcastCore

/// The packets rowcast sends over Engine.IO, as the bytes of one packet each.
package enum SocketIOFrame {
    /// Engine.IO's open packet: the session id and the heartbeat the client must keep.
    package static func open(sid: String, upgrades: Bool, pingInterval: Duration, pingTimeout: Duration, maxPayload: Int) -> ByteBuffer {
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

    package static let ping = ByteBuffer(string: "2")
    package static let close = ByteBuffer(string: "1")
    package static let noop = ByteBuffer(string: "6")

    /// CONNECT accepted, in the default namespace: the socket id and the private id
    /// the client sends back to recover the session after a disconnection.
    package static func connected(sid: String, pid: String) -> ByteBuffer {
        var writer = JSONWriter(capacity: 96)
        writer.appendASCII(#"40{"sid":"#)
        writer.appendString(sid)
        writer.appendASCII(#","pid":"#)
        writer.appendString(pid)
        writer.append(byte: UInt8(ascii: "}"))
        return ByteBuffer(bytes: writer.bytes)
    }

    /// CONNECT refused; `socket.io-client` raises `connect_error` with this message.
    package static func connectError(namespace: String, message: String) -> ByteBuffer {
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
    package static let disconnect = ByteBuffer(string: "41")

    /// An acknowledgement: `43<id>[]`, or `43<id>[{"code","message"}]` for a refusal.
    package static func ack(_ id: Int, error: ClientMessageError?) -> ByteBuffer {
        var writer = JSONWriter(capacity: 32)
        writer.appendASCII("43")
        writer.appendInteger(id)
        writer.append(byte: UInt8(ascii: "["))
        if let error { writer.appendRaw(ServerMessage.errorObject(code: error.code, message: error.message, reason: error.reason)) }
        writer.append(byte: UInt8(ascii: "]"))
        return ByteBuffer(bytes: writer.bytes)
    }

    /// A random id for sessions and sockets: 128 bits, base64url without padding.
    package static func randomID() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        for _ in 0..<2 { withUnsafeBytes(of: generator.next() as UInt64) { bytes += $0 } }
        var id = ""
        for character in Base64.encode(bytes) {
            switch character {
            case "+": id.append("-")
            case "/": id.append("_")
            case "=": break
            default: id.append(character)
            }
        }
        return id
    }

    /// rowcast's `error` event, `42["error",{"code":C,"message":M}]`.
    package static func error(code: String, message: String, reason: String? = nil) -> ByteBuffer {
        Framing.socketIO.frame(ServerMessage.error(code: code, message: message, reason: reason)) ?? ByteBuffer()
    }
}

extension Duration {
    package var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
