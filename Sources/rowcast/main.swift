import ArgumentParser
import Foundation

// SIGPIPE would kill `rowcast tail | head`; write errors end the stream cleanly instead.
signal(SIGPIPE, SIG_IGN)

do {
    var command = try Rowcast.parseAsRoot(EnvironmentArguments.apply(to: Array(CommandLine.arguments.dropFirst())))
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
    FileHandle.standardError.write(Data((message + "\n").utf8))
    // The contract's exit code for bad usage is 2, not ArgumentParser's 64.
    exit(code == .validationFailure ? 2 : code.rawValue)
}

/// Runs an async command; a generic context makes `run()` pick the async overload.
func runAsync<Command: AsyncParsableCommand>(_ command: Command) async throws {
    var command = command
    try await command.run()
}
