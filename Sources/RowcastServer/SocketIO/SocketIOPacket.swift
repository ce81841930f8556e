import NIOCore
import RowcastCore

/// An Engine.IO v4 packet as a client sends it: one WebSocket text message, or one of
/// the packets a polling `POST` body joins with the record separator (0x1E).
///
/// Engine.IO is the transport under Socket.IO: `0` open, `1` close, `2` ping, `3` pong,
/// `4` message (a Socket.IO packet), `5` upgrade, `6` noop. Only text packets: rowcast
/// neither sends nor accepts binary ones (`b…`).
enum EnginePacket: Equatable, Sendable {
    case close
    case ping(String)
    case pong(String)
    case message(SocketIOPacket)
    case upgrade
    case noop

    /// Parses one packet; the error is the one line a client (and the log) gets.
    static func parse(_ text: Substring.UTF8View) throws(SocketIOPacketError) -> EnginePacket {
        guard let type = text.first else { throw .malformed("an empty Engine.IO packet") }
        let rest = text.dropFirst()
        switch type {
        case UInt8(ascii: "1"): return .close
        case UInt8(ascii: "2"): return .ping(String(decoding: rest, as: UTF8.self))
        case UInt8(ascii: "3"): return .pong(String(decoding: rest, as: UTF8.self))
        case UInt8(ascii: "4"): return .message(try SocketIOPacket.parse(Array(rest)))
        case UInt8(ascii: "5"): return .upgrade
        case UInt8(ascii: "6"): return .noop
        case UInt8(ascii: "b"): throw .unsupported("binary Engine.IO packets are not supported; rowcast speaks JSON text")
        default: throw .malformed("unknown Engine.IO packet type \"\(Character(Unicode.Scalar(type)))\"")
        }
    }

    /// The packets of a polling `POST` body.
    static func split(payload: [UInt8]) -> [Substring.UTF8View] {
        String(decoding: payload, as: UTF8.self).utf8.split(separator: 0x1E, omittingEmptySubsequences: true)
            .map { Substring($0).utf8 }
    }
}

/// A Socket.IO v5-protocol packet (socket.io v3 and v4), inside an Engine.IO message:
/// `<type>[<namespace>,][<ack id>][JSON]`.
enum SocketIOPacket: Equatable, Sendable {
    /// `0`: join a namespace, with the client's `auth` object (credentials and, on a
    /// reconnect, the recovery `pid` and `offset`).
    case connect(namespace: String, auth: SocketIOAuth)
    /// `1`: leave a namespace.
    case disconnect(namespace: String)
    /// `2`: an event, `[name, ...arguments]`, maybe with an acknowledgement id.
    case event(namespace: String, ack: Int?, name: String, data: [UInt8]?)
    /// `3`: the client acknowledging one of ours (rowcast asks for none).
    case ack(namespace: String, id: Int)

    static func parse(_ bytes: [UInt8]) throws(SocketIOPacketError) -> SocketIOPacket {
        guard let type = bytes.first else { throw .malformed("an empty Socket.IO packet") }
        var position = 1
        // Binary packets (5, 6) carry an attachment count and `-`.
        if type == UInt8(ascii: "5") || type == UInt8(ascii: "6") {
            throw .unsupported("binary Socket.IO packets are not supported; rowcast speaks JSON text")
        }
        var namespace = "/"
        if position < bytes.count, bytes[position] == UInt8(ascii: "/") {
            guard let comma = bytes[position...].firstIndex(of: UInt8(ascii: ",")) else {
                // `0/admin` with nothing after is a namespace alone.
                namespace = String(decoding: bytes[position...], as: UTF8.self)
                position = bytes.count
                return try finish(type: type, namespace: namespace, ack: nil, json: [])
            }
            namespace = String(decoding: bytes[position..<comma], as: UTF8.self)
            position = comma + 1
        }
        var ack: Int?
        while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
            let digit = Int(bytes[position] - UInt8(ascii: "0"))
            let (times, overflow) = (ack ?? 0).multipliedReportingOverflow(by: 10)
            guard !overflow, times <= Int.max - digit else { throw .malformed("an acknowledgement id out of range") }
            ack = times + digit
            position += 1
        }
        return try finish(type: type, namespace: namespace, ack: ack, json: Array(bytes[position...]))
    }

    private static func finish(type: UInt8, namespace: String, ack: Int?, json: [UInt8]) throws(SocketIOPacketError) -> SocketIOPacket {
        switch type {
        case UInt8(ascii: "0"):
            return .connect(namespace: namespace, auth: try SocketIOAuth(json: json))
        case UInt8(ascii: "1"):
            return .disconnect(namespace: namespace)
        case UInt8(ascii: "2"):
            var scanner = JSONScanner(json)
            var elements: [Range<Int>] = []
            do {
                try scanner.scanArray { elements.append($0) }
                try scanner.expectEnd()
            } catch {
                throw .malformed("an event is a JSON array [\"name\", data]")
            }
            guard let first = elements.first else { throw .malformed("an event needs a name: [\"name\", data]") }
            var nameScanner = JSONScanner(Array(json[first]))
            guard nameScanner.peekValue() == UInt8(ascii: "\""), let name = try? nameScanner.readString() else {
                throw .malformed("an event's name must be a string")
            }
            let data = elements.count > 1 ? Array(json[elements[1]]) : nil
            return .event(namespace: namespace, ack: ack, name: name, data: data)
        case UInt8(ascii: "3"):
            guard let ack else { throw .malformed("an acknowledgement without an id") }
            return .ack(namespace: namespace, id: ack)
        case UInt8(ascii: "4"):
            throw .malformed("clients do not send CONNECT_ERROR packets")
        default:
            throw .malformed("unknown Socket.IO packet type \"\(Character(Unicode.Scalar(type)))\"")
        }
    }
}

/// What a client's CONNECT carries: `socket.io-client` sends its `auth` option merged
/// with `pid` and `offset` when it reconnects with a recoverable session.
struct SocketIOAuth: Equatable, Sendable {
    var token: String?
    var pid: String?
    var offset: String?

    init(token: String? = nil, pid: String? = nil, offset: String? = nil) {
        self.token = token
        self.pid = pid
        self.offset = offset
    }

    init(json: [UInt8]) throws(SocketIOPacketError) {
        guard !json.isEmpty else { return }
        var scanner = JSONScanner(json)
        do {
            try scanner.scanObject { (key, range) throws(JSONSyntaxError) in
                var value = JSONScanner(Array(json[range]))
                let text: String? = value.peekValue() == UInt8(ascii: "\"") ? try value.readString() : nil
                switch key {
                case "token": token = text
                case "pid": pid = text
                case "offset": offset = text
                default: break
                }
            }
            try scanner.expectEnd()
        } catch {
            throw .malformed("the CONNECT payload must be a JSON object (the client's auth option)")
        }
    }
}

/// Why a client's packet was refused.
enum SocketIOPacketError: Error, Equatable, Sendable {
    case malformed(String)
    case unsupported(String)

    var message: String {
        switch self {
        case .malformed(let why), .unsupported(let why): why
        }
    }
}

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
