import RowcastTestSupport
import RowcastWire
import Testing

/// Engine.IO's rules without a socket or a clock: events in, actions out.
@Suite struct EngineIOSessionTests {
    typealias Session = EngineIOSession
    static let settings = Session.Settings(pingInterval: .seconds(25), pingTimeout: .seconds(20), connectTimeout: .seconds(45))

    static func opened(onWebSocket: Bool = false) -> Session {
        var session = Session(settings: settings, onWebSocket: onWebSocket)
        #expect(session.handle(.opened) == [.arm(.ping, after: .seconds(25)), .arm(.join, after: .seconds(45))])
        return session
    }

    @Test func theHeartbeatPingsWaitsForThePongAndClosesWithoutOne() {
        var session = Self.opened()
        #expect(session.handle(.timerFired(.ping)) == [.arm(.pong, after: .seconds(20)), .sendPing])
        #expect(session.handle(.clientPong) == [.disarm(.pong), .arm(.ping, after: .seconds(25))])
        #expect(session.handle(.clientPong).isEmpty, "a pong nobody waits for changes nothing")
        #expect(session.handle(.timerFired(.ping)) == [.arm(.pong, after: .seconds(20)), .sendPing])
        #expect(session.handle(.timerFired(.pong)) == [.disarm(.join), .end(.noPong)])
        #expect(session.isClosed && session.armed.isEmpty)
        #expect(session.handle(.clientPong).isEmpty)
        #expect(session.handle(.timerFired(.ping)).isEmpty)
    }

    @Test func aClientPingIsAnsweredWithItsData() {
        var session = Self.opened()
        #expect(session.handle(.clientPing("probe")) == [.sendPong("probe")])
    }

    @Test func aSessionThatNeverJoinsIsClosedAndOneThatJoinsExpiresWithItsCredential() {
        var lonely = Self.opened()
        #expect(lonely.handle(.timerFired(.join)) == [.disarm(.ping), .end(.neverJoined)])

        var session = Self.opened()
        #expect(session.handle(.joined(expiresIn: .seconds(60))) == [.disarm(.join), .arm(.credential, after: .seconds(60))])
        #expect(session.handle(.timerFired(.join)).isEmpty, "a deadline already disarmed never ends the session")
        #expect(session.handle(.timerFired(.credential)) == [.expireCredential])
        #expect(!session.isClosed, "the broadcaster ends the client; the session closes once its queue does")

        var forever = Self.opened()
        #expect(forever.handle(.joined(expiresIn: nil)) == [.disarm(.join)])
        var leaving = Self.opened()
        _ = leaving.handle(.joined(expiresIn: .seconds(5)))
        #expect(leaving.handle(.left) == [.disarm(.credential)])
        #expect(leaving.handle(.timerFired(.credential)).isEmpty)
    }

    @Test func oneLongPollAtATime() {
        var session = Self.opened()
        #expect(session.handle(.pollArrived).isEmpty)
        #expect(session.pollDecision == .wait && session.isPolling)
        #expect(session.handle(.pollAnswered).isEmpty)
        _ = session.handle(.pollArrived)
        #expect(session.pollDecision == .wait)
        #expect(session.handle(.pollArrived) == [.disarm(.ping), .disarm(.join), .end(.overlappingPolls)])
        #expect(session.pollDecision == .refuse("Bad request: two long-polls at once for one session"))
        // A poll racing the end waits on a finished queue and so gets the final packets.
        _ = session.handle(.pollArrived)
        #expect(session.pollDecision == .wait)
    }

    @Test func theUpgradeProbesReleasesThePollAndMoves() {
        var session = Self.opened()
        #expect(session.acceptsProbe)
        _ = session.handle(.pollArrived)
        #expect(session.handle(.probed) == [.releasePoll])
        #expect(session.transport == .probing && !session.acceptsProbe)
        _ = session.handle(.pollAnswered)
        _ = session.handle(.pollArrived)
        #expect(session.pollDecision == .noop)
        // The probe's WebSocket closes before `5`: the session polls on.
        #expect(session.handle(.webSocketClosed(carrier: false)).isEmpty)
        #expect(session.transport == .polling && session.acceptsProbe)
        _ = session.handle(.probed)
        #expect(session.handle(.upgraded) == [.releasePoll])
        #expect(session.transport == .webSocket)
        _ = session.handle(.pollArrived)
        #expect(session.pollDecision == .refuse("Bad request: the session moved to WebSocket"))
        #expect(session.handle(.upgraded).isEmpty)
        #expect(session.handle(.webSocketClosed(carrier: true)) == [.disarm(.ping), .disarm(.join), .end(.transportClosed)])
    }

    @Test func anEndedQueueClosesTheWebSocketOrWaitsForTheLastPoll() {
        var onWebSocket = Self.opened(onWebSocket: true)
        #expect(!onWebSocket.acceptsProbe)
        #expect(onWebSocket.handle(.queueEnded(grace: .seconds(5))) == [.closeWebSocket(after: .seconds(5))])

        var polling = Self.opened()
        #expect(polling.handle(.queueEnded(grace: .seconds(5))) == [.arm(.ended, after: .seconds(5))])
        #expect(polling.handle(.timerFired(.ended)) == [.disarm(.ping), .disarm(.join), .end(.queueEnded)])

        var answered = Self.opened()
        _ = answered.handle(.queueEnded(grace: .seconds(5)))
        #expect(answered.handle(.close(.queueEnded)) == [.disarm(.ping), .disarm(.join), .disarm(.ended), .end(.queueEnded)])
        #expect(answered.handle(.close(.server)).isEmpty, "ends once")
    }

    /// Any sequence of events: the timers the shell would hold are the machine's
    /// `armed`, a disarm names an armed timer, the session ends at most once and then
    /// does nothing more.
    @Test(arguments: 0..<200)
    func randomEventsKeepTheTimersAndTheEndConsistent(seed: Int) {
        var generator = SplitMix(seed: UInt64(seed))
        let events: [Session.Event] = [
            .timerFired(.ping), .timerFired(.pong), .timerFired(.join), .timerFired(.credential), .timerFired(.ended),
            .clientClose, .clientPing("x"), .clientPong, .joined(expiresIn: .seconds(3)), .joined(expiresIn: nil), .left,
            .pollArrived, .pollAnswered, .probed, .upgraded, .webSocketClosed(carrier: false), .webSocketClosed(carrier: true),
            .queueEnded(grace: .seconds(5)), .close(.server),
        ]
        var session = Session(settings: Self.settings, onWebSocket: generator.next() % 2 == 0)
        var held: Set<Session.Timer> = []
        var ends = 0
        for step in 0..<60 {
            let event = step == 0 ? .opened : events[Int(generator.next() % UInt64(events.count))]
            // A timer fires only while the shell holds it, and then it no longer does.
            if case .timerFired(let timer) = event {
                guard held.remove(timer) != nil else { continue }
            }
            let wasClosed = session.isClosed
            for action in session.handle(event) {
                switch action {
                case .arm(let timer, _): held.insert(timer)
                case .disarm(let timer): #expect(held.remove(timer) != nil, "disarmed \(timer), which was not armed")
                case .end: ends += 1
                default: break
                }
                #expect(!wasClosed, "acted after the end: \(action)")
            }
            #expect(held == session.armed, "after \(event)")
        }
        #expect(ends <= 1)
        #expect(ends == (session.isClosed ? 1 : 0))
    }
}
