import NIOCore
import RowcastCore
import RowcastPostgres
import Synchronization

/// Fans records out to every subscribed client.
///
/// Each record is encoded once, into one `update` frame whose bytes every client
/// shares. Each client has a bounded queue; a client whose queue is full is cut off
/// (its session closes with 1013 and the last cursor it was sent) so that it never
/// slows capture or the other clients. `deliver` never blocks.
public final class Broadcaster: RecordSink {
    /// One queued item for a client's writer.
    public enum Outgoing: Sendable {
        /// A frame to send; `cursor` is set for `update` frames.
        case frame(ByteBuffer, cursor: String?)
    }

    /// A client's end of the broadcaster: its id and the frames queued for it.
    public struct Registration: Sendable {
        public let id: UInt64
        public let stream: AsyncStream<Outgoing>
    }

    private struct Client {
        let continuation: AsyncStream<Outgoing>.Continuation
        /// What the client asked for; nil until it subscribes.
        var subscription: Subscription?
    }

    private struct State {
        var nextID: UInt64 = 0
        var clients: [UInt64: Client] = [:]
        var cutOff: Set<UInt64> = []
        var recordsSent: UInt64 = 0
        var lastCursor: String?
    }

    /// How many frames may wait for one client before it is cut off.
    public let queueLimit: Int
    private let state = Mutex(State())

    public init(queueLimit: Int = 4096) {
        self.queueLimit = queueLimit
    }

    /// Registers a client. It receives updates only after ``receiveUpdates(_:)``.
    public func register() -> Registration {
        let (stream, continuation) = AsyncStream<Outgoing>.makeStream(bufferingPolicy: .bufferingOldest(queueLimit))
        let id = state.withLock { state in
            state.nextID += 1
            state.clients[state.nextID] = Client(continuation: continuation, subscription: nil)
            return state.nextID
        }
        return Registration(id: id, stream: stream)
    }

    /// Starts (or replaces) a client's subscription and queues its `subscribed` reply,
    /// which names the last record published before it: every later match follows.
    public func subscribe(_ id: UInt64, to subscription: Subscription) {
        state.withLock { state in
            guard state.clients[id] != nil else { return }
            state.clients[id]?.subscription = subscription
            Self.enqueue(ServerFrame.subscribed(subscription, cursor: state.lastCursor), to: id, in: &state)
        }
    }

    /// Stops sending updates to a client.
    public func unsubscribe(_ id: UInt64) {
        state.withLock { $0.clients[id]?.subscription = nil }
    }

    /// Queues a frame for one client, in order with its updates.
    public func send(_ frame: ByteBuffer, to id: UInt64) {
        state.withLock { Self.enqueue(frame, to: id, in: &$0) }
    }

    /// Forgets a client (its connection ended). Returns whether it had been cut off.
    @discardableResult
    public func unregister(_ id: UInt64) -> Bool {
        state.withLock { state in
            state.clients.removeValue(forKey: id)?.continuation.finish()
            return state.cutOff.remove(id) != nil
        }
    }

    /// Whether a client was cut off for being too slow.
    public func wasCutOff(_ id: UInt64) -> Bool {
        state.withLock { $0.cutOff.contains(id) }
    }

    /// The number of connected clients.
    public var clientCount: Int { state.withLock { $0.clients.count } }

    /// Frames of `update` handed to clients since start (one per client per record).
    public var recordsSent: UInt64 { state.withLock { $0.recordsSent } }

    // MARK: - RecordSink

    public func deliver(_ record: ChangeRecord) {
        let frame = ServerFrame.update(record)
        let cursor = record.cursor.description
        state.withLock { state in
            state.lastCursor = cursor
            for (id, client) in state.clients {
                guard let subscription = client.subscription, subscription.matches(record) else { continue }
                switch client.continuation.yield(.frame(frame, cursor: cursor)) {
                case .enqueued:
                    state.recordsSent += 1
                case .dropped:
                    Self.cut(id, in: &state)
                case .terminated:
                    state.clients.removeValue(forKey: id)
                @unknown default:
                    break
                }
            }
        }
    }

    public func endOfBatch() {}

    private static func enqueue(_ frame: ByteBuffer, to id: UInt64, in state: inout State) {
        guard let client = state.clients[id] else { return }
        if case .dropped = client.continuation.yield(.frame(frame, cursor: nil)) {
            cut(id, in: &state)
        }
    }

    private static func cut(_ id: UInt64, in state: inout State) {
        guard let client = state.clients.removeValue(forKey: id) else { return }
        state.cutOff.insert(id)
        client.continuation.finish()
    }
}
