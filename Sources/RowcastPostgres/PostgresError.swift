import Foundation

/// A failure talking to PostgreSQL, phrased for a one-line message.
package enum PostgresError: Error, Sendable, CustomStringConvertible {
    /// The connection could not be made (the CLI exits 3).
    case cannotConnect(String)
    /// The connection broke while in use.
    case connectionLost(String)
    /// The server rejected a statement.
    case server(sqlState: String, message: String, detail: String?, hint: String?)
    /// The server answered something rowcast did not expect.
    case protocolViolation(String)

    /// The SQLSTATE of a server error, if this is one.
    package var sqlState: String? {
        if case .server(let state, _, _, _) = self { return state }
        return nil
    }

    package var description: String {
        switch self {
        case .cannotConnect(let why):
            "cannot connect to PostgreSQL: \(why) (fix: check --db, DATABASE_URL or the PG* variables, and that the server is running)"
        case .connectionLost(let why):
            "lost the connection to PostgreSQL: \(why)"
        case .server(let state, let message, let detail, let hint):
            "PostgreSQL error \(state): \(message)"
                + (detail.map { " (\($0))" } ?? "")
                + (hint.map { " hint: \($0)" } ?? "")
        case .protocolViolation(let why):
            "unexpected answer from PostgreSQL: \(why)"
        }
    }

    /// Folds libpq's multi-line messages into one line.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
            .joined(separator: "; ")
    }
}
