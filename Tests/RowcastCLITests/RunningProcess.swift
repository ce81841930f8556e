import Foundation
import RowcastTestSupport
import Synchronization

extension Rowcast {
    /// The Chromium binary (make test installs Debian's `chromium` when it is missing).
    static func chromium() throws -> String {
        for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw Failure("no chromium found (fix: apt-get install chromium, which make test does when it can)")
    }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A long-running child process whose stderr is collected, so a test can wait for a
/// line (a listening port, a DevTools URL) and read the rest afterwards.
final class RunningProcess: Sendable {
    private let process: Process
    private final class Collected: Sendable {
        let text = Mutex("")
    }

    private let stderr = Collected()

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ROWCAST_") }
        env.merge(environment) { $1 }
        process.environment = env
        let err = Pipe()
        process.standardError = err
        // stdout too: `demo` prints its URL there; the order of the two is kept per stream.
        process.standardOutput = err
        process.standardInput = FileHandle.nullDevice
        self.process = process
        try process.runWithNoSignalBlocked()
        // A thread that blocks on the pipe, not a readabilityHandler: dispatch read
        // sources on pipes that close while other tests spawn processes have crashed
        // libdispatch's event loop here, and stalled every timer with it.
        // The output also goes to a file of its own when make test asks for one, so that
        // its watchdog can show what each child said last if the run hangs.
        let log = ChildLog(pid: process.processIdentifier, command: [executable] + arguments)
        let collected = stderr
        let reader = err.fileHandleForReading
        Thread {
            while case let data = reader.availableData, !data.isEmpty {
                collected.text.withLock { $0 += String(decoding: data, as: UTF8.self) }
                log?.append(data)
            }
            log?.close()
        }.start()
    }

    /// Everything written to stderr and stdout so far.
    var output: String { stderr.text.withLock { $0 } }

    /// The process id.
    var pid: Int32 { process.processIdentifier }

    /// Resident memory of the process in MB (Linux), -1 when unknown.
    var residentMegabytes: Int { status("VmRSS:") }

    /// The most resident memory the process has had, in MB (Linux), -1 when unknown.
    var peakResidentMegabytes: Int { status("VmHWM:") }

    private func status(_ field: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
            let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return -1 }
        return kilobytes / 1024
    }

    /// What each open descriptor is, for a failure message.
    var describeDescriptors: String {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)") }.sorted().joined(separator: " ")
    }

    /// Open sockets of the process (Linux): connections and listeners.
    var openSockets: Int { describeDescriptors.split(separator: " ").filter { $0.hasPrefix("socket:") }.count }

    /// Open file descriptors of the process (Linux).
    var openDescriptors: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }

    /// Waits (up to `seconds`) for stderr to contain a match for `pattern`; returns its first capture.
    func waitFor(_ pattern: String, seconds: Double = 60) async throws -> String {
        let regex = try NSRegularExpression(pattern: pattern)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let text = output
            if let match = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
                let range = Range(match.range(at: match.numberOfRanges > 1 ? 1 : 0), in: text)
            {
                return String(text[range])
            }
            guard process.isRunning else { break }
            try await pause(for: .milliseconds(50))
        }
        throw Failure("no \(pattern) from \(process.executableURL?.lastPathComponent ?? "process"); stderr:\n\(output)")
    }

    /// Sends a signal, without waiting for anything.
    func signal(_ signal: Int32) {
        if process.isRunning { kill(process.processIdentifier, signal) }
    }

    /// Sends a signal (none with 0) and waits for the exit status.
    func stop(_ signal: Int32 = SIGTERM, seconds: Double = 30) async throws -> Int32 {
        if process.isRunning, signal != 0 { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            guard Date() < deadline else {
                kill(process.processIdentifier, SIGKILL)
                // What it said last: where it was when it would not stop.
                let said = output.split(separator: "\n").suffix(8).joined(separator: "\n")
                throw Failure("\(process.executableURL?.lastPathComponent ?? "process") did not exit within \(seconds) s of signal \(signal); its last lines:\n\(said)")
            }
            try await pause(for: .milliseconds(50))
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

extension Process {
    /// `run()`, with nothing blocked in the child's signal mask. A child inherits the
    /// mask of the thread that spawns it, and threads of the cooperative pool block
    /// SIGTERM, SIGINT and others: spawned as it is, a child would ignore the SIGTERM
    /// meant to stop it. The mask is emptied for the spawn alone.
    func runWithNoSignalBlocked() throws {
        var empty = sigset_t(), saved = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try run()
    }

    /// Waits for the process to exit and returns its status; kills it and fails naming
    /// it when it has not exited within `seconds`.
    func exit(within seconds: Double = 60) async throws -> Int32 {
        let name = executableURL?.lastPathComponent ?? "a child"
        do {
            try await eventually("\(name) \(arguments?.first ?? "") to exit", within: seconds) { !self.isRunning }
        } catch {
            kill(processIdentifier, SIGKILL)
            throw error
        }
        return terminationStatus
    }
}
