import Foundation
import RowcastTestSupport
import Testing

/// The test helpers' own promises: a child run to completion inherits nothing of the
/// test process, and one that does not exit in time is killed and named.
@Suite struct ChildProcessTests {
    @Test func aChildGetsNoDescriptorButItsOwnThree() throws {
        // A pipe of some other test, not close-on-exec, as Foundation's Pipe makes them.
        var other: [Int32] = [0, 0]
        #expect(pipe(&other) == 0)
        defer { other.forEach { close($0) } }
        let listed = try runChild("/bin/sh", ["-c", "exec ls /proc/self/fd"], seconds: 30)
        // ls itself opens one descriptor to list the folder.
        let descriptors = listed.stdout.split(separator: "\n").compactMap { Int($0) }.filter { $0 > 3 }
        #expect(descriptors.isEmpty, "the child held \(descriptors) (the other test's pipe: \(other))")
        #expect(listed.status == 0)
    }

    /// Threads of the cooperative pool block SIGTERM and others, and children inherit
    /// the mask: a child that ignored SIGTERM would outlive every stop(SIGTERM).
    @Test func childrenStartWithNoSignalBlockedAndStopOnSIGTERM() async throws {
        let masks = try runChild("/bin/sh", ["-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"], seconds: 30)
        #expect(masks.stdout.contains("SigBlk:\t0000000000000000"), "\(masks.stdout)")
        let sleeper = try RunningProcess("/bin/sleep", ["600"])
        #expect(try await sleeper.stop(SIGTERM, seconds: 30) == SIGTERM)
    }

    @Test func aChildThatDoesNotExitInTimeIsKilledAndNamed() throws {
        let started = ContinuousClock.now
        #expect {
            try runChild("/bin/sh", ["-c", "echo still here; exec sleep 600"], seconds: 1)
        } throws: { error in
            "\(error)".hasPrefix("waited 1 s for `/bin/sh -c echo still here; exec sleep 600` to exit; seen: still here")
        }
        #expect(ContinuousClock.now - started < .seconds(300), "killed at its deadline, not at sleep's end")
    }

    @Test func aWaitThatNeverEndsFailsAtItsDeadline() async throws {
        await #expect {
            try await within(1, "a continuation nobody resumes", seen: { "nothing" }) {
                await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }
            }
        } throws: { error in
            "\(error)" == "waited 1 s for a continuation nobody resumes; seen: nothing"
        }
        await #expect {
            try await onThread("a thread that blocks", within: 1) { sleep(30) }
        } throws: { error in
            "\(error)" == "waited 1 s for a thread that blocks"
        }
    }
}
