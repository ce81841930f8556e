import Foundation
import Synchronization

/// Where a child's standard output goes. Its standard error always goes to a file of
/// the work folder, so a failure can quote the child's last words.
enum ChildOutput {
    /// `/dev/null`: a drain's records, whose volume would cost disk and CPU.
    case discard
    /// A file of the work folder, read by the driver (psql's answers, a load's result).
    case file
    /// A pipe read by a thread that counts the lines and drops them: a listener the
    /// driver must see receive a probe, whose output over a section is gigabytes.
    case counted
}

/// How a child ended, and what `wait4` says it used.
struct ChildExit: Sendable {
    /// The exit code, or 128 + the signal that ended it.
    let status: Int32
    /// Wall time from spawn to reap.
    let seconds: Double
    /// User plus system CPU seconds.
    let cpuSeconds: Double
    /// Peak resident set size (`ru_maxrss`): never below the driver's own (see `Bench.timed`).
    let peakRSSKilobytes: Int
}

/// A program the driver started, in a process group of its own, with an empty signal
/// mask, no descriptor of the driver's but its three, and registered with `Cleanup` so
/// that it is killed and reaped however the run ends. One thread (the driver's) waits
/// on it; `Cleanup` may signal it from another.
final class Child: @unchecked Sendable {
    /// What the child is, for messages: "rowcast serve", "pg_recvlogical".
    let name: String
    let pid: pid_t
    /// The file holding its standard output, with `.file`.
    let stdoutPath: String?
    let stderrPath: String
    private let started: ContinuousClock.Instant
    private let counter: LineCounter?
    private var ended: ChildExit?

    private init(name: String, pid: pid_t, stdoutPath: String?, stderrPath: String, counter: LineCounter?) {
        self.name = name
        self.pid = pid
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
        self.counter = counter
        started = .now
    }

    /// Starts `program` (a path, or a name looked up on PATH).
    static func start(
        _ name: String, _ program: String, _ arguments: [String], output: ChildOutput = .file,
        environment: [String: String] = [:], in work: WorkFolder
    ) throws -> Child {
        let tag = work.nextTag(name)
        let stderrPath = work.path("\(tag).err")
        let stdoutPath: String? = output == .file ? work.path("\(tag).out") : nil
        var pipeEnds: [Int32] = [-1, -1]
        if output == .counted {
            guard pipe(&pipeEnds) == 0 else { throw BenchFailure("cannot make a pipe for \(name): \(String(cString: strerror(errno)))") }
            for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        switch output {
        case .discard: posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        case .file: posix_spawn_file_actions_addopen(&actions, 1, stdoutPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        case .counted: posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        }
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if let closeFrom = addCloseFrom { _ = closeFrom(&actions, 3) }
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { $1 }
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let attributes = SpawnAttributes()
        let child: Child = try Cleanup.shared.spawning { () throws -> Child in
            var pid: pid_t = 0
            let spawned = program.contains("/")
                ? posix_spawn(&pid, program, &actions, &attributes.value, argv, envp)
                : posix_spawnp(&pid, program, &actions, &attributes.value, argv, envp)
            if output == .counted { close(pipeEnds[1]) }
            guard spawned == 0 else {
                if output == .counted { close(pipeEnds[0]) }
                throw BenchFailure("cannot run \(program): \(String(cString: strerror(spawned)))")
            }
            let counter = output == .counted ? LineCounter(reading: pipeEnds[0]) : nil
            return Child(name: name, pid: pid, stdoutPath: stdoutPath, stderrPath: stderrPath, counter: counter)
        }
        return child
    }

    /// Lines the child has written to standard output so far (`.counted` only).
    var linesWritten: Int { counter?.lines.load(ordering: .relaxed) ?? 0 }

    /// Its standard output so far (`.file` only).
    var output: String { stdoutPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "" }

    /// The last line it wrote to standard error (else to standard output), for an error
    /// message: one line, at most 300 characters.
    var lastWords: String {
        let error = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        let text = error.isEmpty ? output + (counter?.tail ?? "") : error
        let line = text.split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
        return line.count > 300 ? String(line.prefix(297)) + "..." : line
    }

    /// Whether it is still running; reaps it when it has ended.
    var isRunning: Bool {
        guard ended == nil else { return false }
        return reap(blocking: false) == nil
    }

    /// Throws when the child has exited: the driver was waiting for it to be ready.
    func requireRunning(while awaited: String) throws {
        guard !isRunning, let ended else { return }
        throw BenchFailure("\(name) \(Self.describe(ended.status)) while the bench waited for \(awaited)\(quoted(lastWords))")
    }

    /// Waits for the child to exit; kills it and throws once `seconds` have passed.
    func wait(within seconds: Double) throws -> ChildExit {
        if let ended { return ended }
        let watchdog = Watchdog(seconds: seconds) { [pid] in _ = kill(-pid, SIGKILL) }
        let exit = reap(blocking: true)
        if watchdog.disarm() { throw BenchFailure("\(name) did not exit within \(Int(seconds)) s\(quoted(lastWords))") }
        return exit ?? ChildExit(status: -1, seconds: 0, cpuSeconds: 0, peakRSSKilobytes: 0)
    }

    /// Waits for the child to exit and throws unless it exited with status 0.
    @discardableResult
    func succeed(within seconds: Double) throws -> ChildExit {
        let exit = try wait(within: seconds)
        guard exit.status == 0 else { throw BenchFailure("\(name) \(Self.describe(exit.status))\(quoted(lastWords))") }
        return exit
    }

    /// Ends the child: SIGTERM to its group, SIGKILL after ten seconds, and reaps it.
    @discardableResult
    func stop() -> ChildExit? {
        if let ended { return ended }
        _ = kill(-pid, SIGTERM)
        let watchdog = Watchdog(seconds: 10) { [pid] in _ = kill(-pid, SIGKILL) }
        let exit = reap(blocking: true)
        if watchdog.disarm() { progress("\(name) did not stop within 10 s of SIGTERM; killed it") }
        return exit
    }

    /// `wait4`, once: records the exit and leaves the cleanup registry.
    private func reap(blocking: Bool) -> ChildExit? {
        var status: Int32 = 0
        var usage = rusage()
        var result: pid_t
        repeat { result = wait4(pid, &status, blocking ? 0 : WNOHANG, &usage) } while result < 0 && errno == EINTR
        if result == 0 { return nil }
        let elapsed = ContinuousClock.now - started
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import. ECHILD: the
        // cleanup thread reaped it first.
        let code: Int32 = result < 0 ? -1 : (status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F))
        let exit = ChildExit(
            status: code,
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
            cpuSeconds: Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6,
            peakRSSKilobytes: usage.ru_maxrss
        )
        ended = exit
        Cleanup.shared.forget(pid)
        return exit
    }

    static func describe(_ status: Int32) -> String {
        status > 128 ? "was killed by signal \(status - 128)" : "exited with status \(status)"
    }

}

private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
/// glibc 2.34 has it; Swift's Glibc module does not declare it.
private let addCloseFrom: AddCloseFrom? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
    .map { unsafeBitCast($0, to: AddCloseFrom.self) }

/// ": the words", or nothing when there are none.
func quoted(_ words: String) -> String { words.isEmpty ? "" : ": " + words }

/// Spawn attributes: a process group of the child's own (so a stop reaches what it
/// starts, and a terminal's Ctrl-C reaches the driver alone, which then stops it), an
/// empty signal mask (the driver blocks SIGINT and SIGTERM for its signal thread, and a
/// child inherits the mask) and default signal actions.
private final class SpawnAttributes {
    var value = posix_spawnattr_t()

    init() {
        posix_spawnattr_init(&value)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&value, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&value, &defaults)
        posix_spawnattr_setpgroup(&value, 0)
        posix_spawnattr_setflags(&value, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
    }

    deinit { posix_spawnattr_destroy(&value) }
}

/// Reads a child's standard output on a thread of its own, counting lines and keeping
/// only the last few hundred bytes.
private final class LineCounter: Sendable {
    let lines = Atomic<Int>(0)
    private let last = Mutex<[UInt8]>([])
    private let descriptor: Int32

    init(reading descriptor: Int32) {
        self.descriptor = descriptor
        Thread { [self] in run() }.start()
    }

    var tail: String { String(decoding: last.withLock { $0 }, as: UTF8.self) }

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            let newlines = buffer[0..<count].reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
            lines.add(newlines, ordering: .relaxed)
            last.withLock { last in
                last.append(contentsOf: buffer[0..<count])
                if last.count > 600 { last.removeFirst(last.count - 300) }
            }
        }
        close(descriptor)
    }
}
