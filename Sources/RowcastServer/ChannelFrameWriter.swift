import NIOCore
import NIOWebSocket
import Synchronization

/// Writes one WebSocket client's queued frames straight to its channel, on the
/// channel's event loop: every frame queued so far in one go, then one flush. No task
/// runs per frame, and a burst of records costs the client one system call.
///
/// Bytes count as queued for the client (``Broadcaster/Registration/wrote(bytes:)``)
/// until the socket took them, so a peer that stops reading fills its byte budget and
/// is cut off however the frames are split between the queue and the channel.
final class ChannelFrameWriter: Sendable {
    private let channel: any Channel
    private let client: Broadcaster.Registration

    private struct State {
        var lastCursor: String?
        var finished = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    init(channel: any Channel, client: Broadcaster.Registration) {
        self.channel = channel
        self.client = client
    }

    /// Starts taking the client's frames.
    func start() {
        let watcher = WritabilityWatcher { [self] in drain() }
        channel.pipeline.addHandler(watcher, position: .first).whenComplete { _ in }
        client.queue.attach(on: channel.eventLoop) { [self] in drain() }
    }

    /// The cursor of the last `update` frame handed to the channel.
    var lastCursor: String? { state.withLock { $0.lastCursor } }

    /// Returns once the client's queue has ended and everything in it was handed to
    /// the channel (or dropped, for a client cut off), or when the task is cancelled.
    func finished() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state in
                    if state.finished || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }

    /// On the event loop: writes what is queued with one flush.
    ///
    /// While the channel holds more than it may (its peer reads slower than records
    /// come, or not at all), frames stay in the client's queue: a record then costs
    /// that client one append, not a write through the pipeline, until the channel
    /// drains (``WritabilityWatcher`` drains again) or the queue's limits cut it off.
    private func drain() {
        if channel.isActive, !channel.isWritable, client.endReason == nil { return }
        let (items, finished) = client.queue.take()
        // Cut off or expired: close now rather than write out the backlog. Shutting
        // down: write what is queued (the capture already counted it as delivered).
        let writing = client.endReason.map { $0 == .shuttingDown } ?? true
        var bytes = 0
        var pending: WebSocketFrame?
        var cursor: String?
        for item in items {
            bytes += item.bytes.readableBytes
            guard writing else { continue }
            if let pending { channel.write(pending, promise: nil) }
            pending = WebSocketFrame(fin: true, opcode: .text, data: item.bytes)
            if let itemCursor = item.cursor { cursor = itemCursor }
        }
        if let pending {
            let client = client
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.writeAndFlush(pending, promise: written)
            written.futureResult.whenComplete { _ in client.wrote(bytes: bytes) }
        } else if bytes > 0 {
            client.wrote(bytes: bytes)
        }
        guard cursor != nil || finished else { return }
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let cursor { state.lastCursor = cursor }
            guard finished else { return nil }
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}

/// Calls `drain` when the channel can take writes again, and when it closes (a writer
/// waiting for room must still finish).
private final class WritabilityWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let drain: () -> Void

    init(drain: @escaping () -> Void) {
        self.drain = drain
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drain() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        drain()
        context.fireChannelInactive()
    }
}
