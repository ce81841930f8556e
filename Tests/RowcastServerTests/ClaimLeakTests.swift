import RowcastCore
import RowcastTestSupport
import RowcastWire
import Testing

@testable import RowcastServer

/// What a client may not read appears in no answer it gets: a client whose claim
/// allows `public.a` learns nothing of `public.secret` (not that it exists, not its
/// columns) from any subscribe it sends, on any transport (every transport carries out
/// a request through `ClientMessage.apply`).
@Suite struct ClaimLeakTests {
    static func capture() -> CaptureState {
        let capture = CaptureState()
        capture.setCapturedTables(["public.a", "public.secret"])
        capture.setColumns([
            "public.a": ["id": .number, "name": .other],
            "public.secret": ["id": .number, "ssn": .other, "salary": .number],
        ])
        return capture
    }

    /// The answer to one frame: `subscribed` with what it echoes, or the error.
    static func answer(_ frame: String, access: ClientAccess, capture: CaptureState) -> String {
        let broadcaster = Broadcaster(resumeWindow: 0)
        let client = broadcaster.register(framing: .webSocket)
        defer { broadcaster.unregister(client.id) }
        do throws(ClientMessageError) {
            let outcome = try ClientMessage.parse(frame).apply(for: client.id, access: access, capture: capture, broadcaster: broadcaster)
            guard case .subscribed(let subscription) = outcome else { return "\(outcome)" }
            return String(buffer: Framing.webSocket.frame(.subscribed(subscription, cursor: nil)) ?? .init())
        } catch {
            return "\(error.code): \(error.message)"
        }
    }

    static func frames(seed: UInt64, count: Int) -> [String] {
        var generator = SplitMix(seed: seed)
        let tables = [nil, "public.a", "public.secret", "public.nothere", "a", "secret"]
        let filters = [nil, "id=eq.1", "ssn=eq.x", "salary=gt.5", "name=eq.n", "zz=eq.1", "id=eq.x", "ssn=in.(a,b)", "name=is.null"]
        return (0..<count).map { _ in
            var keys: [String] = []
            var chosen = Set<String>()
            for _ in 0..<Int(generator.next() % 3) {
                if let table = tables[Int(generator.next() % UInt64(tables.count))] { chosen.insert(table) }
            }
            if !chosen.isEmpty { keys.append(#""tables":[\#(chosen.sorted().map { "\"\($0)\"" }.joined(separator: ","))]"#) }
            if let filter = filters[Int(generator.next() % UInt64(filters.count))] { keys.append(#""filter":"\#(filter)""#) }
            return #"{"event":"subscribe","data":{\#(keys.joined(separator: ","))}}"#
        }
    }

    @Test(arguments: 0..<8)
    func noAnswerNamesWhatTheClaimHides(seed: Int) {
        let access = ClientAccess(tables: ["public.a"], expires: nil)
        let capture = Self.capture()
        var leaks: [String] = []
        for frame in Self.frames(seed: UInt64(seed), count: 200) {
            let answer = Self.answer(frame, access: access, capture: capture)
            for hidden in ["secret", "ssn", "salary"] where answer.contains(hidden) && !frame.contains(hidden) {
                leaks.append("\(frame) -> \(answer)")
            }
            // A hidden table is answered as one that does not exist.
            guard frame.contains("secret"), !frame.contains("nothere") else { continue }
            let twin = frame.replacingOccurrences(of: "secret", with: "nothere")
            let twinAnswer = Self.answer(twin, access: access, capture: capture).replacingOccurrences(of: "nothere", with: "secret")
            if twinAnswer != answer { leaks.append("\(frame) -> \(answer), but for public.nothere -> \(twinAnswer)") }
        }
        #expect(leaks.count == 0, "\(leaks.count) answers tell what the claim hides, e.g. \(leaks.first ?? "")")
    }

    /// A client that may see everything still gets the helpful errors: the columns of
    /// the table it named, and which tables are not captured.
    @Test func anUnrestrictedClientStillLearnsTheSchemaItMayRead() {
        let capture = Self.capture()
        let zz = Self.answer(#"{"event":"subscribe","data":{"tables":["public.secret"],"filter":"zz=eq.1"}}"#, access: .everything, capture: capture)
        #expect(zz.contains("bad_filter") && zz.contains("ssn"))
        let missing = Self.answer(#"{"event":"subscribe","data":{"tables":["public.nothere"]}}"#, access: .everything, capture: capture)
        #expect(missing.hasPrefix("unknown_table"))
    }
}
