import HTTPTypes
import Hummingbird
import NIOCore
import RowcastCore
import RowcastWire
import ServiceLifecycle

/// `GET /events`: the record stream as Server-Sent Events.
///
/// Query keys mirror `subscribe`: `tables` and `ops` (comma-separated), `filter`,
/// `since`, `last`; the `Last-Event-ID` header (sent by EventSource on reconnect)
/// resumes as `since` does. Each record is `id: CURSOR` and `data: RECORD`
/// (``Framing/serverSentEvents``, built once per record for every SSE client). A
/// comment line every `heartbeat` keeps proxies from closing a quiet stream.
enum ServerSentEvents {
    private static let framing = Framing.serverSentEvents

    static func response(
        for request: Request, access: ClientAccess, broadcaster: Broadcaster, capture: CaptureState, heartbeat: Duration,
        channel: any Channel, stalledClientGrace: Duration, addressPace: AddressPace, cors: HTTPFields = [:]
    ) throws -> Response {
        let query = request.uri.queryParameters
        var wanted = SubscriptionRequest()
        if let tables = query["tables"] { wanted.tables = .value(tables.split(scalar: ",").filter { !$0.isEmpty }) }
        if let ops = query["ops"] { wanted.ops = .value(ops.split(scalar: ",").filter { !$0.isEmpty }) }
        if let filter = query["filter"] { wanted.filter = .value([String(filter)]) }
        if let since = request.headers[.lastEventID] ?? query["since"].map(String.init) { wanted.since = .value([since]) }
        if let last = query["last"] { wanted.last = .value([String(last)]) }
        // EventSource reconnects with Last-Event-ID, which a finished snapshot's
        // `snapshot_end` set: it resumes from there instead of reading the rows again.
        if let snapshot = query["snapshot"], request.headers[.lastEventID] == nil { wanted.snapshot = .value([String(snapshot)]) }
        let message: ClientMessage
        do throws(ClientMessageError) {
            message = try wanted.resolve()
        } catch {
            return refusal(error)
        }
        // Checked before the stream starts (an error is a 400 or 403), but carried out only
        // once the body runs: a connection that died before its response head was written
        // never runs the body, and a client registered before it would never be let go.
        do throws(ClientMessageError) {
            try message.check(access: access, capture: capture)
        } catch {
            return refusal(error)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"] + cors,
            body: ResponseBody { writer in
                // What its `last` or `since` matches in the window is charged to its address:
                // the address's next request waits for it.
                let address = ClientAddress(channel.remoteAddress)
                let client = broadcaster.register(
                    framing: framing, closing: channel, grace: stalledClientGrace, account: ScanAccount(pace: addressPace, address: address)
                )
                defer { broadcaster.unregister(client.id) }
                // Carried out as a `subscribe` frame is; only a cursor older than the window,
                // or an address that owes too many scans, can fail now, and is told in the
                // stream (EventSource would retry an HTTP error).
                do throws(ClientMessageError) {
                    // A scan waits for its address's earlier scans and pays for itself ahead.
                    if message.scansWindow {
                        let records = broadcaster.recordsToScan(for: message)
                        client.prepay(try await addressPace.settle(address, reserving: records, on: channel.eventLoop))
                    }
                    defer { client.scanDone() }
                    _ = try message.apply(for: client.id, access: access, capture: capture, broadcaster: broadcaster)
                } catch {
                    try await writer.write(event(.error(code: error.code, message: error.message, reason: error.reason)))
                    try await writer.finish(nil)
                    return
                }
                try await writer.write(ByteBuffer(string: ": connected\n\n"))
                // Timers on the connection's event loop, not the cooperative pool's clock.
                let beat = TimeAmount(heartbeat)
                let heartbeats = channel.eventLoop.scheduleRepeatedTask(initialDelay: beat, delay: beat) { _ in
                    broadcaster.heartbeat(client.id)
                }
                defer { heartbeats.cancel() }
                let expiry = broadcaster.expire(client.id, when: access, on: channel.eventLoop)
                defer { expiry?.cancel() }
                // The server's graceful shutdown waits for open responses: end this stream.
                try await withGracefulShutdownHandler {
                    // Everything queued so far goes out in one write.
                    while let batch = await client.queue.next() {
                        if let reason = client.endReason, reason != .shuttingDown { break }
                        let bytes = batch.reduce(0) { $0 + $1.bytes.readableBytes }
                        defer { client.wrote(bytes: bytes) }
                        if !batch.isEmpty { try await writer.write(contentsOf: batch.map(\.bytes)) }
                    }
                } onGracefulShutdown: {
                    broadcaster.shutDown(client.id)
                }
                if client.endReason == .credentialExpired {
                    try await writer.write(event(Broadcaster.EndReason.expired))
                }
                try await writer.finish(nil)
            }
        )
    }

    /// A request refused before the stream starts: 403 for what the credential does
    /// not allow, 400 for the rest, with the error object as the body.
    private static func refusal(_ error: ClientMessageError) -> Response {
        Response(
            status: error.code == "forbidden" ? .forbidden : .badRequest,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: ServerMessage.errorObject(code: error.code, message: error.message, reason: error.reason)))
        )
    }

    private static func event(_ message: ServerMessage) -> ByteBuffer {
        framing.frame(message) ?? ByteBuffer()
    }
}
extension HTTPField.Name {
    // A valid token, so the initializer cannot fail.
    static let lastEventID = Self("Last-Event-ID") ?? .accept
}
