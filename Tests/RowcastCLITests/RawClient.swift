import Foundation

/// A client on a plain TCP socket that can stop reading whenever a test wants: the
/// hostile and broken peers real clients never are. Blocking; keep it off the
/// cooperative pool.
final class RawClient: @unchecked Sendable {
    private let descriptor: Int32
    private(set) var received = Data()

    /// Connects to 127.0.0.1:`port` from `source` (any 127/8 address is this machine's
    /// own, so one test can be several client addresses); a small receive buffer makes
    /// a peer that stops reading fill up quickly.
    init(port: Int, from source: String = "127.0.0.1", receiveBuffer: Int32? = nil) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if source != "127.0.0.1" {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            // A throw after this point still runs deinit, which closes the socket.
            guard bound == 0 else { throw Failure("cannot bind a client socket to \(source)") }
        }
        if var size = receiveBuffer {
            setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure("cannot connect to port \(port)") }
    }

    deinit { close(descriptor) }

    /// Aborts the connection: the peer gets a reset, not an orderly close (SO_LINGER 0).
    func reset() {
        var linger = Foundation.linger(l_onoff: 1, l_linger: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Foundation.linger>.size))
        shutdown(descriptor, Int32(SHUT_RDWR))
    }

    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Foundation.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { return }
            offset += sent
        }
    }

    func send(_ text: String) { send(Array(text.utf8)) }

    /// Sends `text`; false once the peer closed the connection (a reset or a broken pipe).
    func trySend(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        let sent = bytes.withUnsafeBytes { Foundation.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        return sent == bytes.count
    }

    /// Reads until `received` contains `marker`; false on EOF, error or timeout.
    func read(until marker: String) -> Bool {
        let needle = Data(marker.utf8)
        while received.range(of: needle) == nil {
            guard fill() else { return false }
        }
        return true
    }

    /// Reads until one of `markers` arrives, looking only at what is new each time (a
    /// stream of megabytes costs no rescans); returns the marker, nil on EOF, error or
    /// timeout.
    func read(untilAnyOf markers: [String]) -> String? {
        let needles = markers.map { Data($0.utf8) }
        let overlap = needles.map(\.count).max() ?? 0
        var from = received.startIndex
        while true {
            for (index, needle) in needles.enumerated() where received[from...].range(of: needle) != nil { return markers[index] }
            from = max(received.startIndex, received.endIndex - overlap)
            guard fill() else { return nil }
        }
    }

    /// Reads until what was received, as text, satisfies `enough`; false on EOF, error or timeout.
    func read(until enough: (String) -> Bool) -> Bool {
        while !enough(String(decoding: received, as: UTF8.self)) {
            guard fill() else { return false }
        }
        return true
    }

    /// Sends what the socket takes now, without waiting; returns how many bytes it took.
    func sendAvailable(_ bytes: [UInt8]) -> Int {
        let sent = bytes.withUnsafeBytes { Foundation.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        return max(sent, 0)
    }

    /// Reads what has arrived, without waiting.
    func readAvailable() {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard count > 0 else { return }
            received.append(contentsOf: buffer[0..<count])
        }
    }

    /// Reads until the server closes the connection (EOF or reset); false when the
    /// connection is still open after `seconds`.
    func readUntilClosed(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count > 0 { received.append(contentsOf: buffer[0..<count]) }
            if count == 0 { return true }
            if count < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { continue }
                return true  // reset
            }
        }
        return false
    }

    /// Sends a WebSocket upgrade for `path` and waits for the 101.
    func upgrade(path: String = "/ws", host: String = "127.0.0.1", origin: String? = nil) -> Bool {
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if let origin { request += "Origin: \(origin)\r\n" }
        send(request + "\r\n")
        return read(until: "\r\n\r\n") && received.starts(with: Data("HTTP/1.1 101".utf8))
    }

    /// The status code of one request (its head only; the connection is then done).
    static func status(
        port: Int, path: String, host: String, headers: [String: String] = [:], upgrade: Bool = false, from source: String = "127.0.0.1"
    ) throws -> String {
        let client = try RawClient(port: port, from: source)
        if upgrade {
            _ = client.upgrade(path: path, host: host, origin: headers["Origin"])
        } else {
            var request = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\n"
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            client.send(request + "\r\n")
            _ = client.read(until: "\r\n")
        }
        let line = String(decoding: client.received.prefix(while: { $0 != 13 }), as: UTF8.self)
        return line.split(separator: " ").dropFirst().first.map(String.init) ?? "no response"
    }

    /// The body of `GET path` on a connection of its own that closes after the
    /// response; fails naming what arrived when no whole response came in 30 s.
    static func body(port: Int, path: String, from source: String = "127.0.0.1") throws -> Data {
        let client = try RawClient(port: port, from: source)
        client.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        let closed = client.readUntilClosed(seconds: 30)
        guard closed, let start = client.received.range(of: Data("\r\n\r\n".utf8)) else {
            throw Failure("GET \(path) on port \(port): \(closed ? "closed" : "still open") after \(client.received.count) bytes: \(String(decoding: client.received.prefix(300), as: UTF8.self))")
        }
        return client.received[start.upperBound...]
    }

    /// Sends one masked text frame, as a browser would.
    func sendText(_ text: String) {
        let payload = Array(text.utf8)
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            frame.append(0x80 | 126)
            frame += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        let mask: [UInt8] = [1, 2, 3, 4]
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        send(frame)
    }

    private func fill() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let count = recv(descriptor, &buffer, buffer.count, 0)
        guard count > 0 else { return false }
        received.append(contentsOf: buffer[0..<count])
        return true
    }
}
