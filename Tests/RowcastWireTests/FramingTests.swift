import Foundation
import NIOCore
import RowcastCore
import RowcastTestSupport
import Testing

@testable import RowcastWire

/// A record encoded once and framed for each transport; the messages besides records.
@Suite struct FramingTests {
    static func record(row: String? = #"{"id":1,"note":"\"quoted\" and ,\"data\":"}"#, old: String? = nil) -> ChangeRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 2), source: .trigger, op: old == nil ? .insert : .update)
        record.schema = "public"
        record.table = "t"
        record.row = row.map { RawJSON(trusted: Array($0.utf8)) }
        record.old = old.map { RawJSON(trusted: Array($0.utf8)) }
        return record
    }

    static func json(_ buffer: ByteBuffer) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))
    }

    /// The buffer is `/ws`'s frame; the ranges point at exactly the record, its row and
    /// its old row, for small values and for those copied straight into the buffer.
    @Test(arguments: [16, ChangeRecord.largeValueBytes + 3])
    func encodedRecordKnowsWhereItsPartsLie(size: Int) throws {
        let row = #"{"id":1,"pad":""# + String(repeating: "x", count: size) + #""}"#
        let old = #"{"id":0}"#
        let full = Self.record(row: row, old: old)
        let encoded = EncodedRecord(full)
        #expect(Array(encoded.bytes.readableBytesView) == Array(#"{"event":"update","data":"#.utf8) + full.jsonBytes() + Array("}".utf8))
        #expect(Array(encoded.json.readableBytesView) == full.jsonBytes())
        #expect(encoded.value(.row) == full.row)
        #expect(encoded.value(.old) == full.old)
        #expect(encoded.record.row == nil && encoded.record.old == nil, "the window keeps a huge row once, in the buffer")
        #expect(encoded.cursorText == full.cursor.description)
        let filtered = Subscription(tables: nil, ops: nil, filter: try RowFilter(parsing: "id=eq.1"))
        #expect(encoded.matches(filtered))
        #expect(!encoded.matches(Subscription(tables: nil, ops: nil, filter: try RowFilter(parsing: "id=eq.2"))))
        let noRow = EncodedRecord(ChangeRecord(cursor: .trigger(stream: 1, sequence: 3), source: .trigger, op: .truncate))
        #expect(noRow.rowRange == nil && noRow.oldRange == nil && noRow.value(.row) == nil)
    }

    @Test func aRecordInEachFraming() throws {
        let full = Self.record()
        let encoded = EncodedRecord(full)
        let record = String(decoding: full.jsonBytes(), as: UTF8.self)
        let cursor = full.cursor.description
        #expect(String(buffer: Framing.webSocket.frame(encoded)) == #"{"event":"update","data":"# + record + "}")
        #expect(String(buffer: Framing.serverSentEvents.frame(encoded)) == "id: \(cursor)\ndata: \(record)\n\n")
        let packet = String(buffer: Framing.socketIO.frame(encoded))
        #expect(packet == #"42["update","# + record + #",""# + cursor + #""]"#)
        // A real JSON array: the name, the record, the offset socket.io-client keeps.
        let parsed = try JSONSerialization.jsonObject(with: Data(packet.dropFirst(2).utf8)) as? [Any]
        #expect(parsed?.count == 3)
        #expect((parsed?[1] as? [String: Any])?["table"] as? String == "t")
        // Built once per framing, then shared.
        var framed = FramedRecord(encoded)
        let first = framed.bytes(for: .socketIO), second = framed.bytes(for: .socketIO)
        first.withUnsafeReadableBytes { a in second.withUnsafeReadableBytes { b in #expect(a.baseAddress == b.baseAddress) } }
        encoded.bytes.withUnsafeReadableBytes { a in
            framed.bytes(for: .webSocket).withUnsafeReadableBytes { b in #expect(a.baseAddress == b.baseAddress, "/ws sends the encoded buffer itself") }
        }
    }

    @Test func messagesInEachFraming() throws {
        var subscribed = ServerMessage.subscribed(.everything, cursor: "r01.02")
        subscribed.offset = "r01.02"
        let cases: [(ServerMessage, ws: String, socketIO: String, sse: String?)] = [
            (.connected(mode: .replication), #"{"event":"connected","data":{"connected":true,"mode":"replication"}}"#,
             #"42["connected",{"connected":true,"mode":"replication"}]"#, nil),
            (.error(code: "bad_frame", message: "a \"quote\"\nand a line"),
             #"{"event":"error","data":{"code":"bad_frame","message":"a \"quote\"\nand a line"}}"#,
             #"42["error",{"code":"bad_frame","message":"a \"quote\"\nand a line"}]"#,
             "event: error\n" + #"data: {"code":"bad_frame","message":"a \"quote\"\nand a line"}"# + "\n\n"),
            (.pong(echoing: #"{"n":1}"#), #"{"event":"pong","data":{"n":1}}"#, #"42["pong",{"n":1}]"#, nil),
            (subscribed, #"{"event":"subscribed","data":{"cursor":"r01.02"}}"#, #"42["subscribed",{"cursor":"r01.02"},"r01.02"]"#, nil),
            // Where the stream goes on: Socket.IO's offset and SSE's id, as for a record.
            (.snapshotEnd(cursor: "r01.02", rows: 3), #"{"event":"snapshot_end","data":{"cursor":"r01.02","rows":3}}"#,
             #"42["snapshot_end",{"cursor":"r01.02","rows":3},"r01.02"]"#, "event: snapshot_end\nid: r01.02\n" + #"data: {"cursor":"r01.02","rows":3}"# + "\n\n"),
            (.snapshotEnd(cursor: nil, rows: 0), #"{"event":"snapshot_end","data":{"rows":0}}"#, #"42["snapshot_end",{"rows":0}]"#,
             "event: snapshot_end\n" + #"data: {"rows":0}"# + "\n\n"),
        ]
        for (message, ws, socketIO, sse) in cases {
            #expect(Framing.webSocket.frame(message).map { String(buffer: $0) } == ws)
            #expect(Framing.socketIO.frame(message).map { String(buffer: $0) } == socketIO)
            #expect(Framing.serverSentEvents.frame(message).map { String(buffer: $0) } == sse)
            _ = try Self.json(Framing.webSocket.frame(message) ?? ByteBuffer())
        }
        let filtered = Subscription(tables: ["public.b", "public.a"], ops: [.update, .insert], filter: try RowFilter(parsing: "id=gt.5"))
        #expect(Framing.webSocket.frame(.subscribed(filtered, cursor: nil)).map { String(buffer: $0) }
            == #"{"event":"subscribed","data":{"tables":["public.a","public.b"],"ops":["insert","update"],"filter":"id=gt.5"}}"#)
        #expect(Framing.serverSentEvents.heartbeat.map { String(buffer: $0) } == ": keepalive\n\n")
        #expect(Framing.webSocket.heartbeat == nil && Framing.socketIO.heartbeat == nil)
    }

    /// A snapshot row has no cursor: no SSE id, no Socket.IO offset, so a reconnect in
    /// the middle of a snapshot does not resume as if it had it all.
    @Test func aSnapshotRowInEachFraming() {
        let row = RawJSON(trusted: Array(#"{"id":1,"note":"a \"b\""}"#.utf8))
        let table = TableName(schema: "public", name: "items")
        let record = #"{"source":"trigger","op":"snapshot","schema":"public","table":"items","row":{"id":1,"note":"a \"b\""}}"#
        #expect(String(buffer: Framing.webSocket.frame(snapshotRow: row, of: table, source: .trigger)) == #"{"event":"update","data":"# + record + "}")
        #expect(String(buffer: Framing.serverSentEvents.frame(snapshotRow: row, of: table, source: .trigger)) == "data: " + record + "\n\n")
        #expect(String(buffer: Framing.socketIO.frame(snapshotRow: row, of: table, source: .trigger)) == #"42["update","# + record + "]")
    }
}
