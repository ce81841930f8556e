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

    /// What arrived, in a line: how many rows, the last few ids, any error frame.
    var summary: String {
        let ids = ids
        return "\(ids.count) rows, the last \(ids.suffix(5)), \(ids.count - Set(ids).count) repeated" + (errorFrames.isEmpty ? "" : ", errors \(errorFrames)")
    }

    /// Waits until `count` rows arrived; fails naming what did when `seconds` pass first.
    func wait(for count: Int, seconds: Double = 60, _ context: @escaping @Sendable () -> String = { "" }) async throws {
        try await eventually("\(count) rows", within: seconds, interval: .milliseconds(20), seen: { self.summary + " " + context() }) {
            self.count >= count || !self.errorFrames.isEmpty
        }
    }
}

/// A client that behaves like the page: it connects to the node the test points it
/// at, subscribes to `orders` from its last cursor, and reconnects whenever the
/// connection ends (a node stopped or killed). Pointing it elsewhere, holding it, or
/// stopping it closes its connection at once, whether rows are flowing or not.
final class ResumingClient: Sendable {
    let received = ReceivedRows()
    /// Where the client connects; nil while it is held.
    private let port = Mutex<String?>(nil)
    private let stopped = Mutex(false)
    private let sessions = Mutex(0)
    private let subscriptions = Mutex(0)
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// Points the client at another node; the current session is closed now.
    func move(to port: String) { self.port.withLock { $0 = port } }
    /// Closes the current session and stays away until `move(to:)`.
    func hold() { port.withLock { $0 = nil } }
    func stop() { stopped.withLock { $0 = true } }
    var sessionCount: Int { sessions.withLock { $0 } }
    var subscriptionCount: Int { subscriptions.withLock { $0 } }
    var isSubscribed: Bool { subscriptionCount > 0 }

    /// Waits until the client has subscribed `count` times in all.
    func waitUntilSubscribed(times count: Int = 1, seconds: Double = 60) async throws {
        try await eventually("subscription \(count) of a client", within: seconds, interval: .milliseconds(20), seen: {
            "\(self.subscriptionCount) subscriptions in \(self.sessionCount) sessions; \(self.received.summary)"
        }) { self.subscriptionCount >= count || !self.received.errorFrames.isEmpty }
    }

    /// Starts the client's sessions, one after another.
    func run() {
        let running = Task.detached {
            var logger = Logger(label: "client")
            logger.logLevel = .critical
            while !self.stopped.withLock({ $0 }) {
                guard let port = self.port.withLock({ $0 }) else {
                    try? await pause(for: .milliseconds(20))
                    continue
                }
                self.sessions.withLock { $0 += 1 }
                await self.session(port: port, logger: logger)
                try? await pause(for: .milliseconds(100))
            }
        }
        task.withLock { $0 = running }
    }

    /// Stops the client and waits (with a deadline) until its last session has closed.
    func finish(seconds: Double = 30) async throws {
        stop()
        guard let running = task.withLock({ $0 }) else { return }
        try await within(seconds, "a resuming client to close its session", seen: { "\(self.sessionCount) sessions; \(self.received.summary)" }) {
            await running.value
        }
    }

    private var isCurrent: @Sendable (String) -> Bool {
        { port in !self.stopped.withLock { $0 } && self.port.withLock { $0 } == port }
    }

    private func session(port: String, logger: Logger) async {
        let since = received.lastCursor.map { #","since":"\#($0)""# } ?? ""
        let subscribe = #"{"event":"subscribe","data":{"tables":["orders"]"# + since + "}}"
        let isCurrent = isCurrent
        do {
            _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", logger: logger) { inbound, outbound, _ in
                // Closes the connection as soon as the test points the client elsewhere.
                let watcher = Task {
                    while isCurrent(port) { try await pause(for: .milliseconds(20)) }
                    try await outbound.close(.goingAway, reason: "moving")
                }
                defer { watcher.cancel() }
                var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                _ = try await messages.next()  // connected
                try await outbound.write(.text(subscribe))
                while case .text(let text)? = try await messages.next() {
                    guard let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                          let data = frame["data"] as? [String: Any]
                    else { continue }
                    if frame["event"] as? String == "error" {
                        self.received.error("\(data["code"] ?? ""): \(data["message"] ?? "")" + (data["reason"].map { " (reason \($0))" } ?? ""))
                        self.stop()
                        return
                    }
                    if frame["event"] as? String == "subscribed" { self.subscriptions.withLock { $0 += 1 } }
                    guard frame["event"] as? String == "update", let cursor = data["cursor"] as? String,
                          let row = data["row"] as? [String: Any], let id = row["id"] as? Int
                    else { continue }
                    // A row that arrives after the test moved the client is still the
                    // client's: it was delivered, and the next session resumes after it.
                    self.received.add(cursor: cursor, id: id)
                }
            }
        } catch {
            // The node went away, or is not listening yet: reconnect.
        }
    }
}
