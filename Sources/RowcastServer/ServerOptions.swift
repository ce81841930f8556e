import RowcastCore
import RowcastWire

/// What `rowcast serve` needs beyond the capture source.
/// Every default rowcast serves with lives here: `serve`'s flags, the demo and the
/// tests start from these values.
package struct ServerOptions: Sendable {
    /// The values `rowcast serve` uses for every flag not given.
    package static let defaults = ServerOptions()

    package var host = "127.0.0.1"
    package var port = 8080
    /// Frames that may wait for one client before it is cut off; nil: one per 256
    /// bytes of ``clientQueueBytes`` (at least 4,096), so that a transaction of 65,536
    /// records never ends a client that keeps reading for its count, while what a
    /// stalled client's queue holds besides the shared frames stays a few MB.
    package var clientQueueLimit: Int?
    /// The frame limit in force (``clientQueueLimit``).
    package var clientQueueFrames: Int { clientQueueLimit ?? max(4096, clientQueueBytes / 256) }
    /// Bytes of frames that may wait for one client before it is cut off. A client's
    /// own, independent of the resume window (replays are read from the window as the
    /// client drains): a burst of ~80,000 typical records is absorbed by a client that
    /// keeps reading, and a client that stops reading pins at most this much.
    package var clientQueueBytes = 16 << 20
    /// How long a cut-off or expired client's connection may take to close before it
    /// is closed outright (its peer may never read the close frame).
    package var stalledClientGrace: Duration = .seconds(5)
    /// Recent records kept so that clients can resume with `since`.
    /// Snapshots (`subscribe` with `"snapshot": true`): how many at once, from one
    /// address, and how many rows one may send (`--max-snapshots`,
    /// `--max-snapshots-per-address`, `--snapshot-rows`).
    package var snapshots = SnapshotRunner.Limits()
    package var resumeWindow = 1000
    /// The resume window's byte budget.
    package var resumeWindowBytes = 64 << 20
    /// The oldest record the resume window keeps.
    package var resumeWindowAge: Duration = .seconds(600)
    /// Connections the kernel may hold before rowcast accepts them (capped by
    /// `net.core.somaxconn`). A burst of arrivals (a proxy reconnecting every client)
    /// past the queue has its SYNs dropped and retried a second later.
    package var listenBacklog = 4096
    /// How long a connection may go without a whole request head (on connect, and
    /// between requests) before it is closed.
    package var idleTimeout: Duration = .seconds(30)
    /// The largest frame a client may send.
    package var maxClientFrameSize = 64 * 1024
    /// How often a WebSocket is pinged; one whose pong has not been read by the next
    /// ping is closed (nil: never; tests whose client waits on a starved machine).
    package var webSocketPingInterval: Duration? = .seconds(30)
    /// Connections held at once; past it a new one is answered 503 and closed. `serve`
    /// derives it from the open-file limit (``connectionLimit(openFiles:)``); 0: none.
    package var maxConnections = 10_000
    /// Connections held at once from one address (an IPv6 /64); 0: none. A proxy in
    /// front counts as one address: behind one, raise it or set 0 and limit there.
    package var maxConnectionsPerAddress = 1_000
    /// Messages a client's connection is read at, at most, with as many at once: a
    /// client that sends faster waits (its connection is read no faster), so no
    /// client's requests (a `subscribe` with `last` scans the resume window) take more
    /// than their share of the broadcaster. Counts `/ws` frames and Socket.IO packets;
    /// 0: no limit.
    package var clientMessagesPerSecond = 20
    /// HTTP requests taken from one address a second (as many at once), over all its
    /// connections: one that sends faster waits its turn (``AddressPace``); 0: no limit.
    package var requestsPerSecondPerAddress = 100
    /// Replication: the slot, reported by `/status`.
    package var slot: String?
    /// How often `/events` sends a comment line on a quiet stream.
    package var serverSentEventsHeartbeat: Duration = .seconds(15)
    /// Browser origins allowed on `/ws`, `/events` and `/socket.io/` besides the page's
    /// own (`*` allows any). Requests without an `Origin` header (not from a browser) pass.
    package var allowedOrigins: Set<String> = []
    /// Host names requests may name besides the address rowcast listens on and
    /// loopback names (a proxy's public name, say).
    package var allowedHosts: [String] = []
    /// Socket.IO's heartbeat and how long a dropped session stays recoverable.
    package var socketIO = SocketIOSettings()
    /// Who may connect to `/ws`, `/events`, `/status`, `/metrics` and join on
    /// `/socket.io/`, and what they see.
    package var auth: ClientAuthenticator = .disabled

    package init() {}

    /// The defaults, but for these.
    package init(host: String? = nil, port: Int? = nil, resumeWindow: Int? = nil, slot: String? = nil) {
        if let host { self.host = host }
        if let port { self.port = port }
        if let resumeWindow { self.resumeWindow = resumeWindow }
        self.slot = slot
    }
}

extension ServerOptions {
    /// The connections `serve` can hold with `openFiles` descriptors: each connection
    /// takes one, and 256 are kept for PostgreSQL, logs and the connections being
    /// refused (accepting one to answer 503 takes a descriptor for a moment).
    package static func connectionLimit(openFiles: UInt64) -> Int {
        let usable = openFiles > 512 ? openFiles - 256 : openFiles / 2
        return Int(clamping: max(usable, 1))
    }
}

extension Duration {
    /// In seconds, for flags that take them.
    package var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// Socket.IO's timings (`rowcast serve --socketio-…`).
package struct SocketIOSettings: Sendable {
    /// socket.io's defaults.
    package var pingInterval: Duration = .seconds(25)
    package var pingTimeout: Duration = .seconds(20)
    /// How long a disconnected session can be recovered (socket.io's
    /// `maxDisconnectionDuration`).
    package var recoveryWindow: Duration = .seconds(120)
    /// How long a session may go without joining the namespace (socket.io's
    /// `connectTimeout`): without credentials, it holds nothing for longer.
    package var connectTimeout: Duration = .seconds(45)
    /// Sessions that have not joined the namespace yet (they hold no credential) this
    /// server keeps at once, and from one address; past either a handshake is refused
    /// with 503 and the client retries, so one host cannot fill the server with them.
    package var maxPendingSessions = 1_000
    package var maxPendingSessionsPerAddress = 100

    package init() {}

    /// What Engine.IO's state machine needs of them.
    var engine: EngineIOSession.Settings {
        EngineIOSession.Settings(pingInterval: pingInterval, pingTimeout: pingTimeout, connectTimeout: connectTimeout)
    }
}
