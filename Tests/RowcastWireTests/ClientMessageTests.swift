import RowcastCore
import RowcastTestSupport
import Testing

@testable import RowcastWire

/// The client frame parser: every well-formed frame, and each way a frame can be wrong.
@Suite struct ClientMessageTests {
    @Test func wellFormedFrames() throws {
        #expect(try ClientMessage.parse(#"{"event":"ready for data","data":{}}"#) == .readyForData)
        #expect(try ClientMessage.parse(#" { "event" : "unsubscribe" } "#) == .unsubscribe)
        #expect(try ClientMessage.parse(#"{"data":{"n":[1,{"x":"é\n"}]},"event":"ping"}"#) == .ping(data: #"{"n":[1,{"x":"é\n"}]}"#))
        let subscribe = try ClientMessage.parse(
            #"{"event":"subscribe","data":{"tables":["orders","audit.events"],"ops":["insert"],"filter":"id=gt.7","since":"r0000000000000010.0000000000000002","extra":null}}"#
        )
        guard case .subscribe(let subscription, let since, let last, _) = subscribe else { Issue.record("\(subscribe)"); return }
        #expect(subscription.tables == ["public.orders", "audit.events"])
        #expect(subscription.ops == [.insert])
        #expect(subscription.filter?.description == "id=gt.7")
        #expect(since == .replication(commitLSN: 16, index: 2))
        #expect(last == nil)
        #expect(try ClientMessage.parse(#"{"event":"subscribe","data":{"last": 50 }}"#) == .subscribe(.everything, since: nil, last: 50))
    }

    @Test(arguments: [
        ("not json", "bad_frame"),
        (#"["event"]"#, "bad_frame"),
        (#"{"event":"ping"} trailing"#, "bad_frame"),
        (#"{"data":{}}"#, "bad_frame"),
        (#"{"event":7}"#, "bad_frame"),
        (#"{"event":"ping","data":[]}"#, "bad_frame"),
        (#"{"event":"dance"}"#, "unknown_event"),
        (#"{"event":"subscribe","data":{"tables":"orders"}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"tables":["a.b.c"]}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"tables":[1]}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"ops":["upsert"]}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"since":"yesterday"}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"since":5}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"filter":"id=like.1"}}"#, "bad_filter"),
        (#"{"event":"subscribe","data":{"last":"ten"}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"last":-1}}"#, "bad_subscription"),
        (#"{"event":"subscribe","data":{"filter":["id=eq.1"]}}"#, "bad_filter"),
        ("{\"event\":\"p\u{0}ing\"}", "bad_frame"),
        (String(repeating: "[", count: 600), "bad_frame"),
    ])
    func malformedFramesAreNamedErrors(_ frame: String, _ code: String) {
        #expect(throws: ClientMessageError.self) { try ClientMessage.parse(frame) }
        do {
            _ = try ClientMessage.parse(frame)
        } catch {
            #expect(error.code == code, "\(frame.prefix(60))")
        }
    }

    @Test func aSnapshotIsAskedForAloneWithTrueOrFalse() throws {
        #expect(try ClientMessage.parse(#"{"event":"subscribe","data":{"snapshot": true }}"#) == .subscribe(.everything, since: nil, last: nil, snapshot: true))
        #expect(try ClientMessage.parse(#"{"event":"subscribe","data":{"snapshot":false}}"#) == .subscribe(.everything, since: nil, last: nil, snapshot: false))
        var query = SubscriptionRequest()
        query.snapshot = .value(["1"])
        #expect(try query.resolve() == .subscribe(.everything, since: nil, last: nil, snapshot: true))
        for bad in [#"{"snapshot":"yes"}"#, #"{"snapshot":2}"#, #"{"snapshot":true,"since":"r0000000000000010.0000000000000002"}"#, #"{"snapshot":true,"last":5}"#] {
            #expect(throws: ClientMessageError.self, "\(bad)") { try ClientMessage.parse(#"{"event":"subscribe","data":"# + bad + "}") }
        }
        // `last: 0` asks for nothing before: allowed beside a snapshot.
        #expect(try ClientMessage.parse(#"{"event":"subscribe","data":{"snapshot":true,"last":0}}"#) == .subscribe(.everything, since: nil, last: 0, snapshot: true))
    }

    @Test func queryKeysAndFramesShareOneValidation() {
        var request = SubscriptionRequest()
        request.tables = .value(["orders", "bad.name.here"])
        #expect(throws: ClientMessageError.badSubscription("\"bad.name.here\" is not a table name (schema.table or table)")) { try request.resolve() }
    }
}

@Suite struct CursorExpiredMessageTests {
    @Test func aTriggerModeCursorSaysWhyItCannotResumeAcrossRestarts() {
        let trigger = ClientMessageError.cursorExpired(.trigger(stream: 7, sequence: 3)).message
        #expect(trigger.contains("trigger mode keeps records in one process's memory"), "\(trigger)")
        #expect(trigger.hasSuffix("subscribe without since and reload"))
        let replication = ClientMessageError.cursorExpired(.replication(commitLSN: 10, index: 0)).message
        #expect(!replication.contains("trigger mode"), "\(replication)")
    }
}
