import Hummingbird
import HummingbirdWebSocket
import NIOCore
import RowcastCore

/// The request context of every route: Hummingbird's core context, the WebSocket
/// upgrade's handler reference, and the connection's channel, which a session closes
/// outright when its client stopped reading and no close frame can be written.
package struct RowcastRequestContext: RequestContext, WebSocketRequestContext {
    package var coreContext: CoreRequestContextStorage
    package let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel
    /// What the request's credentials allow; set by ``AuthMiddleware`` on the routes it guards.
    var access: ClientAccess = .everything

    package init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}

extension Channel {
    /// Closes the connection `after` from now unless it closed by then: the last resort
    /// for a client whose peer never reads again (a close frame would wait for ever).
    func closeUnlessClosed(after delay: Duration) {
        eventLoop.scheduleTask(in: TimeAmount(delay)) { [self] in
            close(promise: nil)
        }
    }
}
