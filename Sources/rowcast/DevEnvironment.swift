import ArgumentParser

/// `rowcast dev-env`: the flags each command reads from `ROWCAST_<FLAG>`, one
/// `command --flag` a line, so that a test can hold the list to every command's
/// options (a flag missing from it silently ignored its variable).
struct DevEnvironment: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-env",
        abstract: "List the flags each command reads from the environment (used by make test).",
        shouldDisplay: false
    )

    func run() {
        for (path, flags) in EnvironmentArguments.flags.sorted(by: { $0.key.joined(separator: " ") < $1.key.joined(separator: " ") }) {
            for (flag, _) in flags { print(path.joined(separator: " "), "--" + flag) }
        }
    }
}
