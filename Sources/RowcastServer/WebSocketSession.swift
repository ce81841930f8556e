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
    /// Window scans are charged to the client's address too (``AddressPace``).
    let addressPace: AddressPace
    let logger: Logger

    private static let framing = Framing.webSocket

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        WebSocketFramePace.install(on: channel, messagesPerSecond: messagesPerSecond) { [broadcaster] in broadcaster.metrics?.messagesPaced.increment() }
        let client = broadcaster.register(
            framing: Self.framing, closing: channel, grace: stalledClientGrace, account: ScanAccount(pace: addressPace, address: address)
        )
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
                    // What its replays and `last` matched in the window since (a replay
                    // reads on as the client drains) counts too.
                    charge(client.takeExamined(), to: &pace)
                    await pace.take(on: channel.eventLoop, endingWith: addressPace) { broadcaster.metrics?.messagesPaced.increment() }
                    // Frames read ahead of their turn are dropped once the client left or
                    // the server ended it: none is answered after, none holds shutdown.
                    guard channel.isActive, client.endReason == nil else { break }
                    guard case .text(let text) = message else {
                        reply(.error(code: "bad_frame", message: "frames are JSON text, not binary"), to: client.id)
                        continue
                    }
                    await handle(text, client: client)
                    // What it matched in the window is charged to the connection at once.
                    charge(client.takeExamined(), to: &pace)
                }
            }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    private var address: ClientAddress { ClientAddress(channel.remoteAddress) }

    /// The connection's share: the address was charged as the scan went.
    private func charge(_ examined: Int, to pace: inout MessagePace) {
        pace.charge(examined: examined)
    }

    private func handle(_ text: String, client: Broadcaster.Registration) async {
        do throws(ClientMessageError) {
            let message = try ClientMessage.parse(text)
            // A scan of the window waits until its address's earlier scans are paid for,
            // and pays for itself ahead.
            if message.scansWindow {
                let records = broadcaster.recordsToScan(for: message)
                let paid = try await addressPace.settle(address, reserving: records, on: channel.eventLoop) { broadcaster.metrics?.messagesPaced.increment() }
                client.prepay(paid)
            }
            defer { client.scanDone() }
            if case .pong(let data) = try message.apply(for: client.id, access: access, capture: capture, broadcaster: broadcaster) {
                reply(.pong(echoing: data), to: client.id)
            }
        } catch {
            reply(.error(code: error.code, message: error.message, reason: error.reason), to: client.id)
        }
    }

    /// Queued, so that it reaches the client in order with its updates.
    private func reply(_ message: ServerMessage, to client: UInt64) {
        if let bytes = Self.framing.frame(message) { broadcaster.send(bytes, to: client) }
    }
}
