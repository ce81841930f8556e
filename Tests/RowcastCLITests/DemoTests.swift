import Foundation
import RowcastTestSupport
import HummingbirdWSClient
import Logging
import Testing

/// `rowcast demo` in each mode: its own PostgreSQL, a writer, and the page's stream.
@Suite(.timeLimit(.minutes(3)))
struct DemoTests {
    @Test(arguments: ["replication", "trigger"])
    func theDemoStreamsItsWritersRowsInEitherMode(_ mode: String) async throws {
        let demo = try RunningProcess(Rowcast.binary.path, ["demo", "--mode", mode, "--port", "0"])
        let port = try await demo.waitFor(#"rowcast demo: \#(mode) mode; open http://127\.0\.0\.1:(\d+)/"#)
        let logger = {
            var logger = Logger(label: "demo")
            logger.logLevel = .warning
            return logger
        }()
        let first = Shared<String?>(nil)
        _ = try await within(90, "the demo's first record over /ws", seen: { demo.output.suffix(1000).description }) {
          try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", logger: logger) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
            _ = try await messages.next()
            try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#))
            while case .text(let text) = try await messages.next() {
                guard let frame = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                    frame["event"] as? String == "update"
                else { continue }
                first.withLock { $0 = text }
                break
            }
            try await outbound.close(.normalClosure, reason: nil)
          }
        }
        let text = first.withLock { $0 } ?? "{}"
        let record = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["data"] as? [String: Any]
        #expect(record?["source"] as? String == mode)
        #expect(record?["table"] as? String == "realtime")
        #expect(((record?["row"] as? [String: Any])?["title"] as? String)?.isEmpty == false)
        // And in the browser: the page shows the writer's rows live.
        try await BrowserTests.withBrowser { page in
            try await page.open("http://127.0.0.1:\(port)/")
            try await page.waitUntil("document.getElementById('state').textContent === 'live'")
            try await page.waitUntil("document.querySelectorAll('tr.record[data-table=\"public.realtime\"]').length >= 2")
        }
        #expect(try await demo.stop(SIGINT) == 0, "demo output:\n\(demo.output.suffix(1000))")
    }
}
