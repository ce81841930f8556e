import CoreMetrics
import Prometheus
import RowcastCore
import Synchronization

/// The server's metrics, recorded through swift-metrics into a Prometheus registry of
/// its own (not the process-wide `MetricsSystem`, so that several servers, as in the
/// tests, keep separate counts), and rendered as Prometheus text by `GET /metrics`.
package final class ServerMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    /// Records handed to the broadcaster by the capture: follows the capture's own
    /// count (``CaptureState/recordsCaptured``, which `/status` reports too).
    private let recordsCaptured: CoreMetrics.Counter
    private let recordsCapturedRendered = Mutex<UInt64>(0)
    /// `update` frames queued for clients (one per client per record) and their bytes.
    let recordsSent: CoreMetrics.Counter
    let bytesSent: CoreMetrics.Counter
    /// Connected WebSocket, SSE and Socket.IO clients.
    let clients: CoreMetrics.Meter
    /// Engine.IO sessions open (Socket.IO clients, joined or not yet).
    let socketIOSessions: CoreMetrics.Meter
    /// Socket.IO reconnects that asked to recover a session: recovered, or not (the
    /// session or the offset was too old, or held by another node).
    let socketIORecovered: CoreMetrics.Counter
    let socketIONotRecovered: CoreMetrics.Counter
    /// Socket.IO handshakes refused because too many sessions were waiting to join.
    let socketIOPendingRefused: CoreMetrics.Counter
    /// Clients closed for falling behind.
    let clientsCutOff: CoreMetrics.Counter
    /// Clients closed because their token expired.
    let clientsExpired: CoreMetrics.Counter
    /// Connections answered 503 past `--max-connections` or `--max-connections-per-address`.
    let connectionsRefused: CoreMetrics.Counter
    /// Client messages that waited for their turn (`--client-messages-per-second`).
    let messagesPaced: CoreMetrics.Counter
    let requestsPaced: CoreMetrics.Counter
    /// 1 while the capture is connected to PostgreSQL.
    private let captureConnected: CoreMetrics.Meter
    /// Replication: WAL bytes between the server's current position and what rowcast
    /// confirmed (absent in trigger mode, which has no position).
    private let captureLag: CoreMetrics.Meter?
    /// The resume window: records, bytes and the oldest record's age in seconds.
    private let windowRecords: CoreMetrics.Meter
    private let windowBytes: CoreMetrics.Meter
    private let windowAge: CoreMetrics.Meter

    package init(replication: Bool) {
        let factory = PrometheusMetricsFactory(registry: registry)
        recordsCaptured = CoreMetrics.Counter(label: "rowcast_records_captured_total", factory: factory)
        recordsSent = CoreMetrics.Counter(label: "rowcast_records_sent_total", factory: factory)
        bytesSent = CoreMetrics.Counter(label: "rowcast_sent_bytes_total", factory: factory)
        clients = CoreMetrics.Meter(label: "rowcast_clients", factory: factory)
        socketIOSessions = CoreMetrics.Meter(label: "rowcast_socketio_sessions", factory: factory)
        socketIORecovered = CoreMetrics.Counter(label: "rowcast_socketio_recoveries_total", dimensions: [("result", "recovered")], factory: factory)
        socketIONotRecovered = CoreMetrics.Counter(label: "rowcast_socketio_recoveries_total", dimensions: [("result", "not_recovered")], factory: factory)
        socketIOPendingRefused = CoreMetrics.Counter(label: "rowcast_socketio_handshakes_refused_total", dimensions: [("reason", "too_many_pending")], factory: factory)
        clientsCutOff = CoreMetrics.Counter(label: "rowcast_clients_cut_off_total", factory: factory)
        clientsExpired = CoreMetrics.Counter(label: "rowcast_clients_expired_total", factory: factory)
        connectionsRefused = CoreMetrics.Counter(label: "rowcast_connections_refused_total", factory: factory)
        messagesPaced = CoreMetrics.Counter(label: "rowcast_client_messages_paced_total", factory: factory)
        requestsPaced = CoreMetrics.Counter(label: "rowcast_requests_paced_total", factory: factory)
        captureConnected = CoreMetrics.Meter(label: "rowcast_capture_connected", factory: factory)
        captureLag = replication ? CoreMetrics.Meter(label: "rowcast_capture_lag_bytes", factory: factory) : nil
        windowRecords = CoreMetrics.Meter(label: "rowcast_resume_window_records", factory: factory)
        windowBytes = CoreMetrics.Meter(label: "rowcast_resume_window_bytes", factory: factory)
        windowAge = CoreMetrics.Meter(label: "rowcast_resume_window_oldest_seconds", factory: factory)
    }

    /// The Prometheus text exposition, with the capture's state read now.
    func render(source: any CaptureSource, window: (records: Int, bytes: Int, oldestAge: Duration?)) -> [UInt8] {
        let state = source.state
        let captured = state.recordsCaptured
        let delta = recordsCapturedRendered.withLock { rendered in
            defer { rendered = max(rendered, captured) }
            return captured > rendered ? captured - rendered : 0
        }
        if delta > 0 { recordsCaptured.increment(by: Int(clamping: delta)) }
        captureConnected.set(state.isConnected ? 1 : 0)
        if let lag = state.lagBytes { captureLag?.set(Int(clamping: lag)) }
        windowRecords.set(window.records)
        windowBytes.set(window.bytes)
        windowAge.set(Int(window.oldestAge?.components.seconds ?? 0))
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1024)
        registry.emit(into: &buffer)
        return buffer
    }
}
