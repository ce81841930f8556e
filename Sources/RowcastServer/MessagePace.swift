import NIOCore
import NIOWebSocket

/// How fast one client's messages are taken (`--client-messages-per-second`): as many
/// as the rate at once, then one every `1/rate` seconds (a token bucket, kept as the
/// time its next message is due, GCRA). A message that comes early waits for its turn
/// instead of being refused: the session reads on only then, so a client that floods
/// is slowed by TCP's own back-pressure, costs nothing while it waits, and a client
/// that only bursts now and then never notices.
struct MessagePace {
    /// Nanoseconds between messages at the steady rate; 0: no limit.
    private let interval: Int64
    /// How far ahead of `now` the schedule may run before a message must wait.
    private let slack: Int64
    /// When the next message is due on the steady schedule.
    private var due: NIODeadline?

    init(perSecond rate: Int) {
        // Saturating: a rate of 0 or above a billion is no limit, never a division trap.
        guard rate > 0, rate < 1_000_000_000 else {
            interval = 0
            slack = 0
            return
        }
        interval = 1_000_000_000 / Int64(rate)
        slack = interval * Int64(rate - 1)
    }

    /// How long a message arriving at `now` would wait, without taking its turn.
    func peek(now: NIODeadline) -> TimeAmount? {
        guard interval > 0, let due else { return nil }
        let allowed = max(due, now) - .nanoseconds(slack)
        return allowed > now ? allowed - now : nil
    }

    /// Whether a whole burst may go at `now`: the pace holds nothing from the past.
    func isIdle(now: NIODeadline) -> Bool {
        guard let due else { return true }
        return due <= now
    }

    /// Takes a message arriving at `now`: how long it must wait first, or nil to go at once.
    mutating func wait(now: NIODeadline) -> TimeAmount? {
        guard interval > 0 else { return nil }
        let start = max(due ?? now, now)
        due = start + .nanoseconds(interval)
        let allowed = start - .nanoseconds(slack)
        return allowed > now ? allowed - now : nil
    }
}

extension MessagePace {
    /// Window records matched for a client per turn of its pace: a `subscribe` with
    /// `last` or `since` that matched a thousand of them costs twenty messages' turns.
    static let recordsPerTurn = 50

    /// Charges `records` matched for the client to its schedule: its next messages wait
    /// that many turns longer (whole turns; the rest is forgotten), `atMost` seconds'
    /// worth for one charge. A connection's is 10 s: past about 30 s its WebSocket
    /// would miss the server's ping (pongs are read with its messages); an address's
    /// (``AddressPace``) is 60 s.
    /// Returns the turns charged.
    @discardableResult
    mutating func charge(examined records: Int, now: NIODeadline = .now(), atMost seconds: Int64 = 10) -> Int {
        guard interval > 0, records >= Self.recordsPerTurn else { return 0 }
        let turns = min(Int64(records / Self.recordsPerTurn), max(1, seconds * 1_000_000_000 / interval))
        due = max(due ?? now, now) + .nanoseconds(interval * turns)
        return Int(turns)
    }

    /// Gives back the turns of `records` charged ahead and not used (whole turns), but
    /// no more than what is still ahead of `now` of the charge that ran `until`: time
    /// that went by while a scan held its prepayment (a replay read slowly) is spent, or
    /// an address could bank turns and spend them later in one burst.
    mutating func refund(examined records: Int, until: NIODeadline, now: NIODeadline = .now()) {
        guard interval > 0, let due, records >= Self.recordsPerTurn, until > now else { return }
        // At most a minute's worth was charged ahead: no overflow.
        let ahead = (until - now).nanoseconds / interval
        self.due = due - .nanoseconds(interval * min(Int64(min(records / Self.recordsPerTurn, 1 << 30)), ahead))
    }

    /// When the next message is due (tests, and what a charge ahead runs until).
    var dueTime: NIODeadline? { due }

    /// Takes a message arriving now and, when it came early, waits its turn on a timer
    /// of `eventLoop` (not the cooperative pool's clock), which the server's shutdown
    /// ends (``AddressPace/hold(_:on:)``). `counted` hears of each wait.
    mutating func take(on eventLoop: any EventLoop, endingWith waits: AddressPace, counted: (() -> Void)? = nil) async {
        guard let delay = wait(now: .now()) else { return }
        counted?()
        await waits.hold(delay, on: eventLoop)
    }
}

/// Paces every WebSocket frame a client sends, whatever its kind: pings (answered by
/// the WebSocket layer with a pong, before any message reaches the session),
/// continuation frames (assembled there), closes, and data. It sits just after the
/// frame decoder. A frame that comes ahead of its turn is held until then, and the
/// connection reads nothing more while any is held, so a flood is slowed by TCP's
/// back-pressure at no cost to the server while it waits. What is held is at most one
/// read's frames: a WebSocket reads at most ``readBytes`` at a time. The rate is
/// ``framesPerMessage`` times the message rate: a message in a few fragments, or a
/// ping now and then, never waits.
final class WebSocketFramePace: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    static let framesPerMessage = 8
    /// The most a WebSocket reads at once, one read per event: client messages are
    /// small, and a large one takes more reads, not more memory.
    static let readBytes = 4096

    private var pace: MessagePace
    /// Frames waiting for their turn, each with the time it may go; oldest first.
    private var held = CircularBuffer<(frame: NIOAny, due: NIODeadline)>()
    /// A timer will release the oldest held frame.
    private var timerArmed = false
    /// A read was asked for while frames were held: passed on once none is.
    private var readWaiting = false
    private let counted: (() -> Void)?

    init(messagesPerSecond: Int, counted: (() -> Void)? = nil) {
        // Saturating: a rate of 0 (no limit) stays 0; a huge one is no limit either.
        let (rate, overflow) = messagesPerSecond.multipliedReportingOverflow(by: Self.framesPerMessage)
        pace = MessagePace(perSecond: overflow ? 0 : rate)
        self.counted = counted
    }

    /// Put after the WebSocket frame decoder of `channel` (on its event loop).
    static func install(on channel: any Channel, messagesPerSecond: Int, counted: (@Sendable () -> Void)? = nil) {
        guard messagesPerSecond > 0 else { return }
        channel.eventLoop.execute {
            let pipeline = channel.pipeline.syncOperations
            guard let decoder = try? pipeline.context(handlerType: ByteToMessageHandler<WebSocketFrameDecoder>.self) else { return }
            try? pipeline.addHandler(WebSocketFramePace(messagesPerSecond: messagesPerSecond, counted: counted), position: .after(decoder.handler))
            try? channel.syncOptions?.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: readBytes))
            try? channel.syncOptions?.setOption(.maxMessagesPerRead, value: 1)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now()
        let wait = pace.wait(now: now)
        // In order: once one waits, every later frame waits behind it.
        guard wait != nil || !held.isEmpty else {
            context.fireChannelRead(data)
            return
        }
        counted?()
        held.append((data, now + (wait ?? .zero)))
        armTimer(context: context)
    }

    func read(context: ChannelHandlerContext) {
        guard held.isEmpty else {
            readWaiting = true
            return
        }
        context.read()
    }

    /// A closed connection's held frames are dropped, never handled after it left.
    func channelInactive(context: ChannelHandlerContext) {
        held.removeAll()
        context.fireChannelInactive()
    }

    private func armTimer(context: ChannelHandlerContext) {
        guard !timerArmed, let first = held.first else { return }
        timerArmed = true
        let target = NIOLoopBound(Target(handler: self, context: context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(deadline: first.due) {
            guard let handler = target.value.handler, let context = target.value.context else { return }
            handler.timerArmed = false
            handler.release(context: context)
        }
    }

    /// Passes on the held frames whose turn came, then reads on once none is held.
    private func release(context: ChannelHandlerContext) {
        guard context.channel.isActive else {
            held.removeAll()
            return
        }
        let now = NIODeadline.now()
        var released = false
        while let first = held.first, first.due <= now {
            held.removeFirst()
            context.fireChannelRead(first.frame)
            released = true
        }
        if released { context.fireChannelReadComplete() }
        if held.isEmpty {
            if readWaiting {
                readWaiting = false
                context.read()
            }
        } else {
            armTimer(context: context)
        }
    }

    private struct Target {
        weak var handler: WebSocketFramePace?
        weak var context: ChannelHandlerContext?
    }
}
