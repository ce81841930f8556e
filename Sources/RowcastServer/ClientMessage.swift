import Foundation
import RowcastCore

/// A frame a client sends, `{"event": NAME, "data": OBJECT}` (SPEC section 4).
public enum ClientMessage: Sendable, Equatable {
    /// `ready for data` `{}`: everything the client may see, from now on.
    case readyForData
    /// `subscribe` `{"tables", "ops", "filter", "since"}`, every key optional.
    case subscribe(Subscription, since: Cursor?)
    /// `unsubscribe` `{}`: stop updates, keep the connection.
    case unsubscribe
    /// `ping` with any object: answered with `pong` and the same object, in order with
    /// the updates (browsers cannot send WebSocket ping frames).
    case ping(data: String)

    /// Parses a text frame; a ``ClientMessageError`` names what is wrong with it.
    public static func parse(_ text: String) throws(ClientMessageError) -> ClientMessage {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            throw .badFrame("frames are JSON objects {\"event\": NAME, \"data\": OBJECT}")
        }
        guard let event = object["event"] as? String else { throw .badFrame("the frame has no string \"event\"") }
        let data = object["data"] ?? [String: Any]()
        guard let data = data as? [String: Any] else { throw .badFrame("\"data\" must be an object") }
        switch event {
        case "ready for data": return .readyForData
        case "unsubscribe": return .unsubscribe
        case "subscribe": return try subscribe(data)
        case "ping":
            let echo = (try? JSONSerialization.data(withJSONObject: data)).map { String(decoding: $0, as: UTF8.self) }
            return .ping(data: echo ?? "{}")
        default: throw .unknownEvent(event)
        }
    }

    /// Parses a `subscribe` request's data (also used for `/events` query keys).
    static func subscribe(_ data: [String: Any]) throws(ClientMessageError) -> ClientMessage {
        var tables: Set<String>?
        if let value = data["tables"] {
            guard let names = value as? [String] else { throw .badSubscription("\"tables\" must be an array of table names") }
            tables = try Set(names.map { name throws(ClientMessageError) in
                guard let table = TableName(parsing: name) else { throw .badSubscription("\"\(name)\" is not a table name (schema.table or table)") }
                return table.description
            })
        }
        var ops: Set<RowcastCore.Operation>?
        if let value = data["ops"] {
            guard let names = value as? [String] else { throw .badSubscription("\"ops\" must be an array of operations") }
            ops = try Set(names.map { name throws(ClientMessageError) in
                guard let op = RowcastCore.Operation(rawValue: name) else {
                    throw .badSubscription("unknown op \"\(name)\"; use insert, update, delete, truncate, message or notify")
                }
                return op
            })
        }
        var filter: RowFilter?
        if let value = data["filter"] {
            guard let text = value as? String else { throw .badFilter("\"filter\" must be a string like \"id=eq.7\"") }
            do {
                filter = try RowFilter(parsing: text)
            } catch {
                throw .badFilter(error.description)
            }
        }
        var since: Cursor?
        if let value = data["since"] {
            guard let text = value as? String, let cursor = Cursor(text) else {
                throw .badSubscription("\"since\" must be a cursor from a record")
            }
            since = cursor
        }
        return .subscribe(Subscription(tables: tables, ops: ops, filter: filter), since: since)
    }
}

/// Why a client frame was rejected; sent back as an `error` frame.
public enum ClientMessageError: Error, Sendable, Equatable {
    case badFrame(String)
    case unknownEvent(String)
    case badSubscription(String)
    case badFilter(String)
    /// The client's credential does not allow what it asked for.
    case forbidden(String)
    /// `since` is older than the resume window.
    case cursorExpired(Cursor?)
    /// A table this server does not capture (a typo, or a table not set up).
    case unknownTable([String])

    /// The `code` of the `error` frame.
    public var code: String {
        switch self {
        case .badFrame: "bad_frame"
        case .unknownEvent: "unknown_event"
        case .badSubscription: "bad_subscription"
        case .badFilter: "bad_filter"
        case .forbidden: "forbidden"
        case .cursorExpired: "cursor_expired"
        case .unknownTable: "unknown_table"
        }
    }

    /// The `message` of the `error` frame.
    public var message: String {
        switch self {
        case .badFrame(let why), .badSubscription(let why), .badFilter(let why), .forbidden(let why): why
        case .cursorExpired(let since):
            "records after \(since?.description ?? "that cursor") are no longer kept; subscribe without since and reload"
        case .unknownTable(let tables):
            "\(tables.joined(separator: ", ")) \(tables.count == 1 ? "is" : "are") not captured by this server (fix: check the name, or rowcast setup --table \(tables[0]) and serve it)"
        case .unknownEvent(let event):
            "unknown event \"\(event)\"; expected \"ready for data\", \"subscribe\", \"unsubscribe\" or \"ping\""
        }
    }
}

extension Subscription {
    /// Refuses tables the capture does not deliver, so that a typo is an error, not a
    /// subscription that silently receives nothing.
    func checkCaptured(by capture: CaptureState) throws(ClientMessageError) {
        guard let tables, let captured = capture.capturedTables else { return }
        let unknown = tables.subtracting(captured).sorted()
        if !unknown.isEmpty { throw .unknownTable(unknown) }
    }
}
