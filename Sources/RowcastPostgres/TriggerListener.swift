import Foundation
import Logging
import RowcastCore

/// One rowcast process as the database knows it: a row of `rowcast.listeners` under a
/// name of its own, with the snapshot whose transactions it has delivered (its
/// position) and the time it is live until (moved on by its heartbeat).
///
/// While no listener is live the trigger writes nothing. A change is deleted once
/// every live listener's position passed its transaction (``trim(on:)``), so a
/// listener that falls behind misses nothing, however far, within
/// `--listener-timeout`; past it, its row is dropped, and when it comes back it says
/// what it missed. The name holds an advisory lock on the listening connection, so two
/// processes never share one: the second takes the next free name (`name#2`, …).
struct TriggerListener {
    /// The name this process listens under.
    private(set) var name: String
    /// Everything visible in this snapshot is delivered (`txid_snapshot` text).
    private(set) var position: String
    let timeoutSeconds: Double
    let logger: Logger
    /// Whether `rowcast.listener_names` is there and this role writes it.
    private var keepsName = false

    /// The registration an upgrade from rowcast 0.1 leaves (sql/rowcast_trigger.sql).
    static let upgradeName = "upgrade"

    /// Whether trigger mode's set-up has the listeners table (a set-up by rowcast 0.1
    /// does not until `rowcast setup` upgrades it).
    static func isInstalled(on connection: PostgresConnection) throws(PostgresError) -> Bool {
        try connection.execute("SELECT to_regclass('rowcast.listeners') IS NOT NULL").scalar == "t"
    }

    /// The name a process takes unless `--listener` gives one: its tables (or `*`) and
    /// host, so that `tail` or `serve` run again on the same machine, with the same
    /// tables, catches up where it left.
    static func defaultName(tables: Set<TableName>) -> String {
        let host = ProcessInfo.processInfo.hostName
        let scope = tables.isEmpty ? "*" : tables.map(\.description).sorted().joined(separator: ",")
        return String((host + ":" + scope).prefix(200))
    }

    /// Registers on `connection` (the listening one) under `preferred`, or the first
    /// free `preferred#N`, picking up its position when its row is still live.
    static func register(preferred: String, timeoutSeconds: Double, on connection: PostgresConnection, logger: Logger) throws(PostgresError) -> TriggerListener {
        var name = preferred
        var locked = false
        for attempt in 1...100 where !locked {
            name = attempt == 1 ? preferred : "\(preferred)#\(attempt)"
            locked = try connection.execute("SELECT pg_try_advisory_lock(hashtextextended('rowcast.listener:' || $1, 0))", [name]).scalar == "t"
        }
        if !locked {
            // A hundred processes under one name: this one takes a name of its own.
            name = "\(preferred)#\(UInt32.random(in: 101...UInt32.max))"
            _ = try connection.execute("SELECT pg_try_advisory_lock(hashtextextended('rowcast.listener:' || $1, 0))", [name])
        }
        var listener = TriggerListener(name: name, position: "", timeoutSeconds: timeoutSeconds, logger: logger)
        try listener.rejoin(on: connection)
        return listener
    }

    /// Takes up this listener's row again (at start, and on every new connection): its
    /// position when the row is live; otherwise a fresh one, and a warning naming what
    /// may be missing.
    mutating func rejoin(on connection: PostgresConnection) throws(PostgresError) {
        // It held a position before: this is a return, not a first registration.
        let wasRegistered = !position.isEmpty
        // Another process took the name while this one was disconnected: never share a
        // position (each would move it past what the other has not read); take the
        // next free name instead, and say what that costs.
        guard try connection.execute("SELECT pg_try_advisory_lock(hashtextextended('rowcast.listener:' || $1, 0))", [name]).scalar == "t" else {
            let taken = name
            self = try Self.register(preferred: Self.baseName(taken), timeoutSeconds: timeoutSeconds, on: connection, logger: logger)
            logger.warning("listener name \(taken) was taken by another process while this one was disconnected; listening as \(name) from now on (changes committed meanwhile went to \(taken))")
            return
        }
        let found = try connection.execute(
            "SELECT position::text, expires > now() FROM rowcast.listeners WHERE name = $1", [name]
        ).rows.first
        if let found, let stored = found[0], found[1] == "t" {
            position = stored
            _ = try remember(on: connection)
            try heartbeat(on: connection)
            logger.info("listening as \(name), from where it left (\(Self.brief(stored)))")
            return
        }
        // An upgrade from rowcast 0.1 registered for the listeners to come: the first
        // one starts from there, and nothing committed since the upgrade is lost.
        if found == nil, name != Self.upgradeName,
            let kept = try connection.execute(
                "SELECT position::text FROM rowcast.listeners WHERE name = $1 AND expires > now()", [Self.upgradeName]
            ).scalar
        {
            try connection.execute(
                "INSERT INTO rowcast.listeners (name, position, expires) VALUES ($1, $2::txid_snapshot, now() + make_interval(secs => $3::float8))",
                [name, kept, String(timeoutSeconds)]
            )
            position = kept
            _ = try remember(on: connection)
            logger.info("listening as \(name), from where the upgrade of trigger mode left (\(kept))")
            return
        }
        // Registered first, then the position: a writer's statement that ran before the
        // registration committed wrote nothing, so its transaction (open until after
        // the registration) is counted as passed, never read half.
        try connection.execute(
            """
            INSERT INTO rowcast.listeners (name, position, expires) VALUES ($1, txid_current_snapshot(), now() + make_interval(secs => $2::float8))
            ON CONFLICT (name) DO UPDATE SET position = excluded.position, expires = excluded.expires
            """,
            [name, String(timeoutSeconds)]
        )
        let next = try connection.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())").scalar ?? "0"
        position = "\(next):\(next):"
        try connection.execute("UPDATE rowcast.listeners SET position = $2::txid_snapshot WHERE name = $1", [name, position])
        let registeredBefore = try remember(on: connection)
        if found != nil {
            logger.warning("listener \(name) was away longer than --listener-timeout (\(Int(timeoutSeconds)) s) and was dropped: changes committed while it was away were not kept; listening from now on")
        } else if !wasRegistered, let registeredBefore {
            logger.warning("listener \(name) was a listener before (last seen \(registeredBefore)) but its registration is gone (dropped after --listener-timeout, or lost when PostgreSQL restarted after a crash): changes committed while it was away may be missing; listening from now on")
        } else if !wasRegistered {
            logger.info("listening as \(name): changes committed from now on are delivered")
        } else {
            // Its row was there when it last heard of it: deleted since, by another
            // listener past --listener-timeout, or lost in a crash (the table is unlogged).
            logger.warning("listener \(name)'s registration was gone when it came back (dropped by another listener after --listener-timeout, or lost when PostgreSQL restarted after a crash): changes committed while it was away may be missing; listening from now on")
        }
    }

    /// Records in `rowcast.listener_names` that this name registered; returns when it
    /// last did before, if it ever did. Nothing when the table is missing (set up by an
    /// earlier rowcast) or this role may not write it: only that warning is lost.
    private mutating func remember(on connection: PostgresConnection) throws(PostgresError) -> String? {
        do {
            guard try connection.execute("SELECT to_regclass('rowcast.listener_names') IS NOT NULL").scalar == "t" else { return nil }
            let before = try connection.execute("SELECT seen::text FROM rowcast.listener_names WHERE name = $1", [name]).scalar
            try connection.execute(
                "INSERT INTO rowcast.listener_names (name, seen) VALUES ($1, now()) ON CONFLICT (name) DO UPDATE SET seen = excluded.seen",
                [name]
            )
            keepsName = true
            return before
        } catch {
            // Only the warning for a returning name rests on this table: nothing in it
            // may keep a listener from registering.
            guard error.sqlState != nil else { throw error }
            logger.log(level: error.sqlState == "42501" ? .debug : .warning, "cannot record listener name \(name) in rowcast.listener_names: \(error) (fix: rowcast setup --mode trigger)")
            return nil
        }
    }

    /// A position for a log line: `xmin:xmax:` and how many transactions it leaves
    /// unread (a stop in the middle of a backlog can leave thousands).
    static func brief(_ position: String) -> String {
        guard let snapshot = Snapshot(position), snapshot.xip.count > 5 else { return position }
        return "\(snapshot.xmin):\(snapshot.xmax): and \(snapshot.xip.count) transactions still to read"
    }

    /// `name` without the `#N` a second process with the same name got.
    static func baseName(_ name: String) -> String {
        guard let hash = name.lastIndex(of: "#"), Int(name[name.index(after: hash)...]) != nil else { return name }
        return String(name[..<hash])
    }

    /// Moves `expires` on. Returns false when the row is gone (dropped by another
    /// listener after a pause past the timeout): ``rejoin(on:)`` then says what was missed.
    @discardableResult
    func heartbeat(on connection: PostgresConnection) throws(PostgresError) -> Bool {
        let live = !(try connection.execute(
            // Not a registration already past its time: that one was given up (its
            // changes may be gone), and ``rejoin(on:)`` says so.
            "UPDATE rowcast.listeners SET expires = now() + make_interval(secs => $2::float8) WHERE name = $1 AND expires >= now() RETURNING 1",
            [name, String(timeoutSeconds)]
        ).rows.isEmpty)
        // A name in use is never forgotten (an hourly write, not one per heartbeat), and
        // is written again if it was (another listener's trim raced a stale `seen`).
        if live, keepsName {
            do {
                try connection.execute(
                    """
                    INSERT INTO rowcast.listener_names AS n (name, seen) VALUES ($1, now())
                    ON CONFLICT (name) DO UPDATE SET seen = excluded.seen WHERE n.seen < now() - interval '1 hour'
                    """,
                    [name]
                )
            } catch {
                guard error.sqlState != nil else { throw error }
                logger.warning("cannot note listener name \(name) as seen in rowcast.listener_names: \(error)")
            }
        }
        return live
    }

    /// Records that everything visible in `snapshot` is delivered (inside the window's
    /// transaction, so it commits with nothing else). Returns false when the row is
    /// gone, or ran out while the window was read (a sink stalled past the timeout:
    /// the trigger may have written nothing meanwhile), which ``rejoin(on:)`` then
    /// says. The clock, not `now()`: that is the window's start.
    mutating func advance(to snapshot: String, on connection: PostgresConnection) throws(PostgresError) -> Bool {
        let updated = try connection.execute(
            """
            UPDATE rowcast.listeners SET position = $2::txid_snapshot, expires = clock_timestamp() + make_interval(secs => $3::float8)
            WHERE name = $1 AND expires >= clock_timestamp() RETURNING 1
            """,
            [name, snapshot, String(timeoutSeconds)]
        ).rows
        guard !updated.isEmpty else { return false }
        position = snapshot
        return true
    }

    /// `snapshot` with `deferred` (transactions it sees) counted as not seen yet: what
    /// the position becomes when a window leaves them for their notifications.
    /// Whatever `previous` counted as passed stays passed: a fresh registration counts
    /// every transaction before it as passed, also one still open then, which a real
    /// snapshot lists as running, and which would otherwise be read in half later.
    static func snapshot(_ snapshot: String, leaving deferred: [Int64], after previous: String) -> String? {
        guard let current = Snapshot(snapshot), let before = Snapshot(previous) else { return nil }
        var xip = Set(current.xip.filter { !before.sees($0) })
        xip.formUnion(deferred.filter { $0 < current.xmax })
        let low = min(max(current.xmin, before.xmin), xip.min() ?? current.xmax)
        return "\(low):\(current.xmax):" + xip.sorted().map(String.init).joined(separator: ",")
    }

    /// A `txid_snapshot` in its text form, `xmin:xmax:xip,…`.
    struct Snapshot {
        let xmin: Int64, xmax: Int64, xip: [Int64]

        init?(_ text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 3, let xmin = Int64(parts[0]), let xmax = Int64(parts[1]) else { return nil }
            self.xmin = xmin
            self.xmax = xmax
            xip = parts[2].split(separator: ",").compactMap { Int64($0) }
        }

        /// Whether a transaction counts as finished in it.
        func sees(_ txid: Int64) -> Bool { txid < xmin || (txid < xmax && !xip.contains(txid)) }
    }

    /// Drops listeners past their time, then deletes every change that all live
    /// listeners' positions passed (every change, when none is live).
    static func trim(on connection: PostgresConnection) throws(PostgresError) {
        try connection.execute("DELETE FROM rowcast.listeners WHERE expires < now()")

        try connection.execute(
            """
            WITH live AS (SELECT position FROM rowcast.listeners WHERE expires >= now())
            DELETE FROM rowcast.changes c
            WHERE c.batch < coalesce((SELECT min(txid_snapshot_xmax(position)) FROM live), 9223372036854775807)
              AND NOT EXISTS (SELECT 1 FROM live WHERE NOT txid_visible_in_snapshot(c.batch, live.position))
            """
        )
        // Names not seen for 30 days are forgotten; after the changes, which matter more.
        if try connection.execute("SELECT to_regclass('rowcast.listener_names') IS NOT NULL").scalar == "t" {
            _ = try? connection.execute("DELETE FROM rowcast.listener_names WHERE seen < now() - interval '30 days'")
        }
    }
}
