import NIOCore
import NIOEmbedded
import NIOWebSocket
import RowcastCore
import RowcastWire
import Testing

@testable import RowcastServer

/// The WebSocket side of a session on an `EmbeddedChannel`: what is queued goes out as
/// text frames, a burst with one flush, the bytes counted until the socket took them,
/// and an ended client's backlog is dropped (or, shutting down, written out).
@Suite struct ChannelFrameWriterTests {
    static func record(_ n: UInt64) -> ChangeRecord {
        var record = ChangeRecord(cursor: .trigger(stream: 3, sequence: n), source: .trigger, op: .insert)
        record.schema = "public"
        record.table = "t"
        record.row = RawJSON(trusted: Array(#"{"id":\#(n)}"#.utf8))
        return record
    }

    static func texts(_ channel: EmbeddedChannel) throws -> [String] {
        var texts: [String] = []
        while let frame = try channel.readOutbound(as: WebSocketFrame.self) {
            #expect(frame.opcode == .text && frame.fin)
            texts.append(String(buffer: frame.unmaskedData))
        }
        return texts
    }

    @Test func aBurstIsWrittenInOrderAndItsBytesAreCountedUntilWritten() throws {
        let channel = EmbeddedChannel()
        let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 0)
        let client = broadcaster.register(framing: .webSocket)
        let writer = ChannelFrameWriter(channel: channel, client: client)
        writer.start()
        broadcaster.subscribe(client.id, to: .everything)
        for n in UInt64(1)...3 { broadcaster.deliver(Self.record(n)) }
        #expect(try Self.texts(channel).isEmpty, "nothing leaves before the loop runs the drain")
        channel.embeddedEventLoop.run()
        let texts = try Self.texts(channel)
        #expect(texts.count == 4)
        #expect(texts.first?.hasPrefix(#"{"event":"subscribed""#) == true)
        #expect(Array(texts.dropFirst()) == (UInt64(1)...3).map { String(buffer: EncodedRecord(Self.record($0)).bytes) })
        #expect(writer.lastCursor == Self.record(3).cursor.description)
        #expect(client.control.queued == 0, "written: nothing counted as queued")
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test func aClientCutOffDropsItsBacklogAndOneShuttingDownWritesIt() throws {
        for (reason, written) in [(Broadcaster.EndReason.credentialExpired, 0), (.shuttingDown, 2)] {
            let channel = EmbeddedChannel()
            let broadcaster = Broadcaster(queueLimit: 64, resumeWindow: 0)
            let client = broadcaster.register(framing: .webSocket)
            broadcaster.subscribe(client.id, to: .everything)
            broadcaster.deliver(Self.record(1))
            switch reason {
            case .credentialExpired: broadcaster.expire(client.id)
            default: broadcaster.shutDown(client.id)
            }
            let writer = ChannelFrameWriter(channel: channel, client: client)
            writer.start()
            channel.embeddedEventLoop.run()
            #expect(try Self.texts(channel).count == written, "\(reason)")
            #expect(client.endReason == reason)
            _ = try channel.finish(acceptAlreadyClosed: true)
        }
    }
}
