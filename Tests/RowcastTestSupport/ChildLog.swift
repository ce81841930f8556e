import Foundation

/// A long-running child's output, copied to `ROWCAST_TEST_CHILD_LOGS/PID.log` when
/// `make test` sets that folder: its watchdog prints the end of each file whose child
/// is still alive when the run hangs. The first line is the command.
package final class ChildLog: @unchecked Sendable {
    private let handle: FileHandle

    /// Nil when no folder is set or the file cannot be made; logging is best effort.
    package init?(pid: Int32, command: [String]) {
        guard let folder = ProcessInfo.processInfo.environment["ROWCAST_TEST_CHILD_LOGS"], !folder.isEmpty else { return nil }
        let path = folder + "/\(pid).log"
        guard FileManager.default.createFile(atPath: path, contents: Data((command.joined(separator: " ") + "\n").utf8)),
            let handle = FileHandle(forWritingAtPath: path)
        else { return nil }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    /// Appends what the child wrote. Called from its reader thread alone.
    package func append(_ data: Data) { try? handle.write(contentsOf: data) }

    package func close() { try? handle.close() }
}
