import Foundation
import Synchronization

/// What the driver started and must not leave behind: its children (each in a process
/// group of its own), the throwaway clusters under its work folder, and the folder.
/// `stopAll` ends them, once, on every way out: the end of a run, a failure, or
/// SIGINT, SIGTERM or SIGHUP (caught by `catchSignals`).
final class Cleanup: Sendable {
    static let shared = Cleanup()

    private struct State {
        var children: [pid_t: String] = [:]
        var stopping = false
        var signal: Int32?
        var work: WorkFolder?
        var rowcast: String?
    }

    private let state = Mutex(State())
    /// Held for the whole of `stopAll`: a second caller waits for the first to finish.
    private let stopping = NSLock()

    /// Runs `spawn` and registers the child it returns; refuses once stopping has begun,
    /// so no child starts after `stopAll` has taken the list.
    func spawning(_ spawn: () throws -> Child) throws -> Child {
        try state.withLock { (state: inout State) throws -> Child in
            guard !state.stopping else { throw BenchFailure("stopping: \(state.signal.map { "signal \($0)" } ?? "the run ended")") }
            let child = try spawn()
            state.children[child.pid] = child.name
            return child
        }
    }

    /// A reaped child's pid leaves the list.
    func forget(_ pid: pid_t) {
        _ = state.withLock { $0.children.removeValue(forKey: pid) }
    }

    /// The work folder to remove at the end, and the rowcast binary that stops the
    /// clusters started in it.
    func own(_ work: WorkFolder, rowcast: String) {
        state.withLock {
            $0.work = work
            $0.rowcast = rowcast
        }
    }

    /// The signal that interrupted the run, if one did.
    var signal: Int32? { state.withLock { $0.signal } }

    /// Ends every child still registered (SIGTERM to its group, SIGKILL to what is left
    /// after ten seconds, and reaps them), stops every cluster under the work folder, and
    /// removes the folder. Idempotent.
    func stopAll() {
        stopping.lock()
        defer { stopping.unlock() }
        let (children, work, rowcast) = state.withLock { state in
            state.stopping = true
            let taken = (state.children, state.work, state.rowcast)
            state.children = [:]
            state.work = nil
            return taken
        }
        for pid in children.keys { _ = kill(-pid, SIGTERM) }
        var alive = Set(children.keys)
        let deadline = ContinuousClock.now + .seconds(10)
        while !alive.isEmpty, ContinuousClock.now < deadline {
            // Another thread blocked in wait4 on one of them may reap it first: ECHILD.
            alive = alive.filter { pid in
                var status: Int32 = 0
                return waitpid(pid, &status, WNOHANG) == 0
            }
            if !alive.isEmpty { nap(0.05) }
        }
        for pid in alive {
            _ = kill(-pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
        guard let work else { return }
        if let rowcast { Cluster.stopEvery(in: work, rowcast: rowcast) }
        work.remove()
    }

    /// SIGINT, SIGTERM and SIGHUP stop everything and exit with 128 + the signal. The
    /// handler only writes the signal's number to a pipe; a thread reads it and cleans up.
    func catchSignals() {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return }
        signalWriteEnd = ends[1]
        let readEnd = ends[0]
        Thread { [self] in
            var number: UInt8 = 0
            while read(readEnd, &number, 1) < 0, errno == EINTR {}
            state.withLock { $0.signal = Int32(number) }
            FileHandle.standardError.write(Data("rowcast-bench: interrupted by signal \(number); stopping what it started\n".utf8))
            stopAll()
            exit(128 + Int32(number))
        }.start()
        for number in [SIGINT, SIGTERM, SIGHUP] {
            _ = Glibc.signal(number) { received in
                var byte = UInt8(truncatingIfNeeded: received)
                _ = write(signalWriteEnd, &byte, 1)
            }
        }
    }
}

/// The pipe's write end, for the signal handler (a plain global: no lazy initialiser
/// runs inside a handler).
nonisolated(unsafe) private var signalWriteEnd: Int32 = -1

/// A temporary folder for one run: the children's output, scripts for psql and
/// pgbench, and the throwaway clusters (so cleanup finds them even when a start was
/// interrupted). Readable by all: as root the server runs as `postgres`.
final class WorkFolder: Sendable {
    let root: String
    private let count = Atomic<Int>(0)

    init() throws {
        let base = FileManager.default.temporaryDirectory.path
        var template = Array((base + "/rowcast-bench-XXXXXX").utf8CString)
        let made: String? = template.withUnsafeMutableBufferPointer { buffer in
            guard let start = buffer.baseAddress, let path = mkdtemp(start) else { return nil }
            return String(cString: path)
        }
        guard let made else { throw BenchFailure("cannot create a temporary folder in \(base)") }
        chmod(made, 0o755)
        root = made
    }

    func path(_ name: String) -> String { root + "/" + name }

    /// A unique file-name prefix for the next child: "007-rowcast-serve".
    func nextTag(_ name: String) -> String {
        let number = count.add(1, ordering: .relaxed).newValue
        return String(format: "%03d-", number) + name.map { $0.isLetter || $0.isNumber ? String($0) : "-" }.joined()
    }

    /// Writes `text` to a new file of the folder and returns its path.
    func write(_ name: String, _ text: String) throws -> String {
        let path = path(nextTag(name))
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}
