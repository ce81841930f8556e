import HTTPTypes
import Hummingbird
import NIOCore
import RowcastCore
import ServiceLifecycle

/// `GET /events`: the record stream as Server-Sent Events.
///
/// Query keys mirror `subscribe`: `tables` and `ops` (comma-separated), `filter`,
/// `since`; the `Last-Event-ID` header (sent by EventSource on reconnect) resumes as
/// `since` does. Each record is `id: CURSOR` and `data: RECORD`, sliced from the same
/// bytes the WebSocket clients get. A comment line every `heartbeatSeconds` keeps
/// proxies from closing a quiet stream.
enum ServerSentEvents {
    static func response(
        for request: Request, access: ClientAccess, broadcaster: Broadcaster, capture: CaptureState, heartbeatSeconds: Double,
        channel: any Channel, stalledClientGrace: Duration
    ) throws -> Response {
        let query = request.uri.queryParameters
        var wanted = SubscriptionRequest()
        if let tables = query["tables"] { wanted.tables = .value(tables.split(separator: ",").map(String.init)) }
        if let ops = query["ops"] { wanted.ops = .value(ops.split(separator: ",").map(String.init)) }
        if let filter = query["filter"] { wanted.filter = .value([String(filter)]) }
        if let since = request.headers[.lastEventID] ?? query["since"].map(String.init) { wanted.since = .value([since]) }
        if let last = query["last"] { wanted.last = .value([String(last)]) }
        let subscription: Subscription
        let since: Cursor?
        let last: Int?
        do {
            guard case .subscribe(let parsed, let cursor, let count) = try wanted.resolve() else {
                throw HTTPError(.badRequest)
            }
            try parsed.checkCaptured(by: capture)
            subscription = try access.restrict(parsed)
            since = cursor
            last = count
        } catch let error as ClientMessageError {
            return Response(
                status: error.code == "forbidden" ? .forbidden : .badRequest,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: ServerFrame.errorObject(code: error.code, message: error.message)))
            )
        }
        let client = broadcaster.register { reason in
            channel.closeUnlessClosed(after: reason == .shuttingDown ? stalledClientGrace * 2 : stalledClientGrace)
        }
        let subscribed = broadcaster.subscribe(client.id, to: subscription, since: since, last: last)
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: ResponseBody { writer in
                defer { broadcaster.unregister(client.id) }
                guard subscribed else {
                    let error = ClientMessageError.cursorExpired(since)
                    try await writer.write(errorEvent(code: error.code, message: error.message))
                    try await writer.finish(nil)
                    return
                }
                try await writer.write(ByteBuffer(string: ": connected\n\n"))
                let heartbeat = Task {
                    while !Task.isCancelled {
                        try await Task.sleep(for: .seconds(heartbeatSeconds))
                        broadcaster.heartbeat(client.id)
                    }
                }
                defer { heartbeat.cancel() }
                let expiry = access.expires.map { expires in
                    Task {
                        try await Task.sleep(for: .untilDate(expires))
                        broadcaster.expire(client.id)
                    }
                }
                defer { expiry?.cancel() }
                // The server's graceful shutdown waits for open responses: end this stream.
                try await withGracefulShutdownHandler {
                    // Everything queued so far goes out in one write.
                    while let batch = await client.queue.next() {
                        if let reason = client.endReason, reason != .shuttingDown { break }
                        var parts: [ByteBuffer] = []
                        var bytes = 0
                        for item in batch {
                            switch item {
                            case .frame(let frame, let cursor?):
                                bytes += frame.readableBytes
                                guard let record = ServerFrame.record(inUpdate: frame) else { continue }
                                parts += [ByteBuffer(string: "id: \(cursor)\ndata: "), record, ByteBuffer(string: "\n\n")]
                            case .frame(let frame, nil):
                                bytes += frame.readableBytes  // subscribed and errors belong to the WebSocket protocol
                            case .heartbeat:
                                parts.append(ByteBuffer(string: ": keepalive\n\n"))
                            }
                        }
                        defer { client.wrote(bytes: bytes) }
                        if !parts.isEmpty { try await writer.write(contentsOf: parts) }
                    }
                } onGracefulShutdown: {
                    broadcaster.shutDown(client.id)
                }
                if client.endReason == .credentialExpired {
                    try await writer.write(errorEvent(code: "unauthorized", message: "token expired; reconnect with a fresh one"))
                }
                try await writer.finish(nil)
            }
        )
    }

    private static func errorEvent(code: String, message: String) -> ByteBuffer {
        var buffer = ByteBuffer(string: "event: error\ndata: ")
        buffer.writeBytes(ServerFrame.errorObject(code: code, message: message))
        buffer.writeString("\n\n")
        return buffer
    }
}

extension HTTPField.Name {
    // A valid token, so the initializer cannot fail.
    static let lastEventID = Self("Last-Event-ID") ?? .accept
}
