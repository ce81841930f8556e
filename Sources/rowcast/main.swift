import ArgumentParser
import Foundation

// SIGPIPE would kill `rowcast tail | head`; write errors end the stream cleanly instead.
signal(SIGPIPE, SIG_IGN)

let arguments = Array(CommandLine.arguments.dropFirst())
do {
    var command = try Rowcast.parseAsRoot(EnvironmentArguments.apply(to: arguments))
    if let asyncCommand = command as? any AsyncParsableCommand {
        try await runAsync(asyncCommand)
    } else {
        try command.run()
    }
    // Done: do not wait for stray threads (a capture thread finishing its last poll).
    exit(0)
} catch let failure as CommandFailure {
    FileHandle.standardError.write(Data(("rowcast: " + failure.message + "\n").utf8))
    exit(failure.exitCode)
} catch {
    let code = Rowcast.exitCode(for: error)
    let message = Rowcast.fullMessage(for: error)
    if code == .success {
        if !message.isEmpty { print(message) }
        exit(0)
    }
    if code == .validationFailure {
        // The contract's exit code for bad usage is 2, not ArgumentParser's 64; and one line.
        FileHandle.standardError.write(Data((UsageError.line(for: error, arguments: arguments) + "\n").utf8))
        exit(2)
    }
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(code.rawValue)
}

/// Runs an async command; a generic context makes `run()` pick the async overload.
func runAsync<Command: AsyncParsableCommand>(_ command: Command) async throws {
    var command = command
    try await command.run()
}
