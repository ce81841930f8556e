import NIOCore
import RowcastCore
import Synchronization

/// Fans records out to every subscribed client.
///
/// Each record is encoded once, into one `update` frame whose bytes every client
/// shares (Socket.IO clients share one packet made from it, built once when the first
/// of them matches). Each client has a queue bounded in frames and in bytes; a client whose
/// queue is full is cut off (its session closes with 1013 and the last cursor it was
/// sent, and its connection is closed outright if even that cannot be written) so
/// that it never slows capture or the other clients. `deliver` never blocks.
package final class Broadcaster: RecordSink {
    /// One queued item for a client's writer.
    package enum Outgoing: Sendable {
        /// A frame to send; `cursor` is set for `update` frames.
        case frame(ByteBuffer, cursor: String?)
        /// Nothing to send but a sign of life (SSE comment lines).
        case heartbeat
    }

    /// The protocol a client speaks, which decides how the broadcaster's own frames
    /// (`update`, `subscribed`) are shaped for it.
    package enum Speech: Sendable {
        /// rowcast's `{"event": NAME, "data": OBJECT}` (`/ws`; `/events` slices it).
        case rowcast
        /// Socket.IO event packets, `42["NAME",DATA,"CURSOR"]` (`/socket.io/`).
        case socketIO
    }

    /// Why the broadcaster ended a client's queue before the client left.
    package enum EndReason: UInt8, Sendable {
        /// It fell `queueLimit` frames behind.
        case tooSlow = 1
        /// Its credential expired.
        case credentialExpired = 2
        /// The server is shutting down.
        case shuttingDown = 3
    }

    /// A client's end of the broadcaster: its id, the frames queued for it, and the
    /// reason it was ended, if it was (checked without a lock before each write).
    package struct Registration: Sendable {
        package let id: UInt64
        /// The client's frames, for its writer to take in batches.
        package let queue: ClientQueue
        let control: ClientControl

        /// The client's frames one at a time.
        package var stream: ClientQueue.Items { queue.items }

        /// Set when the broadcaster ended this client: stop writing and close it.
        package var endReason: EndReason? { control.reason }

        /// The writer calls this once frames it took are written (handed to the socket),
        /// so that what the client holds queued is counted in bytes.
        package func wrote(bytes: Int) { control.dequeued(bytes) }
    }

    /// Shared by the broadcaster and one client's writer, without a lock.
    final class ClientControl: Sendable {
        private let value = Atomic<UInt8>(0)
        private let queuedBytes = Atomic<Int>(0)
        let onEnd: (@Sendable (EndReason) -> Void)?

        init(onEnd: (@Sendable (EndReason) -> Void)?) { self.onEnd = onEnd }

        var reason: EndReason? { EndReason(rawValue: value.load(ordering: .relaxed)) }
        func raise(_ reason: EndReason) { value.store(reason.rawValue, ordering: .relaxed) }
        var queued: Int { queuedBytes.load(ordering: .relaxed) }
        func enqueued(_ bytes: Int) { queuedBytes.add(bytes, ordering: .relaxed) }
        func dequeued(_ bytes: Int) { queuedBytes.subtract(bytes, ordering: .relaxed) }
    }

    private struct Client {
        let queue: ClientQueue
        let control: ClientControl
        let speaks: Speech
        /// What the client asked for; nil until it subscribes.
        var subscription: Subscription?
        /// A `since` newer than anything published yet (a client coming from a node
        /// further ahead, or back before this one rebuilt its window): records up to
        /// it are the client's already and are skipped.
        var skipThrough: Cursor?
    }

    private struct State {
        var nextID: UInt64 = 0
        var clients: [UInt64: Client] = [:]
        /// Registered and not yet unregistered: includes clients ended but still closing.
        var connections: Set<UInt64> = []
        var recordsSent: UInt64 = 0
        var lastCursor: Cursor?
        var window = ResumeWindow(limit: 0, byteLimit: 0)
        var closing = false
    }

    /// How many frames may wait for one client before it is cut off.
    package let queueLimit: Int
    /// How many bytes of frames may wait for one client before it is cut off (a single
    /// frame larger than this still goes to a client whose queue is empty).
    package let queueByteLimit: Int
    private let state = Mutex(State())
    let metrics: ServerMetrics?

    /// - Parameters:
    ///   - queueLimit: frames that may wait for one client before it is cut off (at
    ///     least the resume window and some, so that a full replay fits).
    ///   - queueBytes: bytes that may wait for one client (at least `resumeWindowBytes`).
    ///   - resumeWindow: recent records kept for `since` (at most `resumeWindowBytes` of frames).
    ///   - metrics: where to count records, clients and cut-offs.
    ///   - origin: a cursor before every record the capture will deliver (see
    ///     ``CaptureSource/origin``): `subscribed` names it until the first record, and
    ///     resuming from it replays everything the window still holds.
    package init(
        queueLimit: Int = 4096, queueBytes: Int = 64 << 20, resumeWindow: Int = 1000, resumeWindowBytes: Int = 64 << 20,
        resumeWindowAge: Duration? = nil, origin: Cursor? = nil, metrics: ServerMetrics? = nil
    ) {
        self.queueLimit = max(queueLimit, resumeWindow + 64)
        self.queueByteLimit = max(queueBytes, resumeWindowBytes)
        self.metrics = metrics
        state.withLock {
            $0.window = ResumeWindow(limit: resumeWindow, byteLimit: resumeWindowBytes, ageLimit: resumeWindowAge, origin: origin)
            $0.lastCursor = origin
        }
    }

    /// Registers a client. It receives updates once it subscribes. `onEnd` is called
    /// (under the broadcaster's lock: it must only schedule work) when the broadcaster
    /// ends the client, so that its connection can be closed even if its writer is
    /// stuck behind a peer that stopped reading.
    package func register(speaking speaks: Speech = .rowcast, onEnd: (@Sendable (EndReason) -> Void)? = nil) -> Registration {
        let queue = ClientQueue(limit: queueLimit)
        let flag = ClientControl(onEnd: onEnd)
        let id = state.withLock { state in
            state.nextID += 1
            if state.closing {
                queue.finish()
            } else {
                state.clients[state.nextID] = Client(queue: queue, control: flag, speaks: speaks, subscription: nil)
                state.connections.insert(state.nextID)
            }
            metrics?.clients.set(state.clients.count)
            return state.nextID
        }
        return Registration(id: id, queue: queue, control: flag)
    }

    /// Starts (or replaces) a client's subscription and queues its `subscribed` reply,
    /// which names the last record published before it: every later match follows.
    /// With `since`, the matching records after it are replayed from the resume window
    /// first, in the same critical section as going live: no gap, no repeat. With
    /// `last` instead, the newest `last` matching records the window holds come first.
    /// Returns false (and subscribes nothing) when `since` is older than the window.
    @discardableResult
    package func subscribe(_ id: UInt64, to subscription: Subscription, since: Cursor? = nil, last: Int? = nil) -> Bool {
        subscribe(id, to: subscription, since: since, last: last, reply: nil)
    }

    /// Restores a Socket.IO client's subscription after a reconnect: `reply` (its
    /// CONNECT answer) first, then the matching records after `since`, then live ones,
    /// without a `subscribed` reply (recovery is invisible to the page). Returns false,
    /// and queues nothing, when `since` is older than the window.
    package func recover(_ id: UInt64, to subscription: Subscription, since: Cursor, reply: ByteBuffer) -> Bool {
        subscribe(id, to: subscription, since: since, last: nil, reply: reply)
    }

    private func subscribe(_ id: UInt64, to subscription: Subscription, since: Cursor?, last: Int?, reply: ByteBuffer?) -> Bool {
        var wakes: [ClientQueue] = []
        defer { for queue in wakes { queue.wake() } }
        return state.withLock { state in
            guard let client = state.clients[id] else { return true }
            state.window.expire()
            var replay: [ResumeWindow.Entry] = []
            if let since {
                guard let after = state.window.entries(after: since, lastCursor: state.lastCursor) else { return false }
                replay = after
            } else if let last, last > 0 {
                replay = state.window.latest(last, matching: subscription)
            }
            state.clients[id]?.subscription = subscription
            state.clients[id]?.skipThrough = since.flatMap { since in state.lastCursor.map { since > $0 } ?? true ? since : nil }
            if let reply {
                enqueue(reply, to: id, in: &state, wakes: &wakes)
            } else {
                let frame = ServerFrame.subscribed(subscription, cursor: state.lastCursor?.description)
                switch client.speaks {
                case .rowcast: enqueue(frame, to: id, in: &state, wakes: &wakes)
                case .socketIO:
                    // The offset a reconnect recovers from: where this subscription starts.
                    let offset = (since ?? state.lastCursor)?.description
                    enqueue(SocketIOFrame.event(fromFrame: frame, offset: offset), to: id, in: &state, wakes: &wakes)
                }
            }
            for entry in replay where entry.matches(subscription) {
                let cursor = entry.record.cursor.description
                let frame = client.speaks == .rowcast ? entry.frame : SocketIOFrame.event(fromFrame: entry.frame, offset: cursor)
                enqueue(frame, to: id, in: &state, cursor: cursor, wakes: &wakes)
            }
            return true
        }
    }

    /// Queues a heartbeat for one client, in order with its updates.
    package func heartbeat(_ id: UInt64) {
        let wake = state.withLock { state -> ClientQueue? in
            guard let client = state.clients[id] else { return nil }
            switch client.queue.yield(.heartbeat) {
            case .enqueued(let wake): return wake ? client.queue : nil
            case .dropped: end(id, .tooSlow, in: &state)
            case .terminated: break
            }
            return nil
        }
        wake?.wake()
    }

    /// Ends a client whose credential expired: its session closes after what is queued.
    package func expire(_ id: UInt64) {
        state.withLock { end(id, .credentialExpired, in: &$0) }
    }

    /// Stops sending updates to a client.
    package func unsubscribe(_ id: UInt64) {
        state.withLock { $0.clients[id]?.subscription = nil }
    }

    /// Queues a frame for one client, in order with its updates.
    package func send(_ frame: ByteBuffer, to id: UInt64) {
        var wakes: [ClientQueue] = []
        state.withLock { enqueue(frame, to: id, in: &$0, wakes: &wakes) }
        for queue in wakes { queue.wake() }
    }

    /// Ends every client's queue for a graceful shutdown: WebSocket sessions close with
    /// 1001, SSE streams end. New clients are refused.
    package func closeAll() {
        state.withLock { state in
            state.closing = true
            for id in Array(state.clients.keys) { end(id, .shuttingDown, in: &state) }
        }
    }

    /// Ends one client's queue because the server is shutting down (its connection's
    /// own graceful-shutdown handler calls this).
    package func shutDown(_ id: UInt64) {
        state.withLock { end(id, .shuttingDown, in: &$0) }
    }

    /// Forgets a client (its connection ended).
    package func unregister(_ id: UInt64) {
        state.withLock { state in
            state.connections.remove(id)
            state.clients.removeValue(forKey: id)?.queue.finish()
            metrics?.clients.set(state.clients.count)
        }
    }

    /// The number of connected clients.
    package var clientCount: Int { state.withLock { $0.clients.count } }

    /// Connections not yet closed, counting clients ended but still closing.
    package var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Frames of `update` handed to clients since start (one per client per record).
    package var recordsSent: UInt64 { state.withLock { $0.recordsSent } }

    /// What the resume window holds now: records, bytes of frames, and the age of the
    /// oldest (in replication mode, the slot keeps the WAL from that record on).
    package var windowStats: (records: Int, bytes: Int, oldestAge: Duration?) {
        state.withLock { state in
            state.window.expire()
            return state.window.stats()
        }
    }

    /// The cursor of the last record published.
    package var lastCursor: Cursor? { state.withLock { $0.lastCursor } }

    // MARK: - RecordSink

    package func deliver(_ record: ChangeRecord) {
        let rowcastFrame = ServerFrame.update(record)
        let cursor = record.cursor.description
        var wakes: [ClientQueue] = []
        let sent = state.withLock { state in
            state.lastCursor = record.cursor
            state.window.append(.init(record: record, frame: rowcastFrame))
            var values = RecordValues(record)
            var sent = 0
            // Socket.IO clients share one packet of their own, built on first use.
            var socketIOFrame: ByteBuffer?
            for (id, client) in state.clients {
                guard let subscription = client.subscription else { continue }
                if let skip = client.skipThrough {
                    guard record.cursor > skip else { continue }
                    state.clients[id]?.skipThrough = nil
                }
                guard subscription.matches(&values) else { continue }
                let frame: ByteBuffer
                switch client.speaks {
                case .rowcast: frame = rowcastFrame
                case .socketIO:
                    if socketIOFrame == nil { socketIOFrame = SocketIOFrame.event(fromFrame: rowcastFrame, offset: cursor) }
                    frame = socketIOFrame ?? rowcastFrame
                }
                let size = frame.readableBytes
                let queued = client.control.queued
                if queued > 0, queued + size > queueByteLimit {
                    end(id, .tooSlow, in: &state)
                    continue
                }
                // Counted before the writer can take it, so never below zero.
                client.control.enqueued(size)
                switch client.queue.yield(.frame(frame, cursor: cursor)) {
                case .enqueued(let wake):
                    if wake { wakes.append(client.queue) }
                    sent += 1
                case .dropped:
                    client.control.dequeued(size)
                    end(id, .tooSlow, in: &state)
                case .terminated:
                    client.control.dequeued(size)
                    state.clients.removeValue(forKey: id)
                    metrics?.clients.set(state.clients.count)
                }
            }
            state.recordsSent += UInt64(sent)
            return sent
        }
        for queue in wakes { queue.wake() }
        if let metrics {
            if sent > 0 {
                metrics.recordsSent.increment(by: sent)
                metrics.bytesSent.increment(by: sent * rowcastFrame.readableBytes)
            }
        }
    }

    /// What the capture may forget: the records the resume window no longer holds.
    ///
    /// Everything handed to ``deliver(_:)`` is queued for each subscribed client and
    /// kept in the window, but a record is reported delivered only once the window
    /// lets it go (by count, bytes or age). So replication mode's slot keeps every
    /// record the window holds, and a `serve` restarted after SIGTERM or `kill -9`
    /// replays them from the slot: a client resumes from any cursor in the window.
    package func flush() -> SinkProgress {
        state.withLock { state in
            state.window.expire()
            return .delivered(through: state.window.releasedThrough)
        }
    }

    private func enqueue(_ frame: ByteBuffer, to id: UInt64, in state: inout State, cursor: String? = nil, wakes: inout [ClientQueue]) {
        guard let client = state.clients[id] else { return }
        let queued = client.control.queued
        if queued > 0, queued + frame.readableBytes > queueByteLimit {
            end(id, .tooSlow, in: &state)
            return
        }
        client.control.enqueued(frame.readableBytes)
        switch client.queue.yield(.frame(frame, cursor: cursor)) {
        case .enqueued(let wake): if wake { wakes.append(client.queue) }
        case .dropped:
            client.control.dequeued(frame.readableBytes)
            end(id, .tooSlow, in: &state)
        case .terminated: client.control.dequeued(frame.readableBytes)
        }
    }

    private func end(_ id: UInt64, _ reason: EndReason, in state: inout State) {
        guard let client = state.clients.removeValue(forKey: id) else { return }
        client.control.raise(reason)
        client.queue.finish()
        client.control.onEnd?(reason)
        switch reason {
        case .tooSlow: metrics?.clientsCutOff.increment()
        case .credentialExpired: metrics?.clientsExpired.increment()
        case .shuttingDown: break
        }
        metrics?.clients.set(state.clients.count)
    }
}
