import Hummingbird
import NIOCore
import Synchronization

/// A request's body must be whole within `timeout` of its head, and no larger than
/// `maxSize`: the body is read here, before the route runs, into one buffer.
///
/// The HTTP layer's idle timer restarts on every part of a body, and after a response
/// the rest of an unread body is drained part by part: a client that sent a body a byte
/// at a time held its connection (and graceful shutdown) for as long as it liked. No
/// route of rowcast takes more than a Socket.IO payload (`maxSize`), so reading bodies
/// whole costs nothing that matters. A body past `maxSize` is 413; past the deadline the
/// connection is closed. Socket.IO's `POST` reads its own (a payload too large also
/// ends its session), with the same deadline.
struct RequestBodyDeadline: RouterMiddleware {
    typealias Context = RowcastRequestContext

    let timeout: Duration
    let maxSize: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.hasBody, !(request.method == .post && request.uri.path.hasPrefix("/socket.io")) else {
            return try await next(request, context)
        }
        var request = request
        do {
            request.body = RequestBody(buffer: try await request.collectBody(upTo: maxSize, within: timeout, channel: context.channel))
        } catch {
            throw HTTPError(.contentTooLarge, message: "a request body of at most \(maxSize) bytes")
        }
        return try await next(request, context)
    }
}

extension Request {
    /// Whether a body follows the head (a length above 0, or a chunked one).
    var hasBody: Bool {
        if let length = headers[.contentLength] { return length != "0" }
        return headers[.transferEncoding] != nil
    }

    /// The whole body, at most `maxSize` bytes (an error past them, at once when the
    /// length says so); `channel` is closed when it is not whole within `timeout`, and
    /// also after a refusal: the HTTP layer drains an unread body part by part after
    /// the answer, and a body sent a byte at a time held the connection that way.
    func collectBody(upTo maxSize: Int, within timeout: Duration, channel: any Channel) async throws -> ByteBuffer {
        let done = Done()
        // Let fire, never cancelled: cancelling a NIO timer searches the loop's whole heap.
        channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            if !done.flag.load(ordering: .acquiring) { channel.close(promise: nil) }
        }
        if let length = headers[.contentLength].flatMap({ Int($0) }), length > maxSize { throw BodyTooLarge() }
        let body = try await body.collect(upTo: maxSize)
        done.flag.store(true, ordering: .releasing)
        return body
    }

    struct BodyTooLarge: Error {}

    private final class Done: Sendable {
        let flag = Atomic<Bool>(false)
    }
}
