import Foundation

/// Blocking, bounded looks at servers on 127.0.0.1: whether a port is free, whether it
/// answers, and a plain HTTP GET. Every call ends within a few seconds.
enum Probe {
    /// Whether a server could listen on `port` now (a bind with SO_REUSEADDR, as
    /// servers do, succeeds).
    static func portIsFree(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var yes: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = loopback(port)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// Throws a one-line error when `port` is taken: a server of the bench would fail
    /// to start there, or worse, the bench would measure whatever holds it.
    static func requireFree(_ port: Int) throws {
        guard portIsFree(port) else {
            throw BenchFailure("port \(port) on 127.0.0.1 is in use (the bench listens on --base-port, BENCH_PORT for make bench, and the five ports after it); free it or choose another base port")
        }
    }

    /// Whether something accepts connections on `port` (within a second).
    static func portAnswers(_ port: Int) -> Bool {
        guard let descriptor = connected(port, seconds: 1) else { return false }
        close(descriptor)
        return true
    }

    /// `GET path` over HTTP/1.1 with `Connection: close`: the status and the body, or
    /// nil when the server does not answer within `seconds`.
    static func get(_ path: String, port: Int, seconds: Int = 5) -> (status: Int, body: String)? {
        guard let descriptor = connected(port, seconds: seconds) else { return nil }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard send(descriptor, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1."), let status = Int(text.dropFirst(9).prefix(3)) else { return nil }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }

    /// A connected socket to 127.0.0.1:`port`, or nil (refused, or no answer in time).
    /// It comes from 127.0.0.2, another client address than every load and attack
    /// client's: serve's per-address limits never hold the bench's own questions.
    private static func connected(_ port: Int, seconds: Int) -> Int32? {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        var source = loopback(0)
        source.sin_addr.s_addr = inet_addr("127.0.0.2")
        let bound = withUnsafePointer(to: &source) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            close(descriptor)
            return nil
        }
        let flags = fcntl(descriptor, F_GETFL)
        _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
        var address = loopback(port)
        let started = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if started != 0 {
            var polled = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard errno == EINPROGRESS, poll(&polled, 1, Int32(seconds * 1000)) == 1,
                getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error == 0
            else {
                close(descriptor)
                return nil
            }
        }
        _ = fcntl(descriptor, F_SETFL, flags)
        return descriptor
    }

    private static func loopback(_ port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}

/// Reads a number out of a flat JSON object such as `/status`'s: `"key":123`.
func jsonNumber(_ key: String, in text: String) -> Double? {
    guard let data = text.data(using: .utf8),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { return nil }
    return (object[key] as? NSNumber)?.doubleValue
}
