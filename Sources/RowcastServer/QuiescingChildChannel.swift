import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore

/// The HTTP/WebSocket child channel, plus one rule for graceful shutdown: a
/// connection that has not sent a byte yet is closed at once.
///
/// Browsers open spare connections ahead of need and leave them idle. Before a
/// request arrives, the WebSocket-upgrade pipeline has nothing that answers the
/// server's quiesce event, so one such connection held `serve` in its graceful
/// shutdown until the 30-second cap (found by the page test across a restart).
struct QuiescingChildChannel<Inner: ServerChildChannel>: ServerChildChannel {
    let inner: Inner

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Inner.Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(CloseIfSilentOnQuiesce(), position: .first)
        }.flatMap {
            inner.setup(channel: channel, logger: logger)
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

extension HTTPServerBuilder {
    /// HTTP/1.1 with WebSocket upgrade whose silent connections close on shutdown.
    static func rowcast<Router: HTTPResponderBuilder & _HB_SendableMetatype>(
        webSocketRouter: Router,
        configuration: WebSocketServerConfiguration
    ) -> HTTPServerBuilder where Router.Responder.Context: WebSocketRequestContext {
        let webSocketResponder = webSocketRouter.buildResponder()
        return HTTPServerBuilder { responder in
            QuiescingChildChannel(inner: HTTP1WebSocketUpgradeChannel(
                responder: responder, webSocketResponder: webSocketResponder, configuration: configuration
            ))
        }
    }
}
