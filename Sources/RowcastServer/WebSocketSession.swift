import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import RowcastCore

/// One client's WebSocket conversation: `connected`, then client requests, and the
/// updates the broadcaster queues for it, written in order by one writer task.
struct WebSocketSession {
    let broadcaster: Broadcaster
    let mode: CaptureMode
    let maxFrameSize: Int
    let logger: Logger

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        let client = broadcaster.register()
        defer { broadcaster.unregister(client.id) }
        try await outbound.write(.custom(.init(fin: true, opcode: .text, data: ServerFrame.connected(mode: mode))))

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var lastCursor: String?
                for await item in client.stream {
                    // Cut off: close now rather than write out the backlog it could not take.
                    if client.isCutOff { break }
                    switch item {
                    case .frame(let frame, let cursor):
                        try await outbound.write(.custom(.init(fin: true, opcode: .text, data: frame)))
                        if let cursor { lastCursor = cursor }
                    case .heartbeat:
                        break
                    }
                }
                if client.isCutOff {
                    logger.info("cutting off a client that fell \(broadcaster.queueLimit) frames behind")
                    try await outbound.close(.unknown(1013), reason: "too slow; last cursor \(lastCursor ?? "none")")
                } else if broadcaster.isClosing {
                    try await outbound.close(.goingAway, reason: "server shutting down; last cursor \(lastCursor ?? "none")")
                }
            }
            group.addTask {
                for try await message in inbound.messages(maxSize: maxFrameSize) {
                    guard case .text(let text) = message else {
                        broadcaster.send(ServerFrame.error(code: "bad_frame", message: "frames are JSON text, not binary"), to: client.id)
                        continue
                    }
                    do throws(ClientMessageError) {
                        switch try ClientMessage.parse(text) {
                        case .readyForData:
                            broadcaster.subscribe(client.id, to: .everything)
                        case .subscribe(let wanted, let since):
                            if !broadcaster.subscribe(client.id, to: wanted, since: since) {
                                broadcaster.send(
                                    ServerFrame.error(
                                        code: "cursor_expired",
                                        message: "records after \(since?.description ?? "") are no longer kept; subscribe without since and reload"
                                    ),
                                    to: client.id
                                )
                            }
                        case .unsubscribe:
                            broadcaster.unsubscribe(client.id)
                        }
                    } catch {
                        broadcaster.send(ServerFrame.error(code: error.code, message: error.message), to: client.id)
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}
