import NIOCore
import RowcastCore
import RowcastWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Fans records out to every subscribed client.
///
/// Each record is encoded once (``EncodedRecord``) and framed once per framing that a
/// matching client speaks (``FramedRecord``): every `/ws` client shares the encoded
/// buffer itself, every SSE client one event built from it, every Socket.IO client one
/// packet. The broadcaster knows events (records, `subscribed`), never a wire format.
/// Each client has a queue bounded in frames and in bytes; a client whose queue is full
/// is cut off (its session closes with 1013 and the last cursor it was sent, and its
/// connection is closed outright if even that cannot be written) so that it never slows
/// capture or the other clients. `deliver` never blocks.
package final class Broadcaster: RecordSink {
    /// One queued item for a client's writer: bytes in the client's framing, and the
    /// record's cursor when it is one (a writer reports the last it wrote).
    package struct Outgoing: Sendable {
        package let bytes: ByteBuffer
        package let cursor: String?

        package init(_ bytes: ByteBuffer, cursor: String? = nil) {
            self.bytes = bytes
            self.cursor = cursor
        }
    }

    /// What a subscription queues before the records it replays.
    package enum Announcement: Sendable {
        /// The `subscribed` event in the client's framing (none for SSE).
        case subscribed
        /// A message of the transport's own (Socket.IO's CONNECT answer when a
        /// reconnect recovers its session, which recovery keeps invisible to the page).
        case message(ByteBuffer)
    }

    /// Why the broadcaster ended a client's queue before the client left.
    package enum EndReason: UInt8, Sendable {
        /// It fell `queueLimit` frames behind.
        case tooSlow = 1
        /// Its credential expired.
        case credentialExpired = 2
        /// The server is shutting down.
        case shuttingDown = 3
        /// The replication slot was lost and a new one streams: changes in between
        /// were missed, and nothing from before can be resumed.
        case slotLost = 4
    }

    struct Client {
        let queue: ClientQueue
        let control: ClientControl
        let framing: Framing
        /// What the client asked for; nil until it subscribes.
        var subscription: Subscription?
        /// A `since` newer than anything published yet (a client coming from a node
        /// further ahead, or back before this one rebuilt its window): records up to
        /// it are the client's already and are skipped.
        var skipThrough: Cursor?
        /// Set while the client replays from the resume window: where its replay goes
        /// on. Live records skip it until the replay reaches the window's newest record.
        var replay: Replay?
        /// Set while a snapshot is read for the client (``SnapshotRunner``): live records
        /// skip it until the snapshot ends and a replay from its boundary begins.
        var snapshot: SnapshotGate?
    }

    /// Where a replay goes on: after a cursor (`since`, or the last record queued), or
    /// from one (the oldest of the newest `last` matches).
    enum Replay: Equatable {
        case after(Cursor)
        case from(Cursor)
    }

    struct State {
        var nextID: UInt64 = 0
        var clients: [UInt64: Client] = [:]
        /// The clients with a subscription: the only ones a record is matched against, so
        /// sessions that never subscribe (a Socket.IO handshake that never joins) cost
        /// capture nothing.
        var subscribed: Set<UInt64> = []
        /// Clients matched against records since start (for tests of the above).
        var examined: UInt64 = 0
        /// Registered and not yet unregistered: includes clients ended but still closing.
        var connections: Set<UInt64> = []
        /// How to close each connection outright, for those registered with one, until
        /// the connection has closed (``closeStragglers()``): its session may end and
        /// unregister while the connection still waits for a peer that vanished.
        var closers: [UInt64: @Sendable () -> Void] = [:]
        /// What clients ended before they left were subscribed to, until they leave
        /// (a Socket.IO session keeps it recoverable).
        var endedSubscriptions: [UInt64: Subscription] = [:]
        var recordsSent: UInt64 = 0
        var lastCursor: Cursor?
        var window = ResumeWindow(limit: 0, byteLimit: 0)
        var closing = false
        /// Where a new slot began after the old one was lost: cursors before it missed changes.
        var lostBefore: Cursor?
        /// Records delivered since the log last let go of old segments.
        var sinceRelease = 0
        /// Which subscribed clients each record is matched against (``ClientIndex``).
        var index = ClientIndex()
        /// The clients replaying from the window (each record checks the window still
        /// holds where they are).
        var replaying: Set<UInt64> = []
        /// The candidates of the record being delivered, kept between records so that
        /// its storage is not allocated again for each.
        var candidates: [UInt64] = []
        /// The ``CaptureState/catalogVersion`` every row rule subscription was last
        /// checked at (``Broadcaster/recheckRules(of:in:wakes:)``).
        var rulesCheckedAt: UInt64 = 0

        /// Gives client `id` its subscription and matches records against it.
        mutating func subscribe(_ id: UInt64, to subscription: Subscription) {
            guard clients[id] != nil else { return }
            clients[id]?.subscription = subscription
            subscribed.insert(id)
            index.add(id, subscription)
        }

        /// Stops matching records against client `id` (and forgets its subscription,
        /// unless `keepingSubscription`).
        mutating func unsubscribe(_ id: UInt64, keepingSubscription: Bool = false) {
            if !keepingSubscription { clients[id]?.subscription = nil }
            subscribed.remove(id)
            index.remove(id)
            setReplay(id, nil)
        }

        /// Where client `id`'s replay goes on (nil: it is live).
        mutating func setReplay(_ id: UInt64, _ replay: Replay?) {
            clients[id]?.replay = replay
            if replay != nil, clients[id] != nil { replaying.insert(id) } else { replaying.remove(id) }
        }
    }

    /// Where the window is kept on disk, so that the slot confirms what is kept there
    /// rather than what the window let go (nil: trigger mode, and tests).
    let log: WindowLog?
    /// What the log held at start. The slot resends from its confirmed position, so the
    /// capture hands those records again: each is skipped if the log holds the same
    /// (the same cursor and the same record, by a fingerprint of all of it), and
    /// anything up to the log's origin is skipped as before the window. One that
    /// differs means the log is another history's (a restore, a failover): the window
    /// starts again just before it (``streamRestarted(after:)``).
    private struct Restored {
        let through: Cursor
        let origin: Cursor?
        let fingerprints: [Cursor: UInt64]
    }

    /// FNV-1a of the record's binary form: a resent record is the one the log holds.
    static func fingerprint(_ record: ChangeRecord) -> UInt64 {
        var bytes: [UInt8] = []
        record.appendBinary(to: &bytes)
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }
    private let restored: Mutex<Restored?>
    /// Says when the log turned out to be another history's.
    private let onDivergence: (@Sendable (String) -> Void)?
    /// What the log kept durably as of the last flush (``RecordSink/keptPosition``).
    private let kept = Mutex<UInt64?>(nil)
    /// The log failed and was given up: said once.
    private let logFailureSaid = Atomic<Bool>(false)
    /// Called once when the window log fails (a full disk): one line for the log.
    private let onLogFailure: (@Sendable (String) -> Void)?
    /// How far the capture has handed records over: the WAL position it passed
    /// (replication) and the snapshot whose transactions it delivered (trigger), which
    /// a snapshot waits for before it sets its boundary.
    let horizon = Mutex<(position: UInt64, visible: TransactionSnapshot?)>((0, nil))
    /// Reads snapshots for clients that ask for one (nil: this server takes none).
    let snapshots = Mutex<SnapshotRunner?>(nil)
    /// What the capture knows of the catalog: row rules are checked again when it
    /// changes (nil: tests without a capture).
    let catalog: CaptureState?
    /// Told when the catalog changed under clients' row rules and tables were dropped
    /// from their view (a line for the log).
    private let onRulesDropped: (@Sendable (String) -> Void)?
    /// How many frames may wait for one client before it is cut off.
    package let queueLimit: Int
    /// How many bytes of frames may wait for one client before it is cut off (a single
    /// frame larger than this still goes to a client whose queue is empty).
    package let queueByteLimit: Int
    let state = Mutex(State())
    let metrics: ServerMetrics?
    /// Called once ``closeAll()`` ended every client (``whenClosing(_:)``).
    private let closingActions = Mutex<[@Sendable () -> Void]>([])

    /// - Parameters:
    ///   - options: the queue and resume-window limits (``ServerOptions`` holds every
    ///     default). A client's budget is its own: a replay is read from the window as
    ///     the client drains, never copied into its queue at once.
    ///   - origin: a cursor before every record the capture will deliver (see
    ///     ``CaptureSource/origin``): `subscribed` names it until the first record, and
    ///     resuming from it replays everything the window still holds.
    ///   - metrics: where to count records, clients and cut-offs.
    ///   - log: where the window is kept on disk (``WindowLog``); `restored`, what it held
    ///     at start, is the window's first records (their cursors are skipped when the
    ///     capture hands them again), and `origin` must be the log's.
    package init(
        options: ServerOptions, origin: Cursor? = nil, metrics: ServerMetrics? = nil, log: WindowLog? = nil,
        restored: [(record: ChangeRecord, at: Int64)] = [], lostBefore: Cursor? = nil,
        onLogFailure: (@Sendable (String) -> Void)? = nil, onDivergence: (@Sendable (String) -> Void)? = nil,
        catalog: CaptureState? = nil, onRulesDropped: (@Sendable (String) -> Void)? = nil
    ) {
        self.catalog = catalog
        self.onRulesDropped = onRulesDropped
        self.queueLimit = max(options.clientQueueFrames, 16)
        self.queueByteLimit = max(options.clientQueueBytes, 1)
        self.metrics = metrics
        self.log = log
        self.onLogFailure = onLogFailure
        self.onDivergence = onDivergence
        let through = restored.last?.record.cursor ?? (log != nil ? origin : nil)
        var fingerprints: [Cursor: UInt64] = [:]
        for (record, _) in restored { fingerprints[record.cursor] = Self.fingerprint(record) }
        self.restored = Mutex(through.map { Restored(through: $0, origin: origin, fingerprints: fingerprints) })
        state.withLock { state in
            state.window = ResumeWindow(
                limit: options.resumeWindow, byteLimit: options.resumeWindowBytes, ageLimit: options.resumeWindowAge, origin: origin
            )
            state.lastCursor = origin
            state.lostBefore = lostBefore
            // Each record at the instant it was taken, as far back as the wall clock says.
            let (wallNow, now) = (Self.wallMillis(), ContinuousClock.now)
            for (record, at) in restored {
                state.window.append(EncodedRecord(record), at: now - .milliseconds(max(0, wallNow - at)))
                state.lastCursor = record.cursor
            }
            state.window.expire(now: now)
        }
    }

    /// Whether `record` is new, not one the log restored and the slot resent: see
    /// ``Restored``. A resent record the log does not hold as it is starts the window
    /// again, and is new.
    private func isNew(_ record: ChangeRecord) -> Bool {
        let verdict = restored.withLock { restored -> Bool? in
            guard let current = restored else { return true }
            guard record.cursor <= current.through else {
                restored = nil  // past what was restored: nothing more to compare
                return true
            }
            if let origin = current.origin, record.cursor <= origin { return false }
            if current.fingerprints[record.cursor] == Self.fingerprint(record) { return false }
            restored = nil
            return nil
        }
        if let verdict { return verdict }
        onDivergence?(
            "the slot resent \(record.cursor) (transaction \(record.xid.map(String.init) ?? "?")), which the window log does not hold as it is: the log is another history's (the database was restored or failed over); the resume window starts again before it, and older cursors get cursor_expired"
        )
        // Just before it: what came before it matched, so it is the same in both histories.
        let cursor = record.cursor
        let before = cursor.minor > 0
            ? Cursor(replicationMajor: cursor.major, minor: cursor.minor - 1)
            : Cursor.replication(commitLSN: cursor.major > 0 ? cursor.major - 1 : 0, index: .max)
        streamRestarted(after: before)
        return true
    }

    /// Milliseconds since 1970: when the window took a record, as the log keeps it.
    static func wallMillis() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }

    /// Registers a client that speaks `framing`. It receives updates once it
    /// subscribes. `onEnd` is called (under the broadcaster's lock: it must only
    /// schedule work) when the broadcaster ends the client, so that its connection can
    /// be closed even if its writer is stuck behind a peer that stopped reading.
    package func register(framing: Framing, onEnd: (@Sendable (EndReason) -> Void)? = nil) -> Registration {
        register(framing: framing, onEnd: onEnd, account: nil)
    }

    /// As above, and the window records matched for the client are charged to
    /// `account` (its address: ``AddressPace``) as a scan goes, a turn's worth at a
    /// time, before any reply that follows the scan is queued.
    func register(
        framing: Framing, onEnd: (@Sendable (EndReason) -> Void)?, account: ScanAccount?, closeNow: (@Sendable () -> Void)? = nil
    ) -> Registration {
        let queue = ClientQueue(limit: queueLimit)
        let (id, flag) = state.withLock { state in
            state.nextID += 1
            let id = state.nextID
            let flag = ClientControl(onEnd: onEnd, account: account, refillBelow: queueByteLimit / 4) { [weak self] in self?.refill(id) }
            if state.closing {
                queue.finish()
            } else {
                state.clients[id] = Client(queue: queue, control: flag, framing: framing, subscription: nil)
                state.connections.insert(id)
                if let closeNow { state.closers[id] = closeNow }
            }
            metrics?.clients.set(state.clients.count)
            return (id, flag)
        }
        return Registration(id: id, queue: queue, control: flag)
    }

    /// Starts (or replaces) a client's subscription and queues what `announcing` says:
    /// by default the `subscribed` reply, which names the last record published before
    /// it (every later match follows); a Socket.IO session that recovers queues its
    /// CONNECT answer instead. With `since`, the matching records after it are replayed
    /// from the resume window next, in the same critical section as going live: no gap,
    /// no repeat. With `last` instead, the newest `last` matching records the window
    /// holds come first. Returns false (and queues nothing) when `since` is older than
    /// the window.
    @discardableResult
    package func subscribe(
        _ id: UInt64, to subscription: Subscription, since: Cursor? = nil, last: Int? = nil, announcing: Announcement = .subscribed
    ) -> Bool {
        // Found before the critical section that subscribes, a chunk at a time.
        let latest = since == nil ? last.flatMap { $0 > 0 ? startOfLatest($0, matching: subscription, for: id) : nil } : nil
        var wakes: [ClientQueue] = []
        defer { for queue in wakes { queue.wake() } }
        let (subscribed, more) = state.withLock { state -> (Bool, Bool) in
            guard let client = state.clients[id] else { return (true, false) }
            state.window.expire()
            var replay: Replay?
            if let since {
                guard state.window.covers(since, lastCursor: state.lastCursor) else { return (false, false) }
                // A trigger-mode stream is one process's: a cursor beyond its newest record was
                // never issued (replication cursors ahead come from a node further on, and wait).
                if since.kind == .trigger, let newest = state.lastCursor, since.major == newest.major, since > newest { return (false, false) }
                if let last = state.lastCursor, since < last { replay = .after(since) }
            } else if let latest, let oldest = state.window.oldestCursor {
                // The window may have let the oldest of them go meanwhile: from its oldest then.
                replay = .from(max(latest, oldest))
            }
            cancelSnapshot(id, in: &state)
            subscribe(id, to: subscription, in: &state, wakes: &wakes)
            state.clients[id]?.skipThrough = since.flatMap { since in state.lastCursor.map { since > $0 } ?? true ? since : nil }
            state.setReplay(id, replay)
            client.control.setReplaying(replay != nil)
            switch announcing {
            case .message(let bytes):
                enqueue(Outgoing(bytes), to: id, in: &state, wakes: &wakes)
            case .subscribed:
                var message = ServerMessage.subscribed(subscription, cursor: state.lastCursor?.description)
                // Socket.IO's offset: a reconnect recovers from where this subscription starts.
                message.offset = (since ?? state.lastCursor)?.description
                if let bytes = client.framing.frame(message) { enqueue(Outgoing(bytes), to: id, in: &state, wakes: &wakes) }
            }
            return (true, replay != nil && refill(id, in: &state, wakes: &wakes))
        }
        if more { refill(id) }
        return subscribed
    }

    /// The most window records applying `message` can match now (before a replay
    /// reads on: what it reads after arrives later): the records after its `since`,
    /// or all of the window for a `last`. Its address pays for them ahead.
    func recordsToScan(for message: ClientMessage) -> Int {
        guard case .subscribe(_, let since, let last, _) = message else { return 0 }
        return recordsToScan(since: since, last: last)
    }

    func recordsToScan(since: Cursor?, last: Int?) -> Int {
        state.withLock { state in
            if let since { return state.window.count(after: since) }
            return (last ?? 0) > 0 ? state.window.stats().records : 0
        }
    }

    /// Queues a heartbeat for one client, in order with its updates, when its
    /// framing has one (SSE's comment line).
    package func heartbeat(_ id: UInt64) {
        var wakes: [ClientQueue] = []
        state.withLock { state in
            guard let beat = state.clients[id]?.framing.heartbeat else { return }
            enqueue(Outgoing(beat), to: id, in: &state, wakes: &wakes)
        }
        for queue in wakes { queue.wake() }
    }

    /// Ends a client whose credential expired: its session closes after what is queued.
    package func expire(_ id: UInt64) {
        state.withLock { end(id, .credentialExpired, in: &$0) }
    }

    /// Stops sending updates to a client.
    package func unsubscribe(_ id: UInt64) {
        state.withLock { state in
            cancelSnapshot(id, in: &state)
            state.unsubscribe(id)
            state.clients[id]?.control.setReplaying(false)
        }
    }

    /// Queues a frame for one client, in order with its updates.
    package func send(_ frame: ByteBuffer, to id: UInt64) {
        var wakes: [ClientQueue] = []
        state.withLock { enqueue(Outgoing(frame), to: id, in: &$0, wakes: &wakes) }
        for queue in wakes { queue.wake() }
    }

    /// Ends every client's queue for a graceful shutdown: WebSocket sessions close with
    /// 1001, SSE streams end. New clients are refused.
    package func closeAll() {
        state.withLock { state in
            state.closing = true
            for id in Array(state.clients.keys) { end(id, .shuttingDown, in: &state) }
        }
        for action in closingActions.withLock({ $0 }) { action() }
    }

    /// Closes outright every connection still open some time after ``closeAll()``: a
    /// session whose peer vanished unseen (a reset its socket never reported while the
    /// writer waited for room) would otherwise hold the server's graceful shutdown for
    /// its whole allowance (it held it 30 s). Their clients were ended already; what
    /// they had queued is lost with the connection, as for any client cut off.
    package func closeStragglers() {
        // (``connectionClosed(_:)`` forgets a connection's closer once it has closed.)
        let closers = state.withLock { state in Array(state.closers.values) }
        for close in closers { close() }
    }

    /// Forgets how to close connection `id`: it closed.
    func connectionClosed(_ id: UInt64) {
        _ = state.withLock { $0.closers.removeValue(forKey: id) }
    }

    /// Has `action` run when the server shuts down, after every client was ended.
    func whenClosing(_ action: @escaping @Sendable () -> Void) {
        closingActions.withLock { $0.append(action) }
    }

    /// Ends one client's queue because the server is shutting down (its connection's
    /// own graceful-shutdown handler calls this).
    package func shutDown(_ id: UInt64) {
        state.withLock { end(id, .shuttingDown, in: &$0) }
    }

    /// Forgets a client (its connection ended); returns what it was subscribed to, even
    /// when the broadcaster had ended it (so a Socket.IO session can be recovered after
    /// it was cut off).
    @discardableResult
    package func unregister(_ id: UInt64) -> Subscription? {
        state.withLock { state in
            state.connections.remove(id)
            let ended = state.endedSubscriptions.removeValue(forKey: id)
            state.unsubscribe(id, keepingSubscription: true)
            let client = state.clients.removeValue(forKey: id)
            client?.snapshot?.cancel()
            client?.queue.finish()
            client?.control.refundUnused()
            metrics?.clients.set(state.clients.count)
            return client.map(\.subscription) ?? ended
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

    /// Clients matched against records since start: one per subscribed client per record.
    package var clientsExamined: UInt64 { state.withLock { $0.examined } }

    /// The cursor of the last record published.
    package var lastCursor: Cursor? { state.withLock { $0.lastCursor } }

    // MARK: - RecordSink

    package func deliver(_ record: ChangeRecord) {
        if log != nil, !isNew(record) { return }
        log?.append(record, at: Self.wallMillis())
        // Replication: every transaction that committed before this one's commit has been
        // handed over (the stream is in commit order), which a snapshot waits for.
        if let lsn = record.lsn { horizon.withLock { $0.position = max($0.position, lsn) } }
        let encoded = EncodedRecord(record)
        var wakes: [ClientQueue] = []
        let (sent, release) = state.withLock { state in
            var sent = 0
            // The capture changed what it knows of the catalog before this record.
            if let catalog, case let version = catalog.catalogVersion, version != state.rulesCheckedAt {
                state.rulesCheckedAt = version
                recheckRules(of: Array(state.subscribed), in: &state, wakes: &wakes)
            }
            state.lastCursor = record.cursor
            state.window.append(encoded)
            // The log's old segments go as the window lets go of them, not only at a
            // flush: catching up on a backlog flushes rarely.
            var release: Cursor?
            state.sinceRelease += 1
            if state.sinceRelease >= 1024 {
                state.sinceRelease = 0
                release = state.window.releasedThrough
            }
            // A replaying client reads this record from the window when it gets there,
            // unless the window let go of where it is: then it fell a window behind.
            if !state.replaying.isEmpty {
                for id in Array(state.replaying) {
                    guard let replay = state.clients[id]?.replay else { continue }
                    if !state.window.holds(replay, lastCursor: record.cursor) { end(id, .tooSlow, in: &state) }
                }
            }
            // Matched with the full record at hand: no value is copied out of the frame.
            var values = RecordValues(record)
            var candidates = state.candidates
            state.candidates = []
            candidates.removeAll(keepingCapacity: true)
            state.index.forEachCandidate(for: &values) { candidates.append($0) }
            defer { state.candidates = candidates }
            var framed = FramedRecord(encoded)
            // An update that moved a row across a client's row rule, as such clients get it.
            var leaving: FramedRecord?, entering: FramedRecord?
            for id in candidates {
                guard let client = state.clients[id] else { continue }
                state.examined += 1
                guard let subscription = client.subscription, client.snapshot == nil, client.replay == nil else { continue }
                if let skip = client.skipThrough {
                    guard record.cursor > skip else { continue }
                    state.clients[id]?.skipThrough = nil
                }
                let bytes: ByteBuffer
                switch subscription.verdict(&values) {
                case .skip: continue
                case .send: bytes = framed.bytes(for: client.framing)
                case .leave:
                    var moved = leaving ?? FramedRecord(EncodedRecord(record.leavingView))
                    bytes = moved.bytes(for: client.framing)
                    leaving = moved
                case .enter:
                    var moved = entering ?? FramedRecord(EncodedRecord(record.enteringView))
                    bytes = moved.bytes(for: client.framing)
                    entering = moved
                }
                if enqueue(Outgoing(bytes, cursor: encoded.cursorText), to: id, in: &state, wakes: &wakes) { sent += 1 }
            }
            state.recordsSent += UInt64(sent)
            return (sent, release)
        }
        if let release { log?.release(through: release) }
        for queue in wakes { queue.wake() }
        if let metrics, sent > 0 {
            metrics.recordsSent.increment(by: sent)
            metrics.bytesSent.increment(by: sent * encoded.size)
        }
    }

    /// Gives client `id` its subscription; one whose rules were checked before the
    /// catalog last moved on (a record delivered meanwhile saw the change) is checked again.
    func subscribe(_ id: UInt64, to subscription: Subscription, in state: inout State, wakes: inout [ClientQueue]) {
        state.subscribe(id, to: subscription)
        if let catalog, subscription.claimedRules != nil, subscription.catalogVersion != catalog.catalogVersion {
            recheckRules(of: [id], in: &state, wakes: &wakes)
        }
    }

    /// Client `id`'s subscription as it is now (its rules checked again since it
    /// subscribed, if the catalog moved on).
    func subscription(of id: UInt64) -> Subscription? {
        state.withLock { $0.clients[id]?.subscription }
    }

    /// Checks the row rules of clients `ids` again against the catalog as the capture
    /// knows it now (``Subscription/recheckingRules(by:columns:)``): each rule resolved
    /// in its column's type now. A table whose rule no longer applies is dropped from the
    /// client's view, and the client told with a `forbidden` error (its subscription
    /// goes on for the rest).
    func recheckRules(of ids: [UInt64], in state: inout State, wakes: inout [ClientQueue]) {
        guard let catalog else { return }
        let version = catalog.catalogVersion
        var droppedFrom: [TableName: Int] = [:]
        var why: [TableName: String] = [:]
        for id in ids {
            guard let client = state.clients[id], let subscription = client.subscription, subscription.claimedRules != nil,
                subscription.catalogVersion != version
            else { continue }
            let (checked, dropped) = subscription.recheckingRules(by: catalog)
            state.subscribe(id, to: checked)
            for (table, reason) in dropped {
                droppedFrom[table, default: 0] += 1
                why[table] = reason
                let message = "\(table) changed while subscribed (\(reason)): nothing more of it is sent; subscribe again"
                if let bytes = client.framing.frame(ServerMessage.error(code: "forbidden", message: message)) {
                    enqueue(Outgoing(bytes), to: id, in: &state, wakes: &wakes, overBudget: true)
                }
            }
        }
        for (table, count) in droppedFrom.sorted(by: { $0.key < $1.key }) {
            onRulesDropped?("\(table) changed under the row rules of \(count) client\(count == 1 ? "" : "s") (\(why[table] ?? "")): \(count == 1 ? "it gets" : "they get") nothing more of it until \(count == 1 ? "it subscribes" : "they subscribe") again")
        }
    }

    /// What the capture may forget: the records the resume window no longer holds.
    ///
    /// Everything handed to ``deliver(_:)`` is queued for each subscribed client and
    /// kept in the window, but a record is reported delivered only once the window
    /// lets it go (by count, bytes or age). So replication mode's slot keeps every
    /// record the window holds, and a `serve` restarted after SIGTERM or `kill -9`
    /// replays them from the slot: a client resumes from any cursor in the window.
    ///
    /// With a window log, what the log kept durably instead: the slot then follows the
    /// server's WAL however old the window is. A log that fails (a full disk) is given
    /// up, said once, and the window's own bound holds again.
    package func flush() -> SinkProgress {
        let released = state.withLock { state in
            state.window.expire()
            return state.window.releasedThrough
        }
        guard let log else { return .delivered(through: released) }
        log.release(through: released)
        if let durable = log.sync() {
            kept.withLock { $0 = durable.mark }
            return .delivered(through: durable.cursor)
        }
        kept.withLock { $0 = nil }
        if !logFailureSaid.exchange(true, ordering: .relaxed), let failure = log.failure {
            onLogFailure?(failure)
        }
        return .delivered(through: released)
    }

    /// The slot was lost and a new one streams after `origin`: the window starts again
    /// there (on disk too), every subscribed client is ended (it reconnects, and its
    /// cursor gets `cursor_expired` with reason `slot_lost`), and nothing from before
    /// `origin` is resumed.
    package func streamRestarted(after origin: Cursor) {
        restored.withLock { $0 = nil }
        log?.reset(origin: origin)
        kept.withLock { $0 = nil }
        state.withLock { state in
            let old = state.window
            state.window = ResumeWindow(limit: old.limit, byteLimit: old.byteLimit, ageLimit: old.ageLimit, origin: origin)
            state.lastCursor = origin
            state.lostBefore = origin
            for id in Array(state.subscribed) { end(id, .slotLost, in: &state) }
        }
    }

    /// Whether records after `cursor` were missed when the slot was lost.
    package func wasLost(before cursor: Cursor) -> Bool {
        state.withLock { state in state.lostBefore.map { cursor < $0 } ?? false }
    }

    package func passed(_ position: UInt64) {
        log?.mark(position)
        horizon.withLock { $0.position = max($0.position, position) }
    }

    package func delivered(visibleIn snapshot: TransactionSnapshot) {
        horizon.withLock { $0.visible = snapshot }
    }

    package var keptPosition: UInt64? {
        guard log != nil else { return nil }
        return kept.withLock { $0 }
    }

    /// The one way into a client's queue: within its byte budget (unless the queue is
    /// empty: one frame larger than the budget still goes) and its frame count, or the
    /// client is cut off. Returns whether the item was queued.
    ///
    /// A small message that ends what the client is owed (`snapshot_end`, a snapshot's
    /// error) may go `overBudget`: its rows waited for room, it need not.
    @discardableResult
    func enqueue(_ item: Outgoing, to id: UInt64, in state: inout State, wakes: inout [ClientQueue], overBudget: Bool = false) -> Bool {
        guard let client = state.clients[id] else { return false }
        let size = item.bytes.readableBytes
        let queued = client.control.queued
        if !overBudget, queued > 0, queued + size > queueByteLimit {
            end(id, .tooSlow, in: &state)
            return false
        }
        // Counted before the writer can take it, so never below zero.
        client.control.enqueued(size)
        switch client.queue.yield(item) {
        case .enqueued(let wake):
            if wake { wakes.append(client.queue) }
            return true
        case .dropped:
            client.control.dequeued(size)
            end(id, .tooSlow, in: &state)
        case .terminated:
            // Finished without being ended or unregistered: nothing will take from it.
            client.control.dequeued(size)
            state.unsubscribe(id)
            state.clients.removeValue(forKey: id)
            metrics?.clients.set(state.clients.count)
        }
        return false
    }

    func end(_ id: UInt64, _ reason: EndReason, in state: inout State) {
        guard state.clients[id] != nil else { return }
        state.unsubscribe(id, keepingSubscription: true)
        guard let client = state.clients.removeValue(forKey: id) else { return }
        client.snapshot?.cancel()
        if let subscription = client.subscription, state.connections.contains(id) { state.endedSubscriptions[id] = subscription }
        client.control.raise(reason)
        client.queue.finish()
        client.control.refundUnused()
        client.control.onEnd?(reason)
        switch reason {
        case .tooSlow: metrics?.clientsCutOff.increment()
        case .credentialExpired: metrics?.clientsExpired.increment()
        case .shuttingDown, .slotLost: break
        }
        metrics?.clients.set(state.clients.count)
    }
}
