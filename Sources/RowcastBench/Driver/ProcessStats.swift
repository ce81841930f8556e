import Foundation

/// What the kernel says about a process the bench measures (Linux's `/proc`): CPU
/// time, memory, children.
enum ProcessStats {
    /// Clock ticks per second, the unit of `/proc/PID/stat`'s times.
    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// The fields of `/proc/PID/stat` after the command (whose name may hold spaces):
    /// index 0 is the state (field 3 in proc(5)).
    private static func statFields(_ pid: pid_t) -> [Substring]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    /// User plus system CPU seconds the process has used (fields 14 and 15).
    static func cpuSeconds(_ pid: pid_t) throws -> Double {
        guard let fields = statFields(pid), fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw BenchFailure("cannot read the CPU time of process \(pid) (it has exited?)")
        }
        return (user + system) / ticksPerSecond
    }

    /// CPU seconds of the process's reaped children (fields 16 and 17): a walsender's
    /// time reaches the postmaster's total when it exits.
    static func childrenCPUSeconds(_ pid: pid_t) throws -> Double {
        guard let fields = statFields(pid), fields.count > 15, let user = Double(fields[13]), let system = Double(fields[14]) else {
            throw BenchFailure("cannot read the children's CPU time of process \(pid)")
        }
        return (user + system) / ticksPerSecond
    }

    /// A `/proc/PID/status` line in kilobytes: `VmRSS` (resident now), `VmHWM` (peak).
    static func kilobytes(_ field: String, of pid: pid_t) throws -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            if let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) }) {
                return value
            }
        }
        throw BenchFailure("cannot read \(field) of process \(pid) (it has exited?)")
    }

    /// Children of `parent` that are walsenders, exiting, or exited and not yet reaped:
    /// while any is, the parent's children CPU total is not final. A process that is
    /// exiting has already let its memory go, so its command line reads empty (and its
    /// state is not yet Z): that is how a walsender looks the moment its client is gone.
    static func unfinishedWalsenders(of parent: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid_t($0) }.filter { pid in
            guard let fields = statFields(pid), fields.count > 1, pid_t(fields[1]) == parent else { return false }
            if fields[0] == "Z" || fields[0] == "X" { return true }
            let command = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            return command.isEmpty || command.contains("walsender")
        }
    }
}

/// The machine a run measured, for the benchmark document's header.
enum Machine {
    static var cores: Int { sysconf(Int32(_SC_NPROCESSORS_ONLN)) }

    static var memoryGiB: Int {
        Int((Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_073_741_824).rounded())
    }

    static var kernel: String {
        var names = utsname()
        uname(&names)
        return withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static var processor: String {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("model name") }
        return line.flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
    }
}
