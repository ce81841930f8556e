import Foundation

/// The throwaway cluster `make test` starts, passed in `ROWCAST_TEST_DATABASE_URL`: the
/// one gate of every test that needs PostgreSQL (`.enabled(if: LiveDatabase.available, …)`).
package enum LiveDatabase {
    /// The cluster's URL; nil under plain `swift test`.
    package static let url = ProcessInfo.processInfo.environment["ROWCAST_TEST_DATABASE_URL"]

    /// Live tests run only under `make test`, which always sets the URL.
    package static let available = url != nil

    /// A name no other test uses (a table, a slot, a role), so tests can run in parallel.
    package static func uniqueName(_ prefix: String) -> String {
        prefix + "_" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    }

    /// A new, empty database on the test cluster, named after `prefix`; returns its URL.
    /// For tests that change what a whole database does, or set it up and tear it down.
    package static func freshDatabase(prefix: String = "db") async throws -> String {
        guard let url, let slash = url.lastIndex(of: "/") else { throw PsqlFailed(sql: "no ROWCAST_TEST_DATABASE_URL") }
        let name = uniqueName(prefix)
        try await psql(url, "CREATE DATABASE \(name)")
        return String(url[...slash]) + name
    }

    /// Runs SQL with psql, on a thread of its own, and returns its unaligned output,
    /// trimmed; a failure names the statement and what psql said.
    @discardableResult
    package static func psql(_ url: String, _ sql: String, seconds: Double = 120) async throws -> String {
        try await onThread("psql to run \(sql.prefix(60))", within: seconds + 30) { try psqlBlocking(url, sql, seconds: seconds) }
    }

    /// `psql`, for code already on a thread of its own.
    @discardableResult
    package static func psqlBlocking(_ url: String, _ sql: String, seconds: Double = 120) throws -> String {
        let result = try runChild("psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], seconds: seconds)
        guard result.status == 0 else { throw PsqlFailed(sql: sql, status: result.status, stderr: result.stderr) }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// psql failed, or could not be asked: the statement and what psql said.
package struct PsqlFailed: Error, CustomStringConvertible {
    package let sql: String
    package var status: Int32 = 0
    package var stderr = ""

    package init(sql: String, status: Int32 = 0, stderr: String = "") {
        self.sql = sql
        self.status = status
        self.stderr = stderr
    }

    package var description: String { "psql exited \(status) on \(sql.prefix(200)): \(stderr.suffix(600))" }
}
