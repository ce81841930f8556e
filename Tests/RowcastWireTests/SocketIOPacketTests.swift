import Foundation
import NIOCore
import RowcastCore
import Testing

@testable import RowcastWire

/// Engine.IO and Socket.IO packets as the clients send them (the byte forms are those
/// socket.io-client 4.8.1 and python-socketio 5 put on the wire), and the Engine.IO
/// and Socket.IO packets rowcast sends of its own.
@Suite struct SocketIOPacketTests {
    func parse(_ text: String) throws(SocketIOPacketError) -> EnginePacket {
        try EnginePacket.parse(text[...].utf8)
    }

    @Test func enginePackets() throws {
        #expect(try parse("1") == .close)
        #expect(try parse("2probe") == .ping("probe"))
        #expect(try parse("3") == .pong(""))
        #expect(try parse("5") == .upgrade)
        #expect(try parse("6") == .noop)
        #expect(throws: SocketIOPacketError.malformed("an empty Engine.IO packet")) { try parse("") }
        #expect(throws: SocketIOPacketError.malformed("unknown Engine.IO packet type \"9\"")) { try parse("9") }
        #expect(throws: SocketIOPacketError.unsupported("binary Engine.IO packets are not supported; rowcast speaks JSON text")) { try parse("bAQID") }
        #expect(EnginePacket.split(payload: Array("40\u{1e}42[\"ready for data\",{}]\u{1e}3".utf8)).map { String(Substring($0)) } == ["40", #"42["ready for data",{}]"#, "3"])
    }

    @Test func connectPackets() throws {
        #expect(try parse("40") == .message(.connect(namespace: "/", auth: SocketIOAuth())))
        #expect(try parse(#"40{"token":"t"}"#) == .message(.connect(namespace: "/", auth: SocketIOAuth(token: "t"))))
        // A reconnect: the client's auth merged with its pid and last offset.
        #expect(
            try parse(#"40{"pid":"p1","offset":"r0000000001505810.0000000000000002","token":"t","other":[1]}"#)
                == .message(.connect(namespace: "/", auth: SocketIOAuth(token: "t", pid: "p1", offset: "r0000000001505810.0000000000000002")))
        )
        #expect(try parse("40/admin,") == .message(.connect(namespace: "/admin", auth: SocketIOAuth())))
        #expect(try parse("40/admin") == .message(.connect(namespace: "/admin", auth: SocketIOAuth())))
        #expect(try parse(#"40{"token":5}"#) == .message(.connect(namespace: "/", auth: SocketIOAuth())))
        #expect(throws: SocketIOPacketError.malformed("the CONNECT payload must be a JSON object (the client's auth option)")) {
            try parse(#"40{"token":"#)
        }
        #expect(try parse("41") == .message(.disconnect(namespace: "/")))
    }

    @Test func eventPackets() throws {
        #expect(try parse(#"42["ready for data",{}]"#) == .message(.event(namespace: "/", ack: nil, name: "ready for data", data: Array("{}".utf8))))
        #expect(try parse(#"42["unsubscribe"]"#) == .message(.event(namespace: "/", ack: nil, name: "unsubscribe", data: nil)))
        #expect(
            try parse(#"4217["subscribe",{"tables":["orders"]},"extra"]"#)
                == .message(.event(namespace: "/", ack: 17, name: "subscribe", data: Array(#"{"tables":["orders"]}"#.utf8)))
        )
        #expect(try parse(#"42/admin,3["x"]"#) == .message(.event(namespace: "/admin", ack: 3, name: "x", data: nil)))
        #expect(try parse("437[]") == .message(.ack(namespace: "/", id: 7)))
        let wrong: [(String, SocketIOPacketError)] = [
            ("42", .malformed("an event is a JSON array [\"name\", data]")),
            ("42{}", .malformed("an event is a JSON array [\"name\", data]")),
            ("42[]", .malformed("an event needs a name: [\"name\", data]")),
            ("42[1,{}]", .malformed("an event's name must be a string")),
            (#"42["a"] x"#, .malformed("an event is a JSON array [\"name\", data]")),
            ("4299999999999999999999[\"a\"]", .malformed("an acknowledgement id out of range")),
            (#"451-["a",{"_placeholder":true,"num":0}]"#, .unsupported("binary Socket.IO packets are not supported; rowcast speaks JSON text")),
            ("44{}", .malformed("clients do not send CONNECT_ERROR packets")),
            ("4", .malformed("an empty Socket.IO packet")),
            ("47", .malformed("unknown Socket.IO packet type \"7\"")),
        ]
        for (text, error) in wrong {
            #expect(throws: error, "\(text)") { try parse(text) }
        }
    }

    @Test func serverPackets() {
        #expect(
            String(buffer: SocketIOFrame.open(sid: "s", upgrades: true, pingInterval: .seconds(25), pingTimeout: .milliseconds(20500), maxPayload: 65536))
                == #"0{"sid":"s","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20500,"maxPayload":65536}"#
        )
        #expect(String(buffer: SocketIOFrame.connected(sid: "a", pid: "b")) == #"40{"sid":"a","pid":"b"}"#)
        #expect(String(buffer: SocketIOFrame.connectError(namespace: "/", message: "no \"x\"")) == #"44{"message":"no \"x\""}"#)
        #expect(String(buffer: SocketIOFrame.connectError(namespace: "/admin", message: "m")) == #"44/admin,{"message":"m"}"#)
        #expect(String(buffer: SocketIOFrame.ack(4, error: nil)) == "434[]")
        #expect(String(buffer: SocketIOFrame.ack(4, error: .unknownEvent("x"))).hasPrefix(#"434[{"code":"unknown_event","message":"#))
        #expect(SocketIOFrame.randomID().count == 22)
        #expect(SocketIOFrame.randomID() != SocketIOFrame.randomID())
    }
}
