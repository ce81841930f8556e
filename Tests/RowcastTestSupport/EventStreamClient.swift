import Foundation

/// A minimal Server-Sent Events reader over a plain socket, for tests: sends a GET
/// and collects `id:`/`data:` events. Blocking; run it off the cooperative pool. Every
/// read has a deadline (60 s unless said otherwise); one that passes throws, naming
/// the request, what was awaited and what had arrived.
package final class EventStreamClient: @unchecked Sendable {
    private let descriptor: Int32
    private var pending = Data()
    private let request: String
    private var receivedBytes = 0

    package struct ReadFailed: Error, CustomStringConvertible {
        package let description: String
    }

    package struct Event: Equatable, Sendable {
        package var id: String?
        package var event: String?
        package var data: String

        package init(id: String?, event: String?, data: String) {
            self.id = id
            self.event = event
            self.data = data
        }
    }

    package init(port: Int, path: String, headers: [String: String] = [:]) throws {
        self.request = "GET \(path.prefix(80)) on port \(port)"
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ReadFailed(description: "\(request): cannot connect: \(String(cString: strerror(errno)))") }
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        _ = request.withCString { send(descriptor, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    }

    deinit { shutdown(descriptor, Int32(SHUT_RDWR)); close(descriptor) }

    /// Closes the connection now, as a browser closing the page would.
    package func disconnect() { shutdown(descriptor, Int32(SHUT_RDWR)) }

    /// The status line and headers; what arrived when the server closed first.
    package func readHead(seconds: Double = 60) throws -> String {
        let deadline = Self.deadline(seconds)
        while true {
            if let end = pending.range(of: Data("\r\n\r\n".utf8)) {
                let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
                pending.removeSubrange(..<end.upperBound)
                return head
            }
            guard try fill(until: deadline, awaiting: "a response head") else { return String(decoding: pending, as: UTF8.self) }
        }
    }

    /// The status code of the response ("200"); throws naming what arrived instead.
    package func status(seconds: Double = 60) throws -> String {
        let head = try readHead(seconds: seconds)
        guard head.hasPrefix("HTTP/1.1 "), head.count >= 12 else {
            throw ReadFailed(description: "\(request): no status line, the connection closed after \(receivedBytes) bytes: \(head.prefix(200))")
        }
        return String(head.prefix(12).dropFirst(9))
    }

    /// A whole response with a `Content-Length` body: the head, then the body.
    package func response(seconds: Double = 60) throws -> String {
        let deadline = Self.deadline(seconds)
        let head = try readHead(seconds: seconds)
        let length = head.split(separator: "\r\n").lazy
            .compactMap { line -> Int? in
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                return Int(parts[1].trimmingCharacters(in: .whitespaces))
            }
            .first ?? 0
        while pending.count < length, try fill(until: deadline, awaiting: "a body of \(length) bytes") {}
        return head + "\r\n\r\n" + String(decoding: pending.prefix(length), as: UTF8.self)
    }

    /// One unmasked WebSocket frame from the server, after a `101` head: its opcode and
    /// payload (short frames only: payloads under 126 bytes, as close frames are).
    package func webSocketFrame(seconds: Double = 60) throws -> (opcode: UInt8, payload: Data)? {
        let deadline = Self.deadline(seconds)
        while pending.count < 2 { guard try fill(until: deadline, awaiting: "a WebSocket frame") else { return nil } }
        let start = pending.startIndex
        let length = Int(pending[start + 1] & 0x7F)
        guard length < 126 else { return nil }
        while pending.count < 2 + length { guard try fill(until: deadline, awaiting: "a WebSocket frame") else { return nil } }
        let frame = (opcode: pending[start] & 0x0F, payload: Data(pending[(start + 2)..<(start + 2 + length)]))
        pending.removeSubrange(start..<(start + 2 + length))
        return frame
    }

    /// Reads the events that arrive within `seconds` (returning once at least one did);
    /// nil once the stream ended and every event was taken.
    package func available(seconds: Double) -> [Event]? {
        let deadline = Self.deadline(seconds)
        while true {
            let events = parsed()
            if !events.isEmpty { return events }
            do {
                guard try fill(until: deadline, awaiting: "an event") else { return parsed().isEmpty ? nil : parsed() }
            } catch {
                return []
            }
        }
    }

    /// Text decoded from chunks and not yet parsed into events.
    private var text = ""

    /// The whole events decoded so far, taken; comment lines skipped.
    private func parsed() -> [Event] {
        var events: [Event] = []
        text += decodeChunks()
        while let range = text.range(of: "\n\n") {
            let block = String(text[..<range.lowerBound])
            text.removeSubrange(..<range.upperBound)
            var event = Event(id: nil, event: nil, data: "")
            var isComment = true
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)); isComment = false }
                if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)); isComment = false }
                if line.hasPrefix("data: ") { event.data += line.dropFirst(6); isComment = false }
            }
            if !isComment { events.append(event) }
        }
        return events
    }

    /// Reads events until `count` arrived or the stream ends; skips comment lines.
    package func events(_ count: Int, seconds: Double = 60) throws -> [Event] {
        let deadline = Self.deadline(seconds)
        var events: [Event] = []
        while events.count < count {
            events += parsed()
            if events.count < count, try !fill(until: deadline, awaiting: "\(count) events (\(events.count) so far)") { break }
        }
        return events
    }

    /// Removes chunked transfer framing from what has arrived so far.
    private func decodeChunks() -> String {
        var out = ""
        while let lineEnd = pending.range(of: Data("\r\n".utf8)),
            let size = Int(String(decoding: pending[..<lineEnd.lowerBound], as: UTF8.self), radix: 16),
            pending.count >= lineEnd.upperBound - pending.startIndex + size + 2
        {
            let start = lineEnd.upperBound
            out += String(decoding: pending[start..<start + size], as: UTF8.self)
            pending.removeSubrange(..<(start + size + 2))
        }
        return out
    }

    private static func deadline(_ seconds: Double) -> ContinuousClock.Instant {
        .now + .milliseconds(Int64(seconds * 1000))
    }

    /// Reads what arrives next; false when the connection ended, throws at the deadline.
    private func fill(until deadline: ContinuousClock.Instant, awaiting awaited: String) throws -> Bool {
        while true {
            let left = deadline - .now
            guard left > .zero else {
                throw ReadFailed(description: "\(request): no \(awaited) in time; \(receivedBytes) bytes arrived, the last: \(String(decoding: pending.suffix(200), as: UTF8.self))")
            }
            var polled = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(min(1000, max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
            let ready = poll(&polled, 1, milliseconds)
            if ready < 0, errno != EINTR { return false }
            if ready <= 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = recv(descriptor, &buffer, buffer.count, 0)
            guard count > 0 else { return false }
            pending.append(contentsOf: buffer[0..<count])
            receivedBytes += count
            return true
        }
    }
}
