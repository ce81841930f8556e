import CLibPQ
import Foundation

/// One libpq connection.
///
/// Not thread-safe by design: each connection belongs to one thread at a time (a
/// capture thread, or a command's main flow), which is why the class is
/// `@unchecked Sendable` rather than guarded by a lock. Every libpq call that
/// blocks does so on that thread, never on Swift's cooperative pool.
package final class PostgresConnection: @unchecked Sendable {
    private var handle: OpaquePointer?

    /// Connects, resolving `settings` exactly as `psql` would.
    ///
    /// - Parameter replication: opens a `replication=database` connection for the
    ///   streaming replication protocol.
    package init(_ settings: ConnectionSettings, replication: Bool = false) throws(PostgresError) {
        // Order matters: later keywords override earlier ones, and the expanded
        // `dbname` (the user's conninfo) sits between what it may override
        // (application_name) and what rowcast must have (client_encoding).
        var keywords = ["application_name", "dbname", "client_encoding"]
        var values = [settings.applicationName, settings.conninfo, "UTF8"]
        if replication {
            keywords.append("replication")
            values.append("database")
        }
        let conn = Self.withCStrings(keywords) { keywordPointers in
            Self.withCStrings(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let conn else { throw .cannotConnect("out of memory") }
        handle = conn
        // libpq prints notices (and a terminated backend's FATAL) to stderr by
        // default; rowcast reports problems itself, in one line, through its log.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = PostgresError.oneLine(String(cString: PQerrorMessage(conn)))
            PQfinish(conn)
            handle = nil
            throw .cannotConnect(message.isEmpty ? "unknown error" : message)
        }
        if !replication {
            _ = try execute("SET client_min_messages = warning")
        }
    }

    deinit {
        if let handle { PQfinish(handle) }
    }

    /// Closes the connection; later calls fail with `connectionLost`.
    package func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// The server's version number, e.g. 150018.
    package var serverVersion: Int {
        handle.map { Int(PQserverVersion($0)) } ?? 0
    }

    /// The backend's process id.
    package var backendPID: Int32 {
        handle.map { PQbackendPID($0) } ?? 0
    }

    /// Runs one statement with text parameters (`$1`, `$2`, …) and returns its rows.
    @discardableResult
    package func execute(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> QueryResult {
        let conn = try live()
        let result: OpaquePointer? =
            if parameters.isEmpty {
                PQexecParams(conn, sql, 0, nil, nil, nil, nil, 0)
            } else {
                Self.withOptionalCStrings(parameters) { pointers in
                    PQexecParams(conn, sql, Int32(parameters.count), nil, pointers, nil, nil, 0)
                }
            }
        return try collect(result)
    }

    /// Runs one command over the simple query protocol and returns its rows (a
    /// replication connection's commands, `IDENTIFY_SYSTEM`).
    package func simpleQuery(_ sql: String) throws(PostgresError) -> QueryResult {
        let conn = try live()
        return try collect(PQexec(conn, sql))
    }

    /// Runs a script of several statements (no parameters), as `psql -f` would.
    package func executeScript(_ sql: String) throws(PostgresError) {
        let conn = try live()
        _ = try collect(PQexec(conn, sql))
    }

    /// The socket to wait on.
    package var socket: Int32 {
        handle.map { PQsocket($0) } ?? -1
    }

    /// Waits until the socket is readable or `milliseconds` pass; true when readable.
    package func waitReadable(milliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, milliseconds) > 0
    }

    /// Reads whatever the server has sent, without blocking.
    package func consumeInput() throws(PostgresError) {
        let conn = try live()
        if PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK {
            throw Self.connectionError(conn)
        }
    }

    /// Takes every notification received so far.
    package func drainNotifications() -> [PostgresNotification] {
        guard let handle else { return [] }
        var notifications: [PostgresNotification] = []
        while let notify = PQnotifies(handle) {
            let channel = String(cString: notify.pointee.relname)
            let length = strlen(notify.pointee.extra)
            let payload = notify.pointee.extra.withMemoryRebound(to: UInt8.self, capacity: length) {
                Array(UnsafeBufferPointer(start: $0, count: length))
            }
            notifications.append(PostgresNotification(channel: channel, payload: payload, pid: notify.pointee.be_pid))
            PQfreemem(notify)
        }
        return notifications
    }

    /// Whether the connection is still usable.
    package var isConnected: Bool {
        handle.map { PQstatus($0) == CONNECTION_OK } ?? false
    }

    // MARK: - Internals

    private func live() throws(PostgresError) -> OpaquePointer {
        guard let handle else { throw .connectionLost("the connection was closed") }
        return handle
    }

    /// Reads a result, frees it, and turns errors into ``PostgresError``.
    private func collect(_ result: OpaquePointer?) throws(PostgresError) -> QueryResult {
        guard let result else {
            throw .connectionLost(PostgresError.oneLine(handle.map { String(cString: PQerrorMessage($0)) } ?? "no result"))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return QueryResult(columns: [], rows: [])
        case PGRES_TUPLES_OK:
            let columnCount = PQnfields(result)
            let rowCount = PQntuples(result)
            let columns = (0..<columnCount).map { String(cString: PQfname(result, $0)) }
            var rows: [[String?]] = []
            rows.reserveCapacity(Int(rowCount))
            for row in 0..<rowCount {
                rows.append((0..<columnCount).map { column in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                })
            }
            return QueryResult(columns: columns, rows: rows)
        default:
            if let handle, PQstatus(handle) != CONNECTION_OK {
                throw Self.connectionError(handle)
            }
            throw Self.serverError(result)
        }
    }

    /// The one reading of a failed result: SQLSTATE, message, detail and hint.
    static func serverError(_ result: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            PQresultErrorField(result, Int32(code.asciiValue ?? 0)).map { String(cString: $0) }
        }
        return .server(
            sqlState: field("C") ?? "XX000",
            message: field("M") ?? PostgresError.oneLine(String(cString: PQresultErrorMessage(result))),
            detail: field("D"),
            hint: field("H")
        )
    }

    /// The one reading of a connection-level failure.
    static func connectionError(_ connection: OpaquePointer) -> PostgresError {
        .connectionLost(PostgresError.oneLine(String(cString: PQerrorMessage(connection))))
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        let duplicates = strings.map { strdup($0) }
        defer { duplicates.forEach { free($0) } }
        return body(duplicates.map { UnsafePointer($0) } + [nil])
    }

    private static func withOptionalCStrings<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        let duplicates = strings.map { $0.map { strdup($0) } ?? nil }
        defer { duplicates.forEach { free($0) } }
        return body(duplicates.map { UnsafePointer($0) })
    }
}

/// A NOTIFY received on a LISTEN connection.
package struct PostgresNotification: Sendable, Equatable {
    package let channel: String
    /// The payload bytes, UTF-8 (the connection's client encoding).
    package let payload: [UInt8]
    /// The process id of the notifying backend.
    package let pid: Int32
}

/// The rows of a query, as text.
package struct QueryResult: Sendable {
    package let columns: [String]
    package let rows: [[String?]]

    /// The first column of the first row, if any.
    package var scalar: String? {
        rows.first?.first ?? nil
    }
}

/// What one read from a CopyBoth stream gave.
package enum CopyDataRead: Sendable {
    /// One CopyData message's bytes.
    case data([UInt8])
    /// Nothing complete yet: wait on the socket, then ``PostgresConnection/consumeInput()``.
    case wouldBlock
    /// The server ended the copy.
    case ended
}

extension PostgresConnection {
    /// Sends a command that starts a CopyBoth stream (`START_REPLICATION`) and
    /// switches to non-blocking mode for it.
    package func startCopyBoth(_ command: String) throws(PostgresError) {
        let conn = try liveHandle()
        guard let result = PQexec(conn, command) else {
            throw Self.connectionError(conn)
        }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COPY_BOTH else {
            throw Self.serverError(result)
        }
        PQsetnonblocking(conn, 1)
    }

    /// Reads the next CopyData message without blocking.
    package func readCopyData() throws(PostgresError) -> CopyDataRead {
        let conn = try liveHandle()
        var buffer: UnsafeMutablePointer<CChar>?
        let length = PQgetCopyData(conn, &buffer, 1)
        if length > 0, let buffer {
            defer { PQfreemem(buffer) }
            return buffer.withMemoryRebound(to: UInt8.self, capacity: Int(length)) {
                .data(Array(UnsafeBufferPointer(start: $0, count: Int(length))))
            }
        }
        switch length {
        case 0:
            return .wouldBlock
        case -1:
            // Collect the final result so the connection can report why.
            while let result = PQgetResult(conn) {
                let failed = PQresultStatus(result) == PGRES_FATAL_ERROR
                let message = String(cString: PQresultErrorMessage(result))
                PQclear(result)
                if failed { throw .connectionLost(PostgresError.oneLine(message)) }
            }
            return .ended
        default:
            throw Self.connectionError(conn)
        }
    }

    /// Sends one CopyData message and flushes it.
    package func writeCopyData(_ bytes: [UInt8]) throws(PostgresError) {
        let conn = try liveHandle()
        let queued = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(conn, $0.baseAddress, Int32($0.count)) }
        }
        guard queued == 1 else { throw Self.connectionError(conn) }
        while true {
            let flushed = PQflush(conn)
            if flushed == 0 { return }
            if flushed < 0 { throw Self.connectionError(conn) }
            var descriptor = pollfd(fd: PQsocket(conn), events: Int16(POLLOUT | POLLIN), revents: 0)
            _ = poll(&descriptor, 1, 1000)
            if descriptor.revents & Int16(POLLIN) != 0 { _ = PQconsumeInput(conn) }
        }
    }

    /// Ends a CopyBoth stream as the protocol asks: CopyDone, then read (and drop)
    /// what the server still sends until it ends the stream too. Closing the socket
    /// with unread data in it makes the kernel reset the connection, and the server
    /// could then lose the status update sent just before: the slot would not move.
    package func endCopyBoth(seconds: Double = 5) {
        guard let conn = try? liveHandle(), PQputCopyEnd(conn, nil) == 1 else { return }
        let deadline = Date().addingTimeInterval(seconds)
        while PQflush(conn) == 1, Date() < deadline {
            var descriptor = pollfd(fd: PQsocket(conn), events: Int16(POLLOUT | POLLIN), revents: 0)
            _ = poll(&descriptor, 1, 100)
            if descriptor.revents & Int16(POLLIN) != 0 { _ = PQconsumeInput(conn) }
        }
        while Date() < deadline {
            switch try? readCopyData() {
            case .data?:
                continue
            case .wouldBlock?:
                if waitReadable(milliseconds: 100) { _ = PQconsumeInput(conn) }
            case .ended?, nil:
                return
            }
        }
    }

    func liveHandle() throws(PostgresError) -> OpaquePointer {
        try live()
    }
}
