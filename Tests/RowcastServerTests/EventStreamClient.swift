import Foundation

/// A minimal Server-Sent Events reader over a plain socket, for tests: sends a GET
/// and collects `id:`/`data:` events. Blocking; run it off the cooperative pool.
final class EventStreamClient: @unchecked Sendable {
    private let descriptor: Int32
    private var pending = Data()

    struct Event: Equatable {
        var id: String?
        var event: String?
        var data: String
    }

    init(port: Int, path: String, headers: [String: String] = [:]) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        _ = request.withCString { send(descriptor, $0, strlen($0), 0) }
    }

    deinit { shutdown(descriptor, Int32(SHUT_RDWR)); close(descriptor) }

    /// Closes the connection now, as a browser closing the page would.
    func disconnect() { shutdown(descriptor, Int32(SHUT_RDWR)) }

    /// The status line and headers.
    func readHead() -> String {
        while true {
            if let end = pending.range(of: Data("\r\n\r\n".utf8)) {
                let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
                pending.removeSubrange(..<end.upperBound)
                return head
            }
            guard fill() else { return String(decoding: pending, as: UTF8.self) }
        }
    }

    /// A whole response with a `Content-Length` body: the head, then the body.
    func response() -> String {
        let head = readHead()
        let length = head.split(separator: "\r\n").lazy
            .compactMap { line -> Int? in
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                return Int(parts[1].trimmingCharacters(in: .whitespaces))
            }
            .first ?? 0
        while pending.count < length, fill() {}
        return head + "\r\n\r\n" + String(decoding: pending.prefix(length), as: UTF8.self)
    }

    /// One unmasked WebSocket frame from the server, after a `101` head: its opcode and
    /// payload (short frames only: payloads under 126 bytes, as close frames are).
    func webSocketFrame() -> (opcode: UInt8, payload: Data)? {
        while pending.count < 2 { guard fill() else { return nil } }
        let start = pending.startIndex
        let length = Int(pending[start + 1] & 0x7F)
        guard length < 126 else { return nil }
        while pending.count < 2 + length { guard fill() else { return nil } }
        let frame = (opcode: pending[start] & 0x0F, payload: Data(pending[(start + 2)..<(start + 2 + length)]))
        pending.removeSubrange(start..<(start + 2 + length))
        return frame
    }

    /// Reads events until `count` arrived or the stream stalls; skips comment lines.
    func events(_ count: Int) -> [Event] {
        var events: [Event] = []
        var text = ""
        while events.count < count {
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
            if events.count < count, !fill() { break }
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

    private func fill() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = recv(descriptor, &buffer, buffer.count, 0)
        guard count > 0 else { return false }
        pending.append(contentsOf: buffer[0..<count])
        return true
    }
}
