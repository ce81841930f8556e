import RowcastCore

/// A frame a client sends, `{"event": NAME, "data": OBJECT}` (SPEC section 4).
public enum ClientMessage: Sendable, Equatable {
    /// `ready for data` `{}`: everything the client may see, from now on.
    case readyForData
    /// `unsubscribe` `{}`: stop updates, keep the connection.
    case unsubscribe

    /// Parses a text frame; a ``ClientMessageError`` names what is wrong with it.
    public static func parse(_ text: String) throws(ClientMessageError) -> ClientMessage {
        let bytes = Array(text.utf8)
        var scanner = JSONScanner(bytes)
        var event: String?
        do {
            try scanner.scanObject { (key, range) throws(JSONSyntaxError) in
                switch key {
                case "event":
                    var inner = JSONScanner(Array(bytes[range]))
                    event = try? inner.readString()
                default:
                    break
                }
            }
            try scanner.expectEnd()
        } catch {
            throw .badFrame("frames are JSON objects {\"event\": NAME, \"data\": OBJECT}: \(error)")
        }
        guard let event else { throw .badFrame("the frame has no string \"event\"") }
        switch event {
        case "ready for data": return .readyForData
        case "unsubscribe": return .unsubscribe
        default: throw .unknownEvent(event)
        }
    }
}

/// Why a client frame was rejected; sent back as an `error` frame.
public enum ClientMessageError: Error, Sendable, Equatable {
    case badFrame(String)
    case unknownEvent(String)

    /// The `code` of the `error` frame.
    public var code: String {
        switch self {
        case .badFrame: "bad_frame"
        case .unknownEvent: "unknown_event"
        }
    }

    /// The `message` of the `error` frame.
    public var message: String {
        switch self {
        case .badFrame(let why): why
        case .unknownEvent(let event): "unknown event \"\(event)\"; expected \"ready for data\" or \"unsubscribe\""
        }
    }
}
