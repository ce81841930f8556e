import Foundation

/// How a child run to completion ended, and everything it wrote.
package struct ChildResult: Sendable {
    package let status: Int32
    package let stdout: String
    package let stderr: String
}

/// Runs a program to completion and returns its exit status and output, or throws
/// `DeadlinePassed` (with the command and the end of its output) after killing it when
/// it has not exited within `seconds`. Blocking: call it from a thread, or from a test
/// that may block.
///
/// Spawned with `posix_spawn` and reaped with `waitpid`, nothing of Dispatch's: both
/// pipes are read as output comes (neither fills and stalls the child); the child gets
/// no descriptor of the test process but its three, and these pipes are close-on-exec,
/// so no test's pipe stays open in another test's child. A grandchild that keeps them
/// open after the child exits (a server `pg_ctl` started) is not waited for beyond two
/// seconds.
package func runChild(
    _ program: String,
    _ arguments: [String],
    environment: [String: String]? = nil,
    seconds: Double = 120
) throws -> ChildResult {
    let command = ([program] + arguments).map { $0.count > 60 ? $0.prefix(57) + "..." : $0 }.joined(separator: " ")
    let child = try SpawnedChild(program, arguments, environment: environment ?? ProcessInfo.processInfo.environment)
    let deadline = ContinuousClock.now + clampedDuration(seconds: seconds)
    var status: Int32?
    var exitedAt: ContinuousClock.Instant?
    while true {
        child.read(waitingUpTo: 100)
        if status == nil, let ended = child.reap() {
            status = ended
            exitedAt = .now
        }
        if let exitedAt, child.atEnd || ContinuousClock.now - exitedAt > .seconds(2) { break }
        if status == nil, ContinuousClock.now > deadline {
            child.kill()
            throw DeadlinePassed(awaited: "`\(command)` to exit", seconds: seconds, seen: child.stderrText + child.stdoutText)
        }
    }
    return ChildResult(status: status ?? -1, stdout: child.stdoutText, stderr: child.stderrText)
}

/// A child process with its stdout and stderr on non-blocking pipes.
private final class SpawnedChild {
    let pid: pid_t
    private var descriptors: [Int32]
    private var output: [Int32: [UInt8]] = [:]
    private let stdoutDescriptor: Int32
    private let stderrDescriptor: Int32
    private var reaped = false

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: AddCloseFrom.self) }

    init(_ program: String, _ arguments: [String], environment: [String: String]) throws {
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1]
        guard pipe(&out) == 0, pipe(&err) == 0 else {
            let cause = String(cString: strerror(errno))
            for descriptor in out + err where descriptor >= 0 { close(descriptor) }
            throw DeadlinePassed(awaited: "pipes for \(program)", seconds: 0, seen: cause)
        }
        // Close-on-exec at once, so children other tests spawn meanwhile do not hold them.
        for descriptor in out + err { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        // Nothing else of the test process's: another test's pipe that stayed open in
        // this child would not end when that test's own child exits. (glibc 2.34 has
        // it; Swift's Glibc module does not declare it.)
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let attributes = SpawnAttributes()
        var pid: pid_t = 0
        let spawned = program.contains("/")
            ? posix_spawn(&pid, program, &actions, &attributes.value, argv, envp)
            : posix_spawnp(&pid, program, &actions, &attributes.value, argv, envp)
        for descriptor in [out[1], err[1]] { close(descriptor) }
        guard spawned == 0 else {
            for descriptor in [out[0], err[0]] { close(descriptor) }
            throw DeadlinePassed(awaited: "\(program) to start", seconds: 0, seen: String(cString: strerror(spawned)))
        }
        self.pid = pid
        stdoutDescriptor = out[0]
        stderrDescriptor = err[0]
        descriptors = [out[0], err[0]]
        for descriptor in descriptors { _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK) }
    }

    deinit {
        for descriptor in descriptors { close(descriptor) }
        if !reaped {
            Glibc.kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    var atEnd: Bool { descriptors.isEmpty }
    var stdoutText: String { String(decoding: output[stdoutDescriptor] ?? [], as: UTF8.self) }
    var stderrText: String { String(decoding: output[stderrDescriptor] ?? [], as: UTF8.self) }

    /// Waits up to `milliseconds` for output and takes all that is there (or, once both
    /// pipes have ended, just waits: the caller polls for the exit).
    func read(waitingUpTo milliseconds: Int32) {
        guard !descriptors.isEmpty else {
            _ = poll(nil, 0, milliseconds)
            return
        }
        var polled = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        guard poll(&polled, nfds_t(polled.count), milliseconds) > 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        for entry in polled where entry.revents != 0 {
            while true {
                let count = Glibc.read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    output[entry.fd, default: []].append(contentsOf: buffer[0..<count])
                    continue
                }
                if count < 0, errno == EAGAIN || errno == EINTR { break }
                close(entry.fd)
                descriptors.removeAll { $0 == entry.fd }
                break
            }
        }
    }

    /// The exit status once the child has exited (128 + the signal when a signal ended it).
    func reap() -> Int32? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        reaped = true
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    func kill() {
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        reaped = true
    }
}

/// Spawn attributes that give the child an empty signal mask and default actions.
/// Threads of the cooperative pool block SIGTERM, SIGINT and others, and a spawned
/// child inherits its parent thread's mask: without this, a child started from a test
/// ignores the SIGTERM that is meant to stop it.
final class SpawnAttributes {
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
        posix_spawnattr_setflags(&value, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    }

    deinit { posix_spawnattr_destroy(&value) }
}
