import Foundation

/// Every flag also reads `ROWCAST_<FLAG>` from the environment (SPEC section 3).
///
/// Before parsing, the flags a command takes that are absent from the command line
/// are filled in from the environment: `--log-level` from `ROWCAST_LOG_LEVEL`,
/// repeatable flags from a comma-separated list, boolean flags from `1`/`true`/`yes`.
/// A flag given on the command line always wins.
enum EnvironmentArguments {
    enum Kind { case value, list, bool }

    static let connection: [(String, Kind)] = [("db", .value), ("log-level", .value)]
    static let capture: [(String, Kind)] = [
        ("mode", .value), ("table", .list), ("channel", .list), ("slot", .value), ("publication", .value), ("since", .value),
        ("all-tables", .bool), ("force-all-tables", .bool), ("status-interval", .value), ("listener", .value), ("listener-timeout", .value),
    ]

    /// The flags of each command, by its path of subcommand names.
    static let flags: [[String]: [(String, Kind)]] = [
        ["serve"]: connection + capture + [
            ("host", .value), ("port", .value), ("resume-window", .value), ("resume-window-bytes", .value), ("resume-window-age", .value),
            ("window-dir", .value), ("window-fsync", .value), ("on-slot-lost", .value),
            ("client-queue-bytes", .value), ("allow-origin", .list), ("allow-host", .list), ("token", .value), ("jwt-secret", .value),
            ("socketio-ping-interval", .value), ("socketio-ping-timeout", .value), ("socketio-recovery", .value),
            ("idle-timeout", .value), ("socketio-max-pending", .value), ("socketio-max-pending-per-address", .value), ("max-connections", .value),
            ("max-connections-per-address", .value), ("client-messages-per-second", .value), ("requests-per-second-per-address", .value),
            ("max-snapshots", .value), ("max-snapshots-per-address", .value), ("snapshot-rows", .value), ("snapshot-seconds", .value),
            ("insecure-no-auth", .bool),
        ],
        ["tail"]: connection + capture + [("endpos", .value), ("snapshot", .bool)],
        ["setup"]: connection + [("mode", .value), ("table", .list), ("slot", .value), ("publication", .value)],
        ["teardown"]: connection + [("mode", .value), ("slot", .value), ("publication", .value), ("drop-slot", .bool)],
        ["slot", "status"]: connection + [("slot", .value), ("json", .bool), ("watch", .value)],
        ["slot", "create"]: connection,
        ["slot", "drop"]: connection + [("force", .bool)],
        ["doctor"]: connection + [("mode", .value), ("table", .list), ("publication", .value)],
        ["demo"]: [("mode", .value), ("port", .value), ("log-level", .value)],
    ]

    /// `arguments` (without the program name) with environment values added.
    static func apply(to arguments: [String], environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        let path = Array(arguments.prefix { !$0.hasPrefix("-") }.prefix(2))
        guard let known = flags[path] ?? flags[Array(path.prefix(1))] else { return arguments }
        var result = arguments
        for (flag, kind) in known {
            let given = arguments.contains { $0 == "--" + flag || $0.hasPrefix("--" + flag + "=") }
            let name = "ROWCAST_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
            guard !given, let value = environment[name], !value.isEmpty else { continue }
            switch kind {
            case .value:
                result += ["--" + flag, value]
            case .list:
                for item in value.split(scalar: ",") where !item.isEmpty {
                    result += ["--" + flag, item.trimmingCharacters(in: .whitespaces)]
                }
            case .bool:
                if ["1", "true", "yes", "on"].contains(value.lowercased()) { result.append("--" + flag) }
            }
        }
        return result
    }
}
