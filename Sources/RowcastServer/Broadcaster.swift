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
        /// Nothing to send but a sign of life (SSE comment lines).
        case heartbeat
    }

    /// A client's end of the broadcaster: its id, the frames queued for it, and a flag
    /// raised when it is cut off (checked without a lock before each write).
    public struct Registration: Sendable {
        public let id: UInt64
        public let stream: AsyncStream<Outgoing>
        let cutFlag: CutFlag

        /// Whether the client was cut off for falling behind: stop writing and close it.
        public var isCutOff: Bool { cutFlag.isRaised }
    }

    final class CutFlag: Sendable {
        private let raised = Atomic<Bool>(false)
        var isRaised: Bool { raised.load(ordering: .relaxed) }
        func raise() { raised.store(true, ordering: .relaxed) }
    }

    private struct Client {
        let continuation: AsyncStream<Outgoing>.Continuation
        let cutFlag: CutFlag
        /// What the client asked for; nil until it subscribes.
        var subscription: Subscription?
    }

    private struct State {
        var nextID: UInt64 = 0
        var clients: [UInt64: Client] = [:]
        var recordsSent: UInt64 = 0
        var lastCursor: Cursor?
        var window = ResumeWindow(limit: 0, byteLimit: 0)
        var closing = false
    }

    /// How many frames may wait for one client before it is cut off.
    public let queueLimit: Int
    private let state = Mutex(State())

    /// - Parameters:
    ///   - queueLimit: frames that may wait for one client before it is cut off.
    ///   - resumeWindow: recent records kept for `since` (at most `resumeWindowBytes` of frames).
    public init(queueLimit: Int = 4096, resumeWindow: Int = 1000, resumeWindowBytes: Int = 64 << 20) {
        self.queueLimit = max(queueLimit, resumeWindow + 64)
        state.withLock { $0.window = ResumeWindow(limit: resumeWindow, byteLimit: resumeWindowBytes) }
    }

    /// Registers a client. It receives updates only after ``receiveUpdates(_:)``.
    public func register() -> Registration {
        let (stream, continuation) = AsyncStream<Outgoing>.makeStream(bufferingPolicy: .bufferingOldest(queueLimit))
        let flag = CutFlag()
        let id = state.withLock { state in
            state.nextID += 1
            if state.closing {
                continuation.finish()
            } else {
                state.clients[state.nextID] = Client(continuation: continuation, cutFlag: flag, subscription: nil)
            }
            return state.nextID
        }
        return Registration(id: id, stream: stream, cutFlag: flag)
    }

    /// Starts (or replaces) a client's subscription and queues its `subscribed` reply,
    /// which names the last record published before it: every later match follows.
    /// With `since`, the matching records after it are replayed from the resume window
    /// first, in the same critical section as going live: no gap, no repeat. Returns
    /// false (and subscribes nothing) when `since` is older than the window.
    @discardableResult
    public func subscribe(_ id: UInt64, to subscription: Subscription, since: Cursor? = nil) -> Bool {
        state.withLock { state in
            guard state.clients[id] != nil else { return true }
            var replay: [ResumeWindow.Entry] = []
            if let since {
                guard let after = state.window.entries(after: since, lastCursor: state.lastCursor) else { return false }
                replay = after
            }
            state.clients[id]?.subscription = subscription
            Self.enqueue(ServerFrame.subscribed(subscription, cursor: state.lastCursor?.description), to: id, in: &state)
            for entry in replay where subscription.matches(entry.record) {
                Self.enqueue(entry.frame, to: id, in: &state, cursor: entry.record.cursor.description)
            }
            return true
        }
    }

    /// Queues a heartbeat for one client, in order with its updates.
    public func heartbeat(_ id: UInt64) {
        state.withLock { state in
            guard let client = state.clients[id] else { return }
            if case .dropped = client.continuation.yield(.heartbeat) { Self.cut(id, in: &state) }
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

    /// Ends every client's queue for a graceful shutdown: WebSocket sessions close with
    /// 1001 after what was already queued, SSE streams end. New clients are refused.
    public func closeAll() {
        state.withLock { state in
            state.closing = true
            for client in state.clients.values { client.continuation.finish() }
        }
    }

    /// Whether ``closeAll()`` was called.
    public var isClosing: Bool { state.withLock { $0.closing } }

    /// Forgets a client (its connection ended).
    public func unregister(_ id: UInt64) {
        state.withLock { _ = $0.clients.removeValue(forKey: id)?.continuation.finish() }
    }

    /// The number of connected clients.
    public var clientCount: Int { state.withLock { $0.clients.count } }

    /// Frames of `update` handed to clients since start (one per client per record).
    public var recordsSent: UInt64 { state.withLock { $0.recordsSent } }

    /// The cursor of the last record published.
    public var lastCursor: Cursor? { state.withLock { $0.lastCursor } }

    // MARK: - RecordSink

    public func deliver(_ record: ChangeRecord) {
        let frame = ServerFrame.update(record)
        let cursor = record.cursor.description
        state.withLock { state in
            state.lastCursor = record.cursor
            state.window.append(.init(record: record, frame: frame))
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

    private static func enqueue(_ frame: ByteBuffer, to id: UInt64, in state: inout State, cursor: String? = nil) {
        guard let client = state.clients[id] else { return }
        if case .dropped = client.continuation.yield(.frame(frame, cursor: cursor)) {
            cut(id, in: &state)
        }
    }

    private static func cut(_ id: UInt64, in state: inout State) {
        guard let client = state.clients.removeValue(forKey: id) else { return }
        client.cutFlag.raise()
        client.continuation.finish()
    }
}
