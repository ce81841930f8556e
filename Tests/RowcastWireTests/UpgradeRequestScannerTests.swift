import RowcastWire
import Testing

/// The point past which serve reads nothing until it answered: the end of a request
/// head with an `Upgrade` header, found however the bytes are cut.
@Suite struct UpgradeRequestScannerTests {
    static let plain = "GET /status HTTP/1.1\r\nHost: a\r\nX-Upgraded: no\r\n\r\n"
    static let upgrade = "GET /ws HTTP/1.1\r\nHost: a\r\nuPgRaDe: websocket\r\nConnection: Upgrade\r\n\r\n"

    /// Where the scan stops in `text` fed in pieces cut at `cuts`, as an offset into the whole text.
    static func stop(_ text: String, cuts: [Int]) -> Int? {
        let bytes = Array(text.utf8)
        var scanner = UpgradeRequestScanner()
        var start = 0
        for end in (cuts + [bytes.count]).sorted() where end >= start {
            if let taken = scanner.scan(bytes[start..<end]) { return start + taken }
            start = end
        }
        return nil
    }

    @Test func aPlainRequestDoesNotStopTheReadsAndAnUpgradeAfterItDoes() {
        #expect(Self.stop(Self.plain, cuts: []) == nil)
        let both = Self.plain + Self.upgrade + "\u{89}\u{80}frames"
        let end = Self.plain.utf8.count + Self.upgrade.utf8.count
        #expect(Self.stop(both, cuts: []) == end)
        // Every way of cutting the bytes in two, then in three.
        let count = both.utf8.count
        for first in 0...count {
            #expect(Self.stop(both, cuts: [first]) == end, "cut at \(first)")
            for second in stride(from: first, through: count, by: 7) {
                #expect(Self.stop(both, cuts: [first, second]) == end, "cut at \(first), \(second)")
            }
        }
    }

    @Test func aHeaderNamedLikeUpgradeOrAnUpgradeInTheBodyIsNotOne() {
        #expect(Self.stop("GET / HTTP/1.1\r\nX-Upgrade: websocket\r\nHost: upgrade:\r\n\r\n", cuts: []) == nil)
    }
}
