import Foundation
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import RowcastCore
import ServiceLifecycle

/// One client's WebSocket conversation: `connected`, then client requests, and the
/// updates the broadcaster queues for it, written in order on the channel's event loop
/// (``ChannelFrameWriter``); a task closes the connection with the reason once the
/// broadcaster ends the client's queue.
struct WebSocketSession {
    let broadcaster: Broadcaster
    let mode: CaptureMode
    let access: ClientAccess
    let capture: CaptureState
    let maxFrameSize: Int
    let channel: any Channel
    let stalledClientGrace: Duration
    let logger: Logger

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        let channel = channel, grace = stalledClientGrace
        let client = broadcaster.register { reason in
            // The writer closes with a reason at once unless the peer stopped reading;
            // then nothing can be written, and only closing the socket frees it.
            channel.closeUnlessClosed(after: reason == .shuttingDown ? grace * 2 : grace)
        }
        defer { broadcaster.unregister(client.id) }
        try await outbound.write(.custom(.init(fin: true, opcode: .text, data: ServerFrame.connected(mode: mode))))

        // The server's graceful shutdown waits for open connections: end this one's
        // queue at once, so the writer closes it with 1001.
        try await withGracefulShutdownHandler {
            try await serve(client, inbound: inbound, outbound: outbound)
        } onGracefulShutdown: {
            broadcaster.shutDown(client.id)
        }
    }

    private func serve(_ client: Broadcaster.Registration, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        try await withThrowingTaskGroup(of: Part.self) { group in
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
                return .writer
            }
            if let expires = access.expires {
                group.addTask {
                    try? await Task.sleep(for: .untilDate(expires))
                    if !Task.isCancelled { broadcaster.expire(client.id) }
                    return .expiry
                }
            }
            group.addTask {
                for try await message in inbound.messages(maxSize: maxFrameSize) {
                    guard case .text(let text) = message else {
                        broadcaster.send(ServerFrame.error(code: "bad_frame", message: "frames are JSON text, not binary"), to: client.id)
                        continue
                    }
                    handle(text, client: client.id)
                }
                return .reader
            }
            // The client leaving, or the writer closing, ends the session; the expiry
            // timer only ends the client's queue, and the writer then closes.
            while let finished = try await group.next(), finished == .expiry {}
            group.cancelAll()
        }
    }

    private enum Part { case writer, reader, expiry }

    private func handle(_ text: String, client: UInt64) {
        do throws(ClientMessageError) {
            if case .pong(let data) = try ClientMessage.parse(text).apply(for: client, access: access, capture: capture, broadcaster: broadcaster) {
                broadcaster.send(ServerFrame.pong(echoing: data), to: client)
            }
        } catch {
            broadcaster.send(ServerFrame.error(code: error.code, message: error.message), to: client)
        }
    }
}

extension Broadcaster.EndReason {
    /// The close code and reason a WebSocket client gets when the broadcaster ended
    /// it, with the cursor of the last update written to it.
    func closeFrame(lastCursor: String?) -> (WebSocketErrorCode, String) {
        let last = "last cursor \(lastCursor ?? "none")"
        switch self {
        case .tooSlow: return (.unknown(1013), closeReason("too slow; \(last)"))
        case .credentialExpired: return (.policyViolation, closeReason("token expired; reconnect with a fresh one; \(last)"))
        case .shuttingDown: return (.goingAway, closeReason("server shutting down; \(last)"))
        }
    }
}

extension ClientMessage {
    /// What a request did, for the session that must remember or answer it.
    enum Outcome {
        case subscribed(Subscription)
        case unsubscribed
        /// A `ping`: answer `pong` with this data.
        case pong(String)
    }

    /// Carries out a client's request, for every protocol alike: the subscription is
    /// checked against what is captured and narrowed to what the client may see.
    func apply(for client: UInt64, access: ClientAccess, capture: CaptureState, broadcaster: Broadcaster) throws(ClientMessageError) -> Outcome {
        switch self {
        case .readyForData:
            let allowed = try access.restrict(.everything)
            broadcaster.subscribe(client, to: allowed)
            return .subscribed(allowed)
        case .subscribe(let wanted, let since, let last):
            try wanted.checkCaptured(by: capture)
            let allowed = try access.restrict(wanted)
            if !broadcaster.subscribe(client, to: allowed, since: since, last: last) {
                throw .cursorExpired(since)
            }
            return .subscribed(allowed)
        case .unsubscribe:
            broadcaster.unsubscribe(client)
            return .unsubscribed
        case .ping(let data):
            return .pong(data)
        }
    }
}
