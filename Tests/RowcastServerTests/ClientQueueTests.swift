import NIOCore
import NIOEmbedded
import RowcastServer
import RowcastTestSupport
import Synchronization
import Testing

@Suite struct ClientQueueTests {
    static func frame(_ n: Int) -> Broadcaster.Outgoing { .init(ByteBuffer(string: "\(n)"), cursor: "\(n)") }

    static func numbers(_ items: [Broadcaster.Outgoing]) -> [Int] {
        items.compactMap { $0.cursor.flatMap { Int($0) } }
    }

    /// A burst wakes the event-loop writer once, and the writer takes the whole burst
    /// in order: one write and one flush per batch, not per frame.
    @Test func aBurstWakesTheWriterOnceAndIsTakenWhole() {
        let queue = ClientQueue(limit: 1_000)
        let taken = Mutex<[[Int]]>([])
        let drains = Atomic<Int>(0)
        // An event loop that runs what was scheduled only when told to: the burst
        // arrives before the drain runs.
        let eventLoop = EmbeddedEventLoop()
        queue.attach(on: eventLoop) {
            drains.add(1, ordering: .relaxed)
            let (items, _) = queue.take()
            taken.withLock { $0.append(Self.numbers(items)) }
        }
        var wakes = 0
        for n in 1...500 {
            if case .enqueued(wake: true) = queue.yield(Self.frame(n)) {
                wakes += 1
                queue.wake()
            }
        }
        #expect(wakes == 1)
        eventLoop.run()
        #expect(drains.load(ordering: .relaxed) == 1)
        #expect(taken.withLock { $0 } == [Array(1...500)])
        // The next item wakes the writer again.
        #expect(queue.yield(Self.frame(501)) == .enqueued(wake: true))
    }

    @Test func aFullQueueDropsAndAFinishedOneRefusesButHandsOverWhatItHolds() async throws {
        try await within(60, "a full queue drops and a finished one refuses but hands over what it holds") {
            let queue = ClientQueue(limit: 3)
            for n in 1...3 { #expect(queue.yield(Self.frame(n)) == .enqueued(wake: false)) }
            #expect(queue.yield(Self.frame(4)) == .dropped)
            queue.finish()
            #expect(queue.yield(Self.frame(5)) == .terminated)
            #expect(Self.numbers(await queue.next() ?? []) == [1, 2, 3])
            #expect(await queue.next() == nil)
        }
    }

    @Test func aWaitingTaskGetsTheNextItemAndCancellationEndsTheWait() async throws {
        try await within(60, "a waiting task gets the next item and cancellation ends the wait") {
            let queue = ClientQueue(limit: 8)
            // Whether or not the task is already waiting, it gets the item.
            async let first = queue.next()
            _ = queue.yield(Self.frame(1))
            #expect(Self.numbers(await first ?? []) == [1])
            let waiting = Task { await queue.next() }
            waiting.cancel()
            #expect(await waiting.value == nil)
        }
    }

    /// A Socket.IO long-poll released for the upgrade: an interruption ends a wait with
    /// an empty batch, or, when nobody waits yet, the next wait; items still come in
    /// order afterwards, and the one-at-a-time reader skips the empty batch.
    @Test func anInterruptionEndsTheWaitWithAnEmptyBatchEvenIfTheWaitComesLater() async throws {
        try await within(60, "an interruption ends the wait with an empty batch even if the wait comes later") {
            let queue = ClientQueue(limit: 8)
            let waiting = Task { await queue.next() }
            // Interrupted while waiting, or before the wait began: either way it ends empty.
            queue.interrupt()
            #expect(await waiting.value?.isEmpty == true)
            queue.interrupt()
            #expect(await queue.next()?.isEmpty == true)
            queue.interrupt()
            _ = queue.yield(Self.frame(1))
            #expect(Self.numbers(await queue.next() ?? []) == [1], "items first; the interruption is spent")
            queue.interrupt()
            _ = queue.yield(Self.frame(2))
            queue.finish()
            var iterator = queue.items.makeAsyncIterator()
            #expect(await iterator.next().map { Self.numbers([$0]) } == [2])
            #expect(await iterator.next() == nil)
        }
    }

    /// A long-poll answer takes at most `limit` items; the rest wait, in order, for the
    /// next one.
    @Test func aLimitedBatchLeavesTheRestInOrder() async throws {
        try await within(60, "a limited batch leaves the rest in order") {
            let queue = ClientQueue(limit: 64)
            for n in 1...40 { _ = queue.yield(Self.frame(n)) }
            #expect(Self.numbers(await queue.next(limit: 16) ?? []) == Array(1...16))
            #expect(Self.numbers(await queue.next(limit: 16) ?? []) == Array(17...32))
            _ = queue.yield(Self.frame(41))
            queue.finish()
            #expect(Self.numbers(await queue.next(limit: 16) ?? []) == Array(33...41))
            #expect(await queue.next(limit: 16) == nil)
        }
    }

    /// The writer holds the queue and the queue holds the writer: once the queue has
    /// finished and the writer took the rest, the queue lets it go, or every closed
    /// connection would stay in memory.
    @Test func aFinishedQueueLetsItsWriterGo() {
        final class Writer: Sendable {}
        let queue = ClientQueue(limit: 8)
        let eventLoop = EmbeddedEventLoop()
        weak var released: Writer?
        do {
            let writer = Writer()
            released = writer
            queue.attach(on: eventLoop) { [writer, queue] in
                _ = writer
                _ = queue.take()
            }
        }
        _ = queue.yield(Self.frame(1))
        queue.wake()
        eventLoop.run()
        #expect(released != nil, "still attached while the queue is open")
        queue.finish()
        eventLoop.run()
        #expect(released == nil)
    }
}
