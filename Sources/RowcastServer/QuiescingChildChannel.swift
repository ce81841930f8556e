import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import RowcastWire

/// The HTTP/WebSocket child channel, plus the rules every connection is held to before
/// HTTP sees it: the connection limits (``ConnectionLimits``), a deadline for the first
/// request head, and, for graceful shutdown, a connection that has not sent a byte yet
/// is closed at once.
///
/// Browsers open spare connections ahead of need and leave them idle. Before a
/// request arrives, the WebSocket-upgrade pipeline has nothing that answers the
/// server's quiesce event, so one such connection held `serve` in its graceful
/// shutdown until the 30-second cap (found by the page test across a restart).
struct QuiescingChildChannel<Inner: ServerChildChannel>: ServerChildChannel {
    let inner: Inner
    /// How long a new connection may take to send its first whole request head.
    let headTimeout: Duration
    let limits: ConnectionLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Inner.Value> {
        channel.eventLoop.makeCompletedFuture {
            // A refused connection still gets the HTTP handlers (the server expects its
            // value), but this first handler keeps every byte of it from them.
            switch limits.admit(channel) {
            case .admitted: break
            case .refused(let reason):
                try channel.pipeline.syncOperations.addHandler(RefuseConnection(reason: reason), position: .first)
                return
            case .dropped:
                try channel.pipeline.syncOperations.addHandler(RefuseConnection(reason: nil), position: .first)
                return
            }
            try channel.pipeline.syncOperations.addHandler(CloseIfSilentOnQuiesce(), position: .first)
            try channel.pipeline.syncOperations.addHandler(WriteStallDeadline(timeout: headTimeout), position: .first)
            try channel.pipeline.syncOperations.addHandler(UpgradeReadHold(), position: .first)
            try channel.pipeline.syncOperations.addHandler(FirstRequestHeadDeadline(timeout: headTimeout), position: .first)
        }.flatMap {
            inner.setup(channel: channel, logger: logger)
        }.flatMapThrowing { value in
            // Right behind the HTTP parser, which nothing else answers when it refuses a request.
            let pipeline = channel.pipeline.syncOperations
            if let parser = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self) {
                try pipeline.addHandler(AnswerUnparsableRequest(drainFor: headTimeout), position: .after(parser))
            }
            return value
        }
    }

    func handle(value: Inner.Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Closes the connection on quiesce if nothing was ever read from it; otherwise
/// passes the event on to the HTTP or WebSocket handlers, which finish what is in
/// progress.
final class CloseIfSilentOnQuiesce: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private var heardFrom = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heardFrom = true
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, !heardFrom {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Closes a connection that could not write for `timeout` (`--idle-timeout`): its peer
/// stopped reading, and the kernel's buffers (megabytes a connection) and the channel's
/// are full. Without it, pipelined requests whose answers were never read held a
/// connection, and those buffers, for ever: the HTTP layer's idle timer only runs while
/// it reads. A WebSocket or SSE client that stops reading is cut off by its queue's
/// limits first; this closes its connection too once nothing moved for that long.
final class WriteStallDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let timeout: Duration
    /// Bumped whenever the channel becomes writable: a deadline armed before does nothing.
    private var generation = 0

    init(timeout: Duration) { self.timeout = timeout }

    /// The deadline is never cancelled, only let fire (see ``FirstRequestHeadDeadline``).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        generation += 1
        if !context.channel.isWritable {
            let armed = generation
            let target = NIOLoopBound(Target(handler: self, context: context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
                guard let handler = target.value.handler, handler.generation == armed, let context = target.value.context,
                    !context.channel.isWritable
                else { return }
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    private struct Target {
        weak var handler: WriteStallDeadline?
        weak var context: ChannelHandlerContext?
    }
}

/// Closes a new connection whose first request head is not whole within `timeout`: a
/// client that sends its headers a byte at a time (slowloris) holds a connection, and
/// once a byte arrived, keeps graceful shutdown waiting. Later requests on the
/// connection are held to the same time by the HTTP layer's idle timeout, which starts
/// when a response ends. Sees the bytes before the HTTP decoder; removes itself once
/// the head is in.
final class FirstRequestHeadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let timeout: Duration
    /// Set once the head is in: the deadline, when it fires, does nothing.
    private var headArrived = false
    private var scanner = RequestHeadScanner()

    init(timeout: Duration) { self.timeout = timeout }

    /// The deadline is never cancelled, only let fire: cancelling a NIO timer searches
    /// the loop's whole timer heap, and a burst of 1,000 connections beside 10,000 idle
    /// ones took 1.2 s instead of 0.2 s. It holds the handler and its context weakly,
    /// so a connection that closed or got its head is not kept alive by it.
    func handlerAdded(context: ChannelHandlerContext) {
        let target = NIOLoopBound(Target(handler: self, context: context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            guard let handler = target.value.handler, !handler.headArrived, let context = target.value.context else { return }
            context.close(promise: nil)
        }
    }

    private struct Target {
        weak var handler: FirstRequestHeadDeadline?
        weak var context: ChannelHandlerContext?
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let found = scanner.scan(unwrapInboundIn(data).readableBytesView) != nil
        context.fireChannelRead(data)
        if found {
            headArrived = true
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// Answers a request the HTTP parser refuses (a URL or headers past its 80 KB, bytes
/// that are not HTTP) with 400 and closes the connection. Without it the WebSocket-
/// upgrade pipeline answered nothing and held the connection for as long as the
/// client kept it. Passes everything else on, also after an upgrade removed the parser.
final class AnswerUnparsableRequest: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private var answered = false
    /// How long what the client still sends is read and dropped after the answer.
    private let drainFor: Duration

    init(drainFor: Duration) { self.drainFor = drainFor }

    /// Once answered, the client's end of the stream closes the connection.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if answered, case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !answered else { return }
        answered = true
        let head = HTTPResponseHead(version: .http1_1, status: .badRequest, headers: ["connection": "close", "content-length": "0"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        // Our side ends after the answer; what the client still sends is read and
        // dropped until it closes, `--idle-timeout` at most (closing with its request
        // unread would reset the connection, and the client might never read the answer).
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [drainFor] _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: TimeAmount(drainFor)) { channel.close(promise: nil) }
        }
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with WebSocket upgrade whose silent connections close on shutdown, and
    /// whose connections close once they went `idleTimeout` without a whole request
    /// head: on connect (a client that sends its headers a byte at a time, slowloris)
    /// and between requests. A request being answered (a long-poll, an SSE stream) and
    /// an upgraded WebSocket are not idle.
    static func rowcast<Router: HTTPResponderBuilder & _HB_SendableMetatype>(
        webSocketRouter: Router,
        configuration: WebSocketServerConfiguration,
        idleTimeout: Duration,
        limits: ConnectionLimits
    ) -> HTTPServerBuilder where Router.Responder.Context: WebSocketRequestContext {
        let webSocketResponder = webSocketRouter.buildResponder()
        return HTTPServerBuilder { responder in
            QuiescingChildChannel(
                inner: HTTP1WebSocketUpgradeChannel(
                    responder: responder, webSocketResponder: webSocketResponder,
                    configuration: .init(http1: .init(idleTimeout: TimeAmount(idleTimeout)), ws: configuration)
                ),
                headTimeout: idleTimeout,
                limits: limits
            )
        }
    }
}

/// Reads nothing past a request that asks for an upgrade until an answer is written.
/// While an upgrade is decided (the route, its checks, a request's turn of its
/// address), the HTTP layer keeps whatever arrives after the head in memory, and a
/// client streaming WebSocket frames before the `101` made serve hold gigabytes; held
/// reads leave them in the kernel, whose window pushes back on the client. The first
/// write after the head (the `101`, or a refusal) lets reading go on: after a `101`
/// this handler leaves, and the WebSocket's own pace (``WebSocketFramePace``) takes over.
final class UpgradeReadHold: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var scanner = UpgradeRequestScanner()
    private var holding = false
    private var readWaiting = false
    /// An upgrade request was answered: whether it went through is known at the next read.
    private var answered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if answered {
            answered = false
            // Upgraded: nothing here is HTTP any more (a WebSocket payload is not scanned).
            if (try? context.pipeline.syncOperations.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)) == nil {
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
        }
        if !holding, scanner.scan(unwrapInboundIn(data).readableBytesView) != nil { holding = true }
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        guard !holding else {
            readWaiting = true
            return
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        guard holding else { return }
        // Any answer ends the hold.
        holding = false
        answered = true
        if readWaiting {
            readWaiting = false
            context.read()
        }
    }
}
