import Foundation
import HummingbirdWSClient
import Logging
import NIOWebSocket
import RowcastTestSupport
import Synchronization

/// What one client received, in order.
final class ReceivedRows: Sendable {
    private let rows = Mutex<[(cursor: String, id: Int)]>([])
    private let errors = Mutex<[String]>([])

    func add(cursor: String, id: Int) { rows.withLock { $0.append((cursor, id)) } }
    func error(_ text: String) { errors.withLock { $0.append(text) } }
    var ids: [Int] { rows.withLock { $0.map(\.id) } }
    var count: Int { rows.withLock { $0.count } }
    var lastCursor: String? { rows.withLock { $0.last?.cursor } }
    var errorFrames: [String] { errors.withLock { $0 } }

    /// Waits until `count` rows arrived, or a minute passes.
    func wait(for count: Int) async {
        let deadline = Date().addingTimeInterval(60)
        while self.count < count, Date() < deadline { try? await pause(for: .milliseconds(20)) }
    }
}

/// A client that behaves like the page: it connects to the node the test points
/// it at, subscribes to `orders` from its last cursor, and reconnects whenever the
/// connection ends (a node stopped or killed, or the test moved it to another node).
final class ResumingClient: Sendable {
    let received = ReceivedRows()
    private let port = Mutex("")
    private let stopped = Mutex(false)
    private let sessions = Mutex(0)
    private let subscriptions = Mutex(0)

    /// Points the client at another node; the current session ends after its next row.
    func move(to port: String) { self.port.withLock { $0 = port } }
    func stop() { stopped.withLock { $0 = true } }
    var sessionCount: Int { sessions.withLock { $0 } }
    var isSubscribed: Bool { subscriptions.withLock { $0 } > 0 }

    /// Waits until the client's first subscription is live, or a minute passes.
    func waitUntilSubscribed() async {
        let deadline = Date().addingTimeInterval(60)
        while subscriptions.withLock({ $0 }) == 0, Date() < deadline { try? await pause(for: .milliseconds(20)) }
    }

    func run() -> Task<Void, Never> {
        Task.detached {
            var logger = Logger(label: "client")
            logger.logLevel = .critical
            while !self.stopped.withLock({ $0 }) {
                let port = self.port.withLock { $0 }
                self.sessions.withLock { $0 += 1 }
                await self.session(port: port, logger: logger)
                try? await pause(for: .milliseconds(100))
            }
        }
    }

    private func session(port: String, logger: Logger) async {
        let since = received.lastCursor.map { #","since":"\#($0)""# } ?? ""
        let subscribe = #"{"event":"subscribe","data":{"tables":["orders"]"# + since + "}}"
        do {
            _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", logger: logger) { inbound, outbound, _ in
                var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                _ = try await messages.next()  // connected
                try await outbound.write(.text(subscribe))
                while case .text(let text)? = try await messages.next() {
                    guard let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                          let data = frame["data"] as? [String: Any]
                    else { continue }
                    if frame["event"] as? String == "error" {
                        self.received.error("\(data["code"] ?? ""): \(data["message"] ?? "")")
                        self.stop()
                        return
                    }
                    if frame["event"] as? String == "subscribed" { self.subscriptions.withLock { $0 += 1 } }
                    guard frame["event"] as? String == "update", let cursor = data["cursor"] as? String,
                          let row = data["row"] as? [String: Any], let id = row["id"] as? Int
                    else { continue }
                    self.received.add(cursor: cursor, id: id)
                    if self.stopped.withLock({ $0 }) || self.port.withLock({ $0 }) != port { return }
                }
            }
        } catch {
            // The node went away, or is not listening yet: reconnect.
        }
    }
}
