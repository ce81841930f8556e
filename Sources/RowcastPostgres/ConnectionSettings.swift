import Foundation

/// How to reach the database, resolved the way `psql` resolves it: `--db`, else
/// `DATABASE_URL`, else libpq's own `PG*` variables and defaults.
package struct ConnectionSettings: Sendable, Equatable {
    /// A libpq URI or `key=value` string; empty means "libpq defaults and `PG*`".
    package var conninfo: String
    /// Sent as `application_name` unless the conninfo names one.
    package var applicationName: String

    package init(conninfo: String, applicationName: String = "rowcast") {
        self.conninfo = conninfo
        self.applicationName = applicationName
    }

    /// Resolves `--db` against the environment.
    package static func resolve(
        db: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> ConnectionSettings {
        if let db, !db.isEmpty { return ConnectionSettings(conninfo: db) }
        if let url = environment["DATABASE_URL"], !url.isEmpty { return ConnectionSettings(conninfo: url) }
        return ConnectionSettings(conninfo: "")
    }
}
