import HTTPTypes
import Hummingbird
import NIOCore
import RowcastCore

/// `GET /events`: the record stream as Server-Sent Events.
///
/// Query keys mirror `subscribe`: `tables` and `ops` (comma-separated), `filter`,
/// `since`; the `Last-Event-ID` header (sent by EventSource on reconnect) resumes as
/// `since` does. Each record is `id: CURSOR` and `data: RECORD`, sliced from the same
/// bytes the WebSocket clients get. A comment line every `heartbeatSeconds` keeps
/// proxies from closing a quiet stream.
enum ServerSentEvents {
    static func response(for request: Request, broadcaster: Broadcaster, heartbeatSeconds: Double) throws -> Response {
        let query = request.uri.queryParameters
        var data: [String: Any] = [:]
        if let tables = query["tables"] { data["tables"] = tables.split(separator: ",").map(String.init) }
        if let ops = query["ops"] { data["ops"] = ops.split(separator: ",").map(String.init) }
        if let filter = query["filter"] { data["filter"] = String(filter) }
        if let since = request.headers[.lastEventID] ?? query["since"].map(String.init) { data["since"] = since }
        let subscription: Subscription
        let since: Cursor?
        do {
            guard case .subscribe(let parsed, let cursor) = try ClientMessage.subscribe(data) else {
                throw HTTPError(.badRequest)
            }
            subscription = parsed
            since = cursor
        } catch let error as ClientMessageError {
            return Response(
                status: .badRequest,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"code":"\#(error.code)","message":\#(quoted(error.message))}"#))
            )
        }
        let client = broadcaster.register()
        let subscribed = broadcaster.subscribe(client.id, to: subscription, since: since)
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: ResponseBody { writer in
                defer { broadcaster.unregister(client.id) }
                guard subscribed else {
                    try await writer.write(ByteBuffer(string: "event: error\ndata: {\"code\":\"cursor_expired\",\"message\":\"records after that cursor are no longer kept; reconnect without it\"}\n\n"))
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
                for await item in client.stream {
                    if client.isCutOff { break }
                    switch item {
                    case .frame(let frame, let cursor?):
                        guard let record = ServerFrame.record(inUpdate: frame) else { continue }
                        try await writer.write(contentsOf: [ByteBuffer(string: "id: \(cursor)\ndata: "), record, ByteBuffer(string: "\n\n")])
                    case .frame:
                        continue  // subscribed and errors belong to the WebSocket protocol
                    case .heartbeat:
                        try await writer.write(ByteBuffer(string: ": keepalive\n\n"))
                    }
                }
                try await writer.finish(nil)
            }
        )
    }

    private static func quoted(_ text: String) -> String {
        var writer = JSONWriter()
        writer.appendString(text)
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}

extension HTTPField.Name {
    // A valid token, so the initializer cannot fail.
    static let lastEventID = Self("Last-Event-ID") ?? .accept
}
