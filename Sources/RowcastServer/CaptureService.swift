import NIOCore
import RowcastCore
import ServiceLifecycle

/// Runs a capture source as a ServiceLifecycle service, so that start-up and
/// graceful shutdown of capture and server are one mechanism.
package struct CaptureService: Service {
    package let source: any CaptureSource
    package let sink: any RecordSink

    package init(source: any CaptureSource, sink: any RecordSink) {
        self.source = source
        self.sink = sink
    }

    package func run() async {
        let stop = StopSignal()
        await withGracefulShutdownHandler {
            await source.run(sink: sink, stop: stop)
        } onGracefulShutdown: {
            stop.stop()
        }
    }
}

/// Closes every client when graceful shutdown begins, so open WebSocket sessions
/// (1001) and SSE streams end instead of holding the server open; then waits, up to
/// `waitForClients`, for their connections to finish closing, and closes the rest.
struct ClientShutdownService: Service {
    let broadcaster: Broadcaster
    var waitForClients: Duration = .zero
    /// Where the wait's timer runs: an event loop's, not the cooperative pool's clock.
    let eventLoop: any EventLoop

    func run() async {
        try? await gracefulShutdown()
        broadcaster.closeAll()
        let deadline = NIODeadline.now() + TimeAmount(waitForClients)
        while broadcaster.connectionCount > 0, NIODeadline.now() < deadline {
            try? await eventLoop.scheduleTask(in: .milliseconds(10)) {}.futureResult.get()
        }
        // Whatever has not closed by now closes outright: the server's own graceful
        // shutdown waits for every connection.
        broadcaster.closeStragglers()
    }
}
