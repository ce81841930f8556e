import ArgumentParser
import Foundation
import Hummingbird
import Logging
import RowcastCore
import RowcastPostgres
import RowcastServer
import RowcastWire

/// `rowcast serve`: capture and serve over WebSocket.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Capture changes and serve them to browsers over WebSocket.",
        discussion: """
            Example:
              rowcast serve --mode replication --table public.orders --port 8080
            Then open http://127.0.0.1:8080/ or connect a WebSocket to ws://127.0.0.1:8080/ws.
            Beyond this machine, with JWTs whose tables claim limits each client:
              ROWCAST_JWT_SECRET=$(openssl rand -base64 32) rowcast serve --host 0.0.0.0
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: ArgumentHelp("Address to listen on.", valueName: "host"))
    var host: String?

    @Option(name: .long, help: ArgumentHelp("Port to listen on.", valueName: "port"))
    var port: Int?

    @Option(name: .long, help: ArgumentHelp("Recent records kept so that clients can resume with since.", valueName: "records"))
    var resumeWindow: Int = ServerOptions.defaults.resumeWindow

    @Option(name: .long, help: ArgumentHelp("The most bytes of frames the resume window holds (\(ServerOptions.defaults.resumeWindowBytes >> 20) MiB by default).", valueName: "bytes"))
    var resumeWindowBytes: Int = ServerOptions.defaults.resumeWindowBytes

    @Option(name: .long, help: ArgumentHelp("The oldest record, in seconds, the resume window keeps.", valueName: "seconds"))
    var resumeWindowAge: Double = ServerOptions.defaults.resumeWindowAge.seconds

    @Option(name: .long, help: ArgumentHelp("Replication mode: where the resume window is kept on disk, so that the slot confirms what is kept there and holds back no WAL for the window (default: $XDG_STATE_HOME/rowcast, else ~/.local/state/rowcast; a directory per database and slot inside).", valueName: "directory"))
    var windowDir: String?

    @Option(name: .long, help: ArgumentHelp("Replication mode: when the window log is flushed to the disk: always (the default: before the slot confirms it; survives the machine crashing), second (at most once a second; the slot confirms only what was flushed), never (survives serve crashing; a machine crash costs the window, never a wrong one).", valueName: "always|second|never"))
    var windowFsync: WindowLog.SyncPolicy?

    @Option(name: .long, help: ArgumentHelp("Replication mode: when the slot is lost (invalidated by max_slot_wal_keep_size, or dropped): wait (the default) names it and captures nothing until a slot of that name is made again; recreate makes a new one and carries on (clients resuming from before it get cursor_expired, reason slot_lost).", valueName: "wait|recreate"))
    var onSlotLost: ReplicationCapture.SlotLostPolicy?

    @Option(name: .long, help: ArgumentHelp("The most bytes queued for one client before it is cut off as too slow (\(ServerOptions.defaults.clientQueueBytes >> 20) MiB by default; replays are read from the window as the client drains).", valueName: "bytes"))
    var clientQueueBytes: Int = ServerOptions.defaults.clientQueueBytes

    @Option(name: .long, help: ArgumentHelp("A browser origin allowed on /ws, /events and /socket.io/ besides the page's own (repeatable; * allows any).", valueName: "origin"))
    var allowOrigin: [String] = []

    @Option(name: .long, help: ArgumentHelp("A host name requests may name besides the listening address and loopback names, e.g. a proxy's (repeatable).", valueName: "host"))
    var allowHost: [String] = []

    @Option(name: .long, help: ArgumentHelp("A shared secret clients must present (?token= or Authorization: Bearer); prefer ROWCAST_TOKEN.", valueName: "token"))
    var token: String?

    @Option(name: .long, help: ArgumentHelp("Accept JWTs signed with this HS256 secret; a tables claim limits what a client sees. Prefer ROWCAST_JWT_SECRET.", valueName: "secret"))
    var jwtSecret: String?

    @Option(name: .customLong("socketio-ping-interval"), help: ArgumentHelp("Socket.IO: seconds between the server's heartbeat pings (socket.io's default).", valueName: "seconds"))
    var socketIOPingInterval: Double = ServerOptions.defaults.socketIO.pingInterval.seconds

    @Option(name: .customLong("socketio-ping-timeout"), help: ArgumentHelp("Socket.IO: seconds a client has to answer a ping before its session closes.", valueName: "seconds"))
    var socketIOPingTimeout: Double = ServerOptions.defaults.socketIO.pingTimeout.seconds

    @Option(name: .customLong("socketio-recovery"), help: ArgumentHelp("Socket.IO: seconds a dropped session can be recovered, with the records it missed.", valueName: "seconds"))
    var socketIORecovery: Double = ServerOptions.defaults.socketIO.recoveryWindow.seconds

    @Option(name: .long, help: ArgumentHelp("Seconds a connection may go without a whole request (headers included) before it is closed; answers being streamed and WebSockets are not idle.", valueName: "seconds"))
    var idleTimeout: Double = ServerOptions.defaults.idleTimeout.seconds

    @Option(name: .customLong("socketio-max-pending"), help: ArgumentHelp("Socket.IO: sessions without a successful CONNECT held at once; past it the oldest of the address holding the most is closed.", valueName: "sessions"))
    var socketIOMaxPending: Int = ServerOptions.defaults.socketIO.maxPendingSessions

    @Option(name: .customLong("socketio-max-pending-per-address"), help: ArgumentHelp("Socket.IO: the same, from one client address (a proxy in front counts as one).", valueName: "sessions"))
    var socketIOMaxPendingPerAddress: Int = ServerOptions.defaults.socketIO.maxPendingSessionsPerAddress

    @Option(name: .long, help: ArgumentHelp("Connections held at once; past it a new one gets 503 (default: the open-file limit less 256; 0: none).", valueName: "connections"))
    var maxConnections: Int?

    @Option(name: .long, help: ArgumentHelp("Connections held at once from one address, an IPv6 /64 counting as one (a proxy in front counts as one: raise it, or 0 for none).", valueName: "connections"))
    var maxConnectionsPerAddress: Int = ServerOptions.defaults.maxConnectionsPerAddress

    @Option(name: .long, help: ArgumentHelp("Messages a client may send a second (as many at once); one sending faster is read no faster (0: no limit).", valueName: "messages"))
    var clientMessagesPerSecond: Int = ServerOptions.defaults.clientMessagesPerSecond

    @Option(name: .long, help: ArgumentHelp("HTTP requests taken from one address a second (as many at once), over all its connections; one sending faster waits its turn, up to 10 s, or then gets 429 (0: no limit).", valueName: "requests"))
    var requestsPerSecondPerAddress: Int = ServerOptions.defaults.requestsPerSecondPerAddress

    @Option(name: .long, help: ArgumentHelp("Snapshots (subscribe with \"snapshot\": true) read at once, each on a connection of its own; past it a client gets too_many_snapshots.", valueName: "snapshots"))
    var maxSnapshots: Int = ServerOptions.defaults.snapshots.concurrent

    @Option(name: .long, help: ArgumentHelp("Snapshots read at once for one client address.", valueName: "snapshots"))
    var maxSnapshotsPerAddress: Int = ServerOptions.defaults.snapshots.perAddress

    @Option(name: .long, help: ArgumentHelp("Rows one snapshot may send; past it the client gets snapshot_too_large.", valueName: "rows"))
    var snapshotRows: Int = ServerOptions.defaults.snapshots.rows

    @Option(name: .long, help: ArgumentHelp("Seconds one snapshot's transaction may stay open while its client reads it (it holds back vacuum meanwhile); past it the client gets snapshot_failed.", valueName: "seconds"))
    var snapshotSeconds: Double = ServerOptions.defaults.snapshots.seconds

    @Flag(name: .long, help: "Allow listening on a non-loopback address without client authentication.")
    var insecureNoAuth = false

    func run() async throws {
        let logger = try connection.bootstrapLogging()
        let host = host ?? ServerOptions.defaults.host
        let port = port ?? ServerOptions.defaults.port
        guard (0...65535).contains(port) else {
            throw CommandFailure.usage("--port must be a number from 0 to 65535")
        }
        if token?.isEmpty == true || jwtSecret?.isEmpty == true {
            throw CommandFailure.usage("--token and --jwt-secret take a non-empty secret")
        }
        // 32 bytes: the SHA-256 digest's size, which jwt-kit also expects of an HS256 key.
        if let jwtSecret, jwtSecret.utf8.count < 32 {
            throw CommandFailure.usage("--jwt-secret needs at least 32 bytes so that tokens cannot be guessed (e.g. openssl rand -base64 32)")
        }
        let auth = await ClientAuthenticator(token: token, jwtSecret: jwtSecret)
        guard isLoopback(host) || auth.isEnabled || insecureNoAuth else {
            throw CommandFailure.usage(
                "refusing to serve unauthenticated clients on \(host) (fix: pass --token or --jwt-secret, listen on 127.0.0.1 behind a proxy that authenticates, or pass --insecure-no-auth)"
            )
        }
        guard resumeWindow >= 0 else { throw CommandFailure.usage("--resume-window takes a number of records, 0 or more") }
        guard resumeWindowAge > 0 else { throw CommandFailure.usage("--resume-window-age takes a number of seconds above 0") }
        guard resumeWindowBytes > 0, clientQueueBytes > 0 else {
            throw CommandFailure.usage("--resume-window-bytes and --client-queue-bytes take a number of bytes above 0")
        }
        guard socketIOPingInterval > 0, socketIOPingTimeout > 0, socketIORecovery >= 0 else {
            throw CommandFailure.usage("--socketio-ping-interval and --socketio-ping-timeout take a number of seconds above 0, --socketio-recovery 0 or more")
        }
        // Browsers hold a timer of at most 2^31 - 1 ms (24.8 days): engine.io-client
        // waits pingInterval + pingTimeout, and a longer wait fires at once, closing
        // every session. A day each keeps the sum within it.
        guard socketIOPingInterval <= 86_400, socketIOPingTimeout <= 86_400 else {
            throw CommandFailure.usage("--socketio-ping-interval and --socketio-ping-timeout take at most 86400 seconds (a day): socket.io clients cannot wait longer")
        }
        guard idleTimeout > 0 else { throw CommandFailure.usage("--idle-timeout takes a number of seconds above 0") }
        guard socketIOMaxPending > 0, socketIOMaxPendingPerAddress > 0 else {
            throw CommandFailure.usage("--socketio-max-pending and --socketio-max-pending-per-address take a number of sessions above 0")
        }
        guard (maxConnections ?? 0) >= 0, maxConnectionsPerAddress >= 0, clientMessagesPerSecond >= 0, requestsPerSecondPerAddress >= 0 else {
            throw CommandFailure.usage(
                "--max-connections, --max-connections-per-address, --client-messages-per-second and --requests-per-second-per-address take a number, 0 (no limit) or more"
            )
        }
        guard snapshotSeconds > 0, snapshotSeconds.isFinite else { throw CommandFailure.usage("--snapshot-seconds takes a number of seconds above 0") }
        guard maxSnapshots >= 0, maxSnapshotsPerAddress >= 0, snapshotRows >= 0 else {
            throw CommandFailure.usage("--max-snapshots, --max-snapshots-per-address and --snapshot-rows take a number, 0 (no snapshots) or more")
        }
        for name in allowHost where RequestHost(option: name) == nil {
            throw CommandFailure.usage("--allow-host \(name) is not a host name or address (fix: a name such as rowcast.example.com, or an address; no scheme, path or wildcard)")
        }
        let openFiles = raiseOpenFileLimit(logger: logger)
        // The window's directory is checked before anything is made in the database
        // (a slot made and then left behind by a failed start would hold back WAL).
        let windowBase = try Self.checkWindowDirectory(windowDir)
        let source = try capture.connect(connection.settings, onSlotLost: onSlotLost ?? .wait, logger: logger)
        let mode = source.mode.rawValue
        let options = {
            var options = ServerOptions(
                host: host, port: port, resumeWindow: resumeWindow,
                slot: source.mode == .replication ? capture.slot : nil
            )
            options.allowedOrigins = Set(allowOrigin)
            options.allowedHosts = allowHost
            options.resumeWindowBytes = resumeWindowBytes
            options.resumeWindowAge = .seconds(saturating: resumeWindowAge)
            options.clientQueueBytes = clientQueueBytes
            options.auth = auth
            options.socketIO.pingInterval = .seconds(saturating: socketIOPingInterval)
            options.socketIO.pingTimeout = .seconds(saturating: socketIOPingTimeout)
            options.socketIO.recoveryWindow = .seconds(saturating: socketIORecovery)
            options.idleTimeout = .seconds(saturating: idleTimeout)
            options.socketIO.maxPendingSessions = socketIOMaxPending
            options.socketIO.maxPendingSessionsPerAddress = socketIOMaxPendingPerAddress
            options.maxConnections = maxConnections ?? openFiles.map(ServerOptions.connectionLimit(openFiles:)) ?? options.maxConnections
            options.maxConnectionsPerAddress = maxConnectionsPerAddress
            options.clientMessagesPerSecond = clientMessagesPerSecond
            options.requestsPerSecondPerAddress = requestsPerSecondPerAddress
            options.snapshots.concurrent = maxSnapshots
            options.snapshots.perAddress = maxSnapshotsPerAddress
            options.snapshots.rows = snapshotRows
            options.snapshots.seconds = snapshotSeconds
            return options
        }()
        var window: OpenedWindowLog?
        if let replication = source as? ReplicationCapture {
            let directory = windowBase + "/" + Self.windowSubdirectory(replication.streamName)
            let policy = windowFsync ?? .always
            let state = replication.state
            do {
                window = try OpenedWindowLog.open(
                    directory: directory, identity: replication.streamIdentity, policy: policy,
                    slot: .init(
                        confirmed: replication.startConfirmed, origin: replication.origin, isNew: replication.slotIsNew,
                        recreated: replication.slotRecreated, serverWAL: replication.serverWALAtStart
                    ),
                    // A table no longer captured (taken off --table or the publication) is not served from the past either.
                    captures: { record in record.schema.flatMap { schema in record.table.map { state.captures(TableName(schema: schema, name: $0)) } } ?? true }
                ) { line, warning in
                    if warning { logger.warning("\(line)") } else { logger.info("\(line)") }
                }
            } catch {
                throw CommandFailure.failed(error.description)
            }
            logger.info("resume window kept in \(directory) (--window-fsync \(policy.rawValue))")
            // Row rules need each update's old row, which only REPLICA IDENTITY FULL sends.
            if jwtSecret != nil, let captured = state.capturedTables, let whole = state.wholeOldRows {
                let partial = captured.subtracting(whole).sorted()
                if !partial.isEmpty {
                    logger.info(
                        "tokens with a row rule (rows claim) on \(partial.map(\.description).joined(separator: ", ")) are refused: replication mode needs REPLICA IDENTITY FULL there (fix: ALTER TABLE \(partial[0].quoted) REPLICA IDENTITY FULL)"
                    )
                }
            }
        } else if windowDir != nil || windowFsync != nil || onSlotLost != nil {
            logger.warning("--window-dir, --window-fsync and --on-slot-lost apply to replication mode only; trigger mode keeps its window in memory")
        }
        try await runServer(host: host, port: port) {
            try await buildApplication(
                options: options,
                source: source,
                onServerRunning: { port in logger.info("serving \(mode) mode on http://\(host):\(port)/") },
                window: window,
                snapshots: PostgresSnapshotSource(connection: connection.settings, followsWAL: source.mode == .replication),
                logger: logger
            ).runUntilSignalled()
        }
    }
}

extension Serve {
    /// `$XDG_STATE_HOME/rowcast`, else `~/.local/state/rowcast`, else `./rowcast-state`.
    static func defaultWindowDirectory() -> String {
        let environment = ProcessInfo.processInfo.environment
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") { return state + "/rowcast" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.local/state/rowcast" }
        return "rowcast-state"
    }

    /// `--window-dir` (or the default), made if missing: a directory this process can
    /// write, or one line naming what is wrong (exit 1).
    static func checkWindowDirectory(_ given: String?) throws -> String {
        if let given, given.isEmpty { throw CommandFailure.usage("--window-dir takes a directory (it was empty)") }
        let base = given ?? defaultWindowDirectory()
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: base, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw CommandFailure.failed("--window-dir \(base) is not a directory (fix: name a directory, or one to be made)") }
        } else {
            do {
                try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw CommandFailure.failed("cannot make the window directory \(base): \((error as NSError).localizedFailureReason ?? error.localizedDescription) (fix: choose a writable directory with --window-dir)")
            }
        }
        guard access(base, W_OK | X_OK) == 0 else {
            throw CommandFailure.failed("cannot write the window directory \(base): \(String(cString: strerror(errno))) (fix: choose a writable directory with --window-dir)")
        }
        return base
    }

    /// A directory name for one stream (`system/database/slot`): its letters, digits,
    /// `-` and `_` kept, everything else written as `%XX`; past 200 bytes (a file name
    /// holds 255), its first 150 and a hash of the whole.
    static func windowSubdirectory(_ identity: String) -> String {
        var name = ""
        for byte in identity.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"):
                name.append(Character(Unicode.Scalar(byte)))
            case UInt8(ascii: "/"):
                name.append(".")
            default:
                name += "%" + String(byte, radix: 16, uppercase: true).leftPadding(2)
            }
        }
        guard name.utf8.count > 200 else { return name }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in identity.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(name.prefix(150)) + "-" + String(hash, radix: 16)
    }
}

extension WindowLog.SyncPolicy: ExpressibleByArgument {}
extension ReplicationCapture.SlotLostPolicy: ExpressibleByArgument {}

extension String {
    fileprivate func leftPadding(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// Runs the server; a failure to listen becomes one line with the fix (exit 1).
func runServer(host: String, port: Int, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let failure as CommandFailure {
        throw failure
    } catch {
        throw CommandFailure.failed(listenFailure(error, host: host, port: port))
    }
}

/// Each client holds a socket: raise the soft limit on open files to the hard one, as
/// servers built for many connections do, rather than refuse clients past 1,024.
/// Returns the limit in effect (nil when it cannot be read).
@discardableResult
func raiseOpenFileLimit(logger: Logger) -> UInt64? {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    guard getrlimit(resource, &limit) == 0 else { return nil }
    guard limit.rlim_cur < limit.rlim_max else { return UInt64(limit.rlim_cur) }
    let soft = limit.rlim_cur
    limit.rlim_cur = limit.rlim_max
    if setrlimit(resource, &limit) == 0 {
        logger.debug("raised the open-file limit from \(soft) to \(limit.rlim_max)")
        return UInt64(limit.rlim_max)
    }
    logger.warning("cannot raise the open-file limit from \(soft) (at most about \(soft) clients); raise it with ulimit -n")
    return UInt64(soft)
}

/// Whether `host` only accepts connections from this machine.
/// Whether `host` (as given with `--host`) is this machine alone: `localhost`, `::1` or
/// a 127/8 address, parsed, never by prefix (`127.example.com` may be anywhere).
func isLoopback(_ host: String) -> Bool {
    let parsed = RequestHost(option: host)
    return parsed == .name("localhost") || parsed == .ipv6("::1") || parsed?.isLoopbackIPv4 == true
}
