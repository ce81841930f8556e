import NIOCore
import Synchronization

/// The frames waiting for one client, bounded in count, taken a batch at a time.
///
/// The broadcaster appends; the client's writer takes everything queued so far in one
/// go and writes it with one flush, so that a client that falls a little behind costs
/// one system call per batch, not one per frame. A writer takes batches either on its
/// channel's event loop (``attach(on:drain:)``: WebSocket sessions, with no task
/// switch per frame) or from a task (``next()``: Server-Sent Events and tests).
package final class ClientQueue: Sendable {
    /// What ``yield(_:)`` did with an item.
    package enum YieldResult: Sendable, Equatable {
        /// Queued; `wake` is set when the writer must be woken (the queue was empty),
        /// which the caller does with ``wake()`` once it holds no lock.
        case enqueued(wake: Bool)
        /// The queue was full: the item was not queued.
        case dropped
        /// The queue was finished: the item was not queued.
        case terminated
    }

    private struct State {
        var items: [Broadcaster.Outgoing] = []
        var finished = false
        /// A task waiting in ``next()``.
        var waiter: CheckedContinuation<[Broadcaster.Outgoing]?, Never>?
        /// An event-loop writer, once attached.
        var drainer: Drainer?
        /// A drain is scheduled and has not taken the items yet.
        var drainScheduled = false
        /// ``interrupt()`` found no waiter: the next ``next()`` returns at once.
        var interrupted = false
    }

    private struct Drainer: Sendable {
        let eventLoop: any EventLoop
        let drain: @Sendable () -> Void
    }

    /// Items that may wait before ``yield(_:)`` drops.
    package let limit: Int
    private let state = Mutex(State())

    package init(limit: Int) {
        self.limit = limit
    }

    /// Items queued now.
    package var count: Int { state.withLock { $0.items.count } }

    /// Queues an item unless the queue is full or finished.
    package func yield(_ item: Broadcaster.Outgoing) -> YieldResult {
        let (result, waiter) = state.withLock { state -> (YieldResult, CheckedContinuation<[Broadcaster.Outgoing]?, Never>?) in
            if state.finished { return (.terminated, nil) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (.enqueued(wake: false), waiter)
            }
            guard state.items.count < limit else { return (.dropped, nil) }
            state.items.append(item)
            guard state.drainer != nil, !state.drainScheduled else { return (.enqueued(wake: false), nil) }
            state.drainScheduled = true
            return (.enqueued(wake: true), nil)
        }
        waiter?.resume(returning: [item])
        return result
    }

    /// Schedules the attached writer's drain on its event loop (after a `yield` that
    /// asked for it).
    package func wake() {
        guard let drainer = state.withLock({ $0.drainer }) else { return }
        drainer.eventLoop.execute(drainer.drain)
    }

    /// Ends the queue: what is queued is still taken; nothing more is accepted.
    package func finish() {
        let (waiter, drainer) = state.withLock { state -> (CheckedContinuation<[Broadcaster.Outgoing]?, Never>?, Drainer?) in
            guard !state.finished else { return (nil, nil) }
            state.finished = true
            let waiter = state.items.isEmpty ? state.waiter : nil
            if waiter != nil { state.waiter = nil }
            // Even when a drain is scheduled: a writer may hold it back (its channel is
            // full) and must learn that nothing more will come.
            guard let drainer = state.drainer else { return (waiter, nil) }
            state.drainScheduled = true
            return (waiter, drainer)
        }
        waiter?.resume(returning: nil)
        if let drainer { drainer.eventLoop.execute(drainer.drain) }
    }

    /// Makes `drain` the writer: it runs on `eventLoop` whenever items arrive (once per
    /// burst, not per item) and when the queue finishes, and takes them with ``take()``.
    package func attach(on eventLoop: any EventLoop, drain: @escaping @Sendable () -> Void) {
        let schedule = state.withLock { state -> Bool in
            state.drainer = Drainer(eventLoop: eventLoop, drain: drain)
            guard !state.items.isEmpty || state.finished, !state.drainScheduled else { return false }
            state.drainScheduled = true
            return true
        }
        if schedule { eventLoop.execute(drain) }
    }

    /// Everything queued, and whether the queue has finished (nothing more will come).
    /// Once it has, the writer is let go: it holds the queue, and the queue it.
    package func take() -> (items: [Broadcaster.Outgoing], finished: Bool) {
        let (items, finished, drainer) = state.withLock { state -> ([Broadcaster.Outgoing], Bool, Drainer?) in
            state.drainScheduled = false
            var items: [Broadcaster.Outgoing] = []
            swap(&items, &state.items)
            guard state.finished else { return (items, false, nil) }
            defer { state.drainer = nil }
            return (items, true, state.drainer)
        }
        _ = drainer  // released here, outside the lock
        return (items, finished)
    }

    /// The next batch: everything queued (at most `limit` items; the rest stay for the
    /// next call), waiting for at least one item; nil once the queue has finished and
    /// is empty, or the task was cancelled. One task at a time.
    package func next(limit: Int = .max) async -> [Broadcaster.Outgoing]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> [Broadcaster.Outgoing]?? in
                    if !state.items.isEmpty {
                        var items: [Broadcaster.Outgoing] = []
                        if state.items.count <= limit {
                            swap(&items, &state.items)
                        } else {
                            items = Array(state.items.prefix(limit))
                            state.items.removeFirst(limit)
                        }
                        state.interrupted = false
                        return .some(items)
                    }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    if state.interrupted {
                        state.interrupted = false
                        return .some([])
                    }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    /// Ends a task's wait in ``next()`` with an empty batch (a Socket.IO long-poll that
    /// must answer at once because the client moves to WebSocket); when no task waits,
    /// the next call to ``next()`` returns the empty batch at once, so that a poll
    /// arriving just after the interruption cannot miss it.
    package func interrupt() {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            if state.waiter == nil { state.interrupted = true }
            return state.waiter
        }
        waiter?.resume(returning: [])
    }

    /// The items one at a time, for writers that take them so (tests).
    package var items: Items { Items(queue: self) }

    package struct Items: AsyncSequence, Sendable {
        let queue: ClientQueue

        package func makeAsyncIterator() -> Iterator { Iterator(queue: queue) }

        package struct Iterator: AsyncIteratorProtocol {
            let queue: ClientQueue
            var batch: [Broadcaster.Outgoing] = []
            var position = 0

            package mutating func next() async -> Broadcaster.Outgoing? {
                while position == batch.count {
                    guard let next = await queue.next() else { return nil }
                    batch = next
                    position = 0
                }
                defer { position += 1 }
                return batch[position]
            }
        }
    }
}
