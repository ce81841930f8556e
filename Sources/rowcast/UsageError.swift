import ArgumentParser

/// Turns the argument parser's errors into rowcast's own style: one line, the cause
/// and the fix, on stderr, exit 2. (Its own text is several lines and names no fix.)
enum UsageError {
    static let commands = ["serve", "tail", "setup", "teardown", "slot", "doctor", "demo"]

    /// Commands users reach for that live under another name.
    static let nearby = ["status": "slot status", "create": "slot create", "drop": "slot drop", "listen": "tail", "install": "setup", "uninstall": "teardown", "check": "doctor"]

    /// The line for a parse error, given the arguments as typed.
    static func line(for error: any Error, arguments: [String]) -> String {
        if let first = arguments.first, !first.hasPrefix("-"), !commands.contains(first), first != "dev-cluster", first != "dev-env", first != "help" {
            let hint = nearby[first].map { "did you mean rowcast \($0)? " } ?? ""
            return "rowcast: unknown command \"\(first)\" (fix: \(hint)commands are \(commands.joined(separator: ", ")); rowcast --help)"
        }
        var message = Rowcast.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad usage"
        if message.hasPrefix("Error: ") { message.removeFirst("Error: ".count) }
        if let first = message.first { message = first.lowercased() + message.dropFirst() }
        let command = arguments.prefix { !$0.hasPrefix("-") }.prefix(2).filter { commands.contains($0) || ["status", "create", "drop"].contains($0) }
        let help = (["rowcast"] + command + ["--help"]).joined(separator: " ")
        return "rowcast: \(message) (fix: \(help))"
    }
}
