// libFuzzer entry point: one input is one Engine.IO session's life. Its bytes decode
// into the events the shell (`EngineSession` in RowcastServer) feeds
// ``EngineIOSession``, in any order: packets a client sends (well formed ones from a
// table, and any bytes, through the parser the server uses), long-polls arriving and
// answered, timers firing (armed ones, and stale ones the machine must ignore), the
// upgrade probe, WebSockets closing, the queue ending, the server closing. A model of
// the shell holds what the actions ask (the armed timers, the waiting long-poll), and
// after every step the rules below are checked; a broken one traps, with the events
// that led to it, so libFuzzer keeps the input.
//
// The rules are EngineIOSessionTests' random-sequence ones, and those its other tests
// state for one path each, held here for every path.

import RowcastCore
import RowcastWire

typealias Session = EngineIOSession

/// EngineIOSessionTests' settings: three different delays, so each arm's delay names its rule.
private let settings = Session.Settings(pingInterval: .seconds(25), pingTimeout: .seconds(20), connectTimeout: .seconds(45))

/// Packets clients send, well formed or nearly, so that the fuzzer reaches every rule
/// without having to spell them first (raw packets and POST bodies cover the rest).
private let cannedPackets: [String] = [
    "1", "2", "2probe", "3", "3probe", "5", "6", "4", "b4AAAA", "7",
    "40", #"40{"token":"t"}"#, #"40{"pid":"p","offset":"t0000000000000001.0000000000000001"}"#, "40/admin,", "40[]",
    "41", "41/admin,", #"42["subscribe",{"tables":["orders"],"filter":"id=gt.1"}]"#, #"421["ping",{}]"#,
    #"42["unsubscribe"]"#, #"42/admin,["ping",{}]"#, "431[]", "451-[]", "44",
]

/// The fuzzer's bytes, read front to back; past the end, every read is nil or empty.
private struct Input {
    var bytes: ArraySlice<UInt8>

    mutating func byte() -> UInt8? { bytes.popFirst() }

    mutating func take(_ count: Int) -> [UInt8] {
        let taken = bytes.prefix(count)
        bytes = bytes.dropFirst(taken.count)
        return Array(taken)
    }

    /// A credential's lifetime for a CONNECT: never (0), or -1 s to 24.4 s, past ones included.
    mutating func expiry() -> Duration? {
        guard let byte = byte(), byte != 0 else { return nil }
        return .milliseconds(Int(byte) * 100 - 1_100)
    }
}

/// The shell as the fuzzer drives it: the machine, and what its actions made the shell hold.
private struct Shell {
    var session: Session
    /// The timers the shell holds scheduled: armed by `.arm`, let go by `.disarm` or by firing.
    var held: Set<Session.Timer> = []
    var ends = 0
    /// Long-polls told to wait (`pollDecision == .wait`) while the session was open, not yet answered.
    var waitingPolls = 0
    /// The shell's joined socket: a CONNECT joins only without one (EngineSession.connect).
    var socketJoined = false
    var everJoined = false
    var trace: [Session.Event] = []

    init(onWebSocket: Bool) {
        session = Session(settings: settings, onWebSocket: onWebSocket)
    }

    /// Traps when a rule is broken, naming it and the events that led there. Never
    /// inlined: inlined into `feed`, its trap crashed swiftc 6.3.1's optimizer (DCE).
    @inline(never)
    func expect(_ rule: Bool, _ what: @autoclosure () -> String) {
        guard !rule else { return }
        print("engineio-session: after \(trace.count) events: \(trace)")
        fatalError(what())
    }

    /// One event through the machine, its actions carried out on the model, every rule checked.
    mutating func feed(_ event: Session.Event) {
        trace.append(event)
        var stale = false
        if case .timerFired(let timer) = event {
            // A timer that fires is no longer held (EngineSession's scheduled task forgets it first).
            stale = held.remove(timer) == nil
        }
        let wasClosed = session.isClosed
        let before = session.transport
        let actions = session.handle(event)

        expect(!stale || actions.isEmpty, "a timer that was not armed fired and the machine acted: \(actions)")
        expect(!wasClosed || actions.isEmpty, "acted after the end: \(actions)")
        var released = false
        for (index, action) in actions.enumerated() {
            switch action {
            case .arm(let timer, let delay):
                held.insert(timer)
                expect(delay == Self.delay(of: timer, after: event), "armed \(timer) after \(delay) on \(event)")
            case .disarm(let timer):
                expect(held.remove(timer) != nil, "disarmed \(timer), which was not armed")
            case .sendPing:
                expect(actions.contains(where: Self.armsPong), "a ping sent with no pong deadline")
            case .sendPong(let data):
                expect(event == .clientPing(data), "a pong that echoes other data than the client's ping: \(action) on \(event)")
            case .releasePoll:
                released = true
            case .expireCredential:
                expect(event == .timerFired(.credential), "a credential expired on \(event)")
            case .closeWebSocket:
                expect(session.transport == .webSocket, "closed a WebSocket that does not carry the session")
            case .end:
                ends += 1
                expect(index == actions.count - 1, "actions after the end: \(actions)")
            }
        }

        if event == .pollArrived {
            if wasClosed {
                expect(session.pollDecision == .wait, "a long-poll racing the end must wait for the final packets")
            } else {
                expect((session.pollDecision == .noop) == (before == .probing), "a long-poll during a probe is answered with a noop, and only then")
                if session.pollDecision == .wait { waitingPolls += 1 }
            }
        }
        if event == .pollAnswered, waitingPolls > 0 { waitingPolls -= 1 }
        if case .joined = event, !wasClosed { everJoined = true }

        // EngineIOSessionTests' rules: the shell holds what the machine says is armed;
        // the session ends at most once, and is closed exactly when it ended.
        expect(held == session.armed, "the shell holds \(held), the machine says \(session.armed) is armed")
        expect(ends == (session.isClosed ? 1 : 0), "ended \(ends) times, isClosed \(session.isClosed)")
        // Transport: never back from WebSocket; a waiting long-poll is let go whenever
        // the session moves on (else it hangs while another transport carries it).
        expect(before != .webSocket || session.transport == .webSocket, "moved back from WebSocket to \(session.transport)")
        expect(released == (Self.rank(session.transport) > Self.rank(before)), "moved \(before) -> \(session.transport), releasePoll \(released)")
        expect(session.acceptsProbe == (!session.isClosed && session.transport == .polling), "acceptsProbe \(session.acceptsProbe)")
        guard !session.isClosed else { return }
        // An open session is always on its heartbeat (a silent client is always closed
        // in time), keeps its join deadline until it joins, and holds one long-poll at most.
        expect(held.contains(.ping) != held.contains(.pong), "an open session holds \(held): not one heartbeat timer")
        expect(held.contains(.join) == !everJoined, "join deadline held: \(held.contains(.join)), joined: \(everJoined)")
        expect(waitingPolls <= 1, "\(waitingPolls) long-polls wait at once")
        expect(session.isPolling == (waitingPolls == 1), "isPolling \(session.isPolling) with \(waitingPolls) waiting")
    }

    /// One Engine.IO packet, as `EngineSession.receive` turns it into events; a packet
    /// the parser refuses is an `error` event for the client and nothing for the machine.
    mutating func receive(_ text: Substring.UTF8View, expiresIn: Duration?) {
        guard let packet = try? EnginePacket.parse(text) else { return }
        switch packet {
        case .close: feed(.clientClose)
        case .ping(let data): feed(.clientPing(data))
        case .pong: feed(.clientPong)
        case .upgrade, .noop: break
        case .message(.connect(namespace: "/", _)):
            guard !socketJoined, !session.isClosed else { return }
            socketJoined = true
            feed(.joined(expiresIn: expiresIn))
        case .message(.disconnect(namespace: "/")):
            socketJoined = false
            feed(.left)
        case .message(.event(namespace: "/", _, let name, let data)):
            // What a joined socket's event asks is the broadcaster's business, not the session's.
            if socketJoined { _ = try? ClientMessage.parse(event: name, data: data.map(JSONText.init)) }
        case .message: break
        }
    }

    /// The delay each timer is armed with: its setting, or what the event carried.
    static func delay(of timer: Session.Timer, after event: Session.Event) -> Duration? {
        switch (timer, event) {
        case (.ping, _): settings.pingInterval
        case (.pong, _): settings.pingTimeout
        case (.join, _): settings.connectTimeout
        case (.credential, .joined(let expiresIn)): expiresIn
        case (.ended, .queueEnded(let grace)): grace
        default: nil
        }
    }

    static func armsPong(_ action: Session.Action) -> Bool {
        guard case .arm(.pong, _) = action else { return false }
        return true
    }

    static func rank(_ transport: Session.Transport) -> Int {
        switch transport {
        case .polling: 0
        case .probing: 1
        case .webSocket: 2
        }
    }
}

/// The first byte picks the first transport (odd: WebSocket); then each byte is an
/// opcode (modulo 15, `switch` below) followed by its operands. Promises, for every
/// input: no rule above breaks (a broken one traps), and nothing traps in the
/// machine, the packet parsers or the client-message parser.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = Input(bytes: ArraySlice(UnsafeBufferPointer(start: data, count: size)))
    var shell = Shell(onWebSocket: (input.byte() ?? 0) & 1 == 1)
    shell.feed(.opened)
    while let op = input.byte() {
        switch op % 15 {
        case 0:
            // One of the timers the shell holds fires.
            let armed = Session.Timer.allCases.filter(shell.held.contains)
            guard let pick = input.byte(), !armed.isEmpty else { continue }
            shell.feed(.timerFired(armed[Int(pick) % armed.count]))
        case 1:
            // Any timer fires: one not armed is a stale fire, which changes nothing.
            let timers = Session.Timer.allCases
            shell.feed(.timerFired(timers[Int(input.byte() ?? 0) % timers.count]))
        case 2:
            let expiresIn = input.expiry()
            let packet = cannedPackets[Int(input.byte() ?? 0) % cannedPackets.count]
            shell.receive(packet[...].utf8, expiresIn: expiresIn)
        case 3:
            // One WebSocket text message: any bytes, decoded as the server's WebSocket reader does.
            let expiresIn = input.expiry()
            let text = String(decoding: input.take(Int(input.byte() ?? 0)), as: UTF8.self)
            shell.receive(text[...].utf8, expiresIn: expiresIn)
        case 4:
            // One polling POST body: packets joined with the record separator, split as the server does.
            let expiresIn = input.expiry()
            let length = Int(input.byte() ?? 0) << 8 | Int(input.byte() ?? 0)
            for packet in EnginePacket.split(payload: input.take(length)) {
                shell.expect(!packet.isEmpty && !packet.contains(0x1E), "split yielded \(Array(packet))")
                shell.receive(packet, expiresIn: expiresIn)
            }
        case 5: shell.feed(.pollArrived)
        case 6: shell.feed(.pollAnswered)
        case 7: shell.feed(.probed)
        case 8: shell.feed(.upgraded)
        case 9: shell.feed(.webSocketClosed(carrier: false))
        case 10: shell.feed(.webSocketClosed(carrier: true))
        case 11: shell.feed(.queueEnded(grace: .milliseconds(Int(input.byte() ?? 0) * 50)))
        case 12:
            let causes: [Session.Cause] = [.clientClosed, .noPong, .neverJoined, .overlappingPolls, .transportClosed, .queueEnded, .server]
            shell.feed(.close(causes[Int(input.byte() ?? 0) % causes.count]))
        case 13:
            // A join past the shell's guard (a second CONNECT racing the first): the machine holds anyway.
            shell.socketJoined = true
            shell.feed(.joined(expiresIn: input.expiry()))
        default:
            shell.socketJoined = false
            shell.feed(.left)
        }
    }
    return 0
}
