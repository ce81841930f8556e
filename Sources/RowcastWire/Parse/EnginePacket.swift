import RowcastCore

/// An Engine.IO v4 packet as a client sends it: one WebSocket text message, or one of
/// the packets a polling `POST` body joins with the record separator (0x1E).
///
/// Engine.IO is the transport under Socket.IO: `0` open, `1` close, `2` ping, `3` pong,
/// `4` message (a Socket.IO packet), `5` upgrade, `6` noop. Only text packets: rowcast
/// neither sends nor accepts binary ones (`b…`).
package enum EnginePacket: Equatable, Sendable {
    case close
    case ping(String)
    case pong(String)
    case message(SocketIOPacket)
    case upgrade
    case noop

    /// Parses one packet; the error is the one line a client (and the log) gets.
    package static func parse(_ text: Substring.UTF8View) throws(SocketIOPacketError) -> EnginePacket {
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
    package static func split(payload: [UInt8]) -> [Substring.UTF8View] {
        String(decoding: payload, as: UTF8.self).utf8.split(separator: 0x1E, omittingEmptySubsequences: true)
            .map { Substring($0).utf8 }
    }
}

/// A Socket.IO v5-protocol packet (socket.io v3 and v4), inside an Engine.IO message:
/// `<type>[<namespace>,][<ack id>][JSON]`.
package enum SocketIOPacket: Equatable, Sendable {
    /// `0`: join a namespace, with the client's `auth` object (credentials and, on a
    /// reconnect, the recovery `pid` and `offset`).
    case connect(namespace: String, auth: SocketIOAuth)
    /// `1`: leave a namespace.
    case disconnect(namespace: String)
    /// `2`: an event, `[name, ...arguments]`, maybe with an acknowledgement id.
    case event(namespace: String, ack: Int?, name: String, data: [UInt8]?)
    /// `3`: the client acknowledging one of ours (rowcast asks for none).
    case ack(namespace: String, id: Int)

    package static func parse(_ bytes: [UInt8]) throws(SocketIOPacketError) -> SocketIOPacket {
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
package struct SocketIOAuth: Equatable, Sendable {
    package var token: String?
    package var pid: String?
    package var offset: String?

    package init(token: String? = nil, pid: String? = nil, offset: String? = nil) {
        self.token = token
        self.pid = pid
        self.offset = offset
    }

    package init(json: [UInt8]) throws(SocketIOPacketError) {
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
package enum SocketIOPacketError: Error, Equatable, Sendable {
    case malformed(String)
    case unsupported(String)

    package var message: String {
        switch self {
        case .malformed(let why), .unsupported(let why): why
        }
    }
}
