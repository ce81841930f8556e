import Foundation
import HummingbirdWSClient
import Logging
import RowcastCore
import RowcastServer
import RowcastTestSupport
import Testing

/// The server as `serve` composes it, over a ``ScriptedCapture`` instead of a database:
/// what every server test but the live smoke test runs. Tests commit changes to the
/// capture and read what real clients (HummingbirdTesting `.live`, raw sockets) receive.
enum ScriptedServer {
    /// The columns of every scripted table, as the catalog gives those of
    /// `(id int PRIMARY KEY, title text)`.
    static let columns: [String: ColumnKind] = ["id": .number, "title": .other]

    static let logger: Logger = {
        var logger = Logger(label: "rowcast-tests")
        logger.logLevel = .warning
        return logger
    }()

    /// An app serving a trigger-mode capture of `tables`.
    static func make(
        options: ServerOptions = ServerOptions(port: 0),
        tables: [TableName] = ["public.items"]
    ) -> (app: RowcastApplication, capture: ScriptedCapture) {
        let capture = ScriptedCapture(tables: Dictionary(uniqueKeysWithValues: tables.map { ($0, columns) }))
        return (buildApplication(options: options, source: capture, logger: logger), capture)
    }

    /// The row `(id, title)` as trigger mode sends it (`to_json` of the row).
    static func row(_ id: Int, _ title: String) -> String {
        #"{"id":\#(id),"title":"\#(title)"}"#
    }

    /// A text frame's JSON object.
    static func object(_ message: WebSocketMessage?) -> [String: Any]? {
        guard case .text(let text) = message else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
    }

    /// `message` is the `update` of a trigger-mode insert of (`id`, `title`) into `table`.
    static func expectTriggerInsert(
        _ message: WebSocketMessage?, table: TableName, id: Int, title: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let update = object(message)
        #expect(update?["event"] as? String == "update", sourceLocation: sourceLocation)
        let record = update?["data"] as? [String: Any]
        #expect(record?["op"] as? String == "insert", sourceLocation: sourceLocation)
        #expect(record?["source"] as? String == "trigger", sourceLocation: sourceLocation)
        #expect(record?["schema"] as? String == table.schema, sourceLocation: sourceLocation)
        #expect(record?["table"] as? String == table.name, sourceLocation: sourceLocation)
        #expect((record?["cursor"] as? String).flatMap(Cursor.init) != nil, sourceLocation: sourceLocation)
        let row = record?["row"] as? [String: Any]
        #expect(row?["id"] as? Int == id, sourceLocation: sourceLocation)
        #expect(row?["title"] as? String == title, sourceLocation: sourceLocation)
    }
}
