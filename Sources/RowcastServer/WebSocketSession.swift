import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import RowcastCore
import RowcastWire
import ServiceLifecycle

/// One client's WebSocket conversation: `connected`, then client requests, and the
/// updates the broadcaster queues for it, written in order on the channel's event loop
/// (``ChannelFrameWriter``); once the broadcaster ends the client's queue, the writer
/// closes the connection with the reason.
struct WebSocketSession {
    let broadcaster: Broadcaster
    let mode: CaptureMode
    let access: ClientAccess
    let capture: CaptureState
    let maxFrameSize: Int
    let channel: any Channel
    let stalledClientGrace: Duration
    /// `--client-messages-per-second`: frames are read no faster (``MessagePace``).
    let messagesPerSecond: Int
    let logger: Logger

    private static let framing = Framing.webSocket

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        WebSocketFramePace.install(on: channel, messagesPerSecond: messagesPerSecond) { [broadcaster] in broadcaster.metrics?.messagesPaced.increment() }
        let client = broadcaster.register(framing: Self.framing, closing: channel, grace: stalledClientGrace)
        defer { broadcaster.unregister(client.id) }
        let expiry = broadcaster.expire(client.id, when: access, on: channel.eventLoop)
        defer { expiry?.cancel() }
        if let connected = Self.framing.frame(.connected(mode: mode)) {
            try await outbound.write(.custom(.init(fin: true, opcode: .text, data: connected)))
        }

        // The server's graceful shutdown waits for open connections: end this one's
        // queue at once, so the writer closes it with 1001.
        try await withGracefulShutdownHandler {
            try await serve(client, inbound: inbound, outbound: outbound)
        } onGracefulShutdown: {
            broadcaster.shutDown(client.id)
        }
    }

    /// The client leaving, or the writer closing, ends the session.
    private func serve(_ client: Broadcaster.Registration, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let writer = ChannelFrameWriter(channel: channel, client: client)
            writer.start()
            group.addTask {
                await writer.finished()
                if let reason = client.endReason {
                    if reason == .tooSlow {
                        logger.info("cutting off a client that fell behind (more than \(broadcaster.queueLimit) frames or \(broadcaster.queueByteLimit) bytes queued); last cursor \(writer.lastCursor ?? "none")")
                    }
                    let (code, text) = reason.closeFrame(lastCursor: writer.lastCursor)
                    try await outbound.close(code, reason: text)
                }
            }
            group.addTask {
                var pace = MessagePace(perSecond: messagesPerSecond)
                for try await message in inbound.messages(maxSize: maxFrameSize) {
                    // What its last replay or `last` matched in the window counts too.
                    pace.charge(examined: client.takeExamined())
                    await pace.take(on: channel.eventLoop) { broadcaster.metrics?.messagesPaced.increment() }
                    // Frames read ahead of their turn are dropped once the client left or
                    // the server ended it: none is answered after, none holds shutdown.
                    guard channel.isActive, client.endReason == nil else { break }
                    guard case .text(let text) = message else {
                        reply(.error(code: "bad_frame", message: "frames are JSON text, not binary"), to: client.id)
                        continue
                    }
                    handle(text, client: client.id)
                }
            }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    private func handle(_ text: String, client: UInt64) {
        do throws(ClientMessageError) {
            if case .pong(let data) = try ClientMessage.parse(text).apply(for: client, access: access, capture: capture, broadcaster: broadcaster) {
                reply(.pong(echoing: data), to: client)
            }
        } catch {
            reply(.error(code: error.code, message: error.message), to: client)
        }
    }

    /// Queued, so that it reaches the client in order with its updates.
    private func reply(_ message: ServerMessage, to client: UInt64) {
        if let bytes = Self.framing.frame(message) { broadcaster.send(bytes, to: client) }
    }
}
