import RowcastCore
import RowcastWire

/// The body of `GET /status`.
enum StatusReport {
    static func json(source: any CaptureSource, broadcaster: Broadcaster, socketIO: SocketIOServer, connections: ConnectionLimits, slot: String?) -> [UInt8] {
        var writer = JSONWriter(capacity: 256)
        var first = true
        writer.append(byte: UInt8(ascii: "{"))
        writer.appendKey("mode", first: &first)
        writer.appendString(source.mode.rawValue)
        writer.appendKey("capture", first: &first)
        writer.appendString(source.state.isConnected ? "connected" : "disconnected")
        if !source.state.isConnected, let error = source.state.lastError {
            writer.appendKey("capture_error", first: &first)
            writer.appendString(error)
        }
        if let slot {
            writer.appendKey("slot", first: &first)
            writer.appendString(slot)
        }
        if let lost = source.state.slotLost {
            writer.appendKey("slot_lost", first: &first)
            writer.appendString(lost)
        }
        if let confirmed = source.state.confirmedLSN {
            writer.appendKey("confirmed_lsn", first: &first)
            writer.appendString(formatLSN(confirmed))
        }
        if let lag = source.state.lagBytes, source.state.slotLost == nil {
            writer.appendKey("lag_bytes", first: &first)
            writer.appendInteger(lag)
        }
        writer.appendKey("connections", first: &first)
        writer.appendInteger(connections.open)
        writer.appendKey("clients", first: &first)
        writer.appendInteger(broadcaster.clientCount)
        writer.appendKey("socketio_sessions", first: &first)
        writer.appendInteger(socketIO.sessionCount)
        writer.appendKey("records_captured", first: &first)
        writer.appendInteger(source.state.recordsCaptured)
        writer.appendKey("records_sent", first: &first)
        writer.appendInteger(broadcaster.recordsSent)
        let window = broadcaster.windowStats
        writer.appendKey("window_records", first: &first)
        writer.appendInteger(window.records)
        writer.appendKey("window_bytes", first: &first)
        writer.appendInteger(window.bytes)
        writer.appendKey("window_oldest_seconds", first: &first)
        writer.appendInteger(Int(window.oldestAge?.components.seconds ?? 0))
        if let log = broadcaster.log {
            let usage = log.diskUsage
            writer.appendKey("window_log", first: &first)
            writer.appendString(log.directory)
            writer.appendKey("window_log_bytes", first: &first)
            writer.appendInteger(usage.bytes)
            writer.appendKey("window_fsync", first: &first)
            writer.appendString(log.policy.rawValue)
            if let failure = log.failure {
                writer.appendKey("window_log_error", first: &first)
                writer.appendString(failure)
            }
        }
        if let cursor = broadcaster.lastCursor {
            writer.appendKey("last_cursor", first: &first)
            writer.appendString(cursor.description)
        }
        writer.append(byte: UInt8(ascii: "}"))
        return writer.bytes
    }
}
