import RowcastPostgres

/// An error the CLI reports in one line with a contract exit code.
struct CommandFailure: Error {
    let message: String
    let exitCode: Int32

    /// Exit 1: a failed check or a missing object.
    static func failed(_ message: String) -> CommandFailure { CommandFailure(message: message, exitCode: 1) }
    /// Exit 2: bad usage.
    static func usage(_ message: String) -> CommandFailure { CommandFailure(message: message, exitCode: 2) }
    /// Exit 3: cannot connect.
    static func cannotConnect(_ error: PostgresError) -> CommandFailure { CommandFailure(message: error.description, exitCode: 3) }

    init(message: String, exitCode: Int32) {
        self.message = message
        self.exitCode = exitCode
    }

    init(_ error: CaptureError) {
        switch error {
        case .cannotConnect(let error): self = .cannotConnect(error)
        case .notSetUp(let why): self = .failed(why)
        }
    }

    init(_ error: SetupError) {
        switch error {
        case .database(.cannotConnect(let why)), .database(.connectionLost(let why)):
            self = .cannotConnect(.cannotConnect(why))
        default:
            self = .failed(error.description)
        }
    }
}

extension CommandFailure {
    /// A database error: exit 3 when the connection is the problem, else 1.
    init(_ error: PostgresError) {
        switch error {
        case .cannotConnect, .connectionLost: self.init(message: error.description, exitCode: 3)
        default: self.init(message: error.description, exitCode: 1)
        }
    }
}
