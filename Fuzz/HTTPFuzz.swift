// libFuzzer entry point: one input is one `GET /events` request as rowcast reads it,
// the query keys and the `Last-Event-ID` header (anyone who reaches the port sends
// one). The input's first byte says which of the six are present; the rest is their
// values, one per line: tables, ops, filter, since, last, Last-Event-ID.
//
// The same bytes also go, whole, through the `Host` check (RequestHost, HostAllowlist)
// and the request-head detector (RequestHeadScanner) cut into pieces: the parts of
// rowcast's HTTP edge that are its own (SwiftNIO parses the rest).

import RowcastCore
import RowcastWire

/// Traps naming the rule and the request, so that libFuzzer keeps the input.
private func expect(_ rule: Bool, _ what: @autoclosure () -> String) {
    guard !rule else { return }
    fatalError(what())
}

/// Promises, for every input: no trap; a subscription that resolves is the one its
/// `subscribed` echo asks for again (a client that resubscribes with what the server
/// said gets the same rows); its cursor reads back from its text (SSE sends it as
/// `id:`, and EventSource returns it as `Last-Event-ID`); `last` is within 0...10000.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let present = bytes.first else { return 0 }
    var values = bytes.dropFirst().split(separator: 0x0A, omittingEmptySubsequences: false)
        .map { String(decoding: $0, as: UTF8.self) }[...]
    // Field i is present when bit i is set and a line is left for it.
    func field(_ bit: Int) -> String? {
        guard let value = values.popFirst(), present & (1 << bit) != 0 else { return nil }
        return value
    }
    let (tables, ops, filter, since, last, lastEventID) = (field(0), field(1), field(2), field(3), field(4), field(5))

    // As ServerSentEvents.response fills it.
    var wanted = SubscriptionRequest()
    checkHost(String(decoding: bytes.dropFirst(), as: UTF8.self))
    checkHeadScanner(Array(bytes.dropFirst()), cutting: present)

    if let tables { wanted.tables = .value(tables.split(scalar: ",").filter { !$0.isEmpty }) }
    if let ops { wanted.ops = .value(ops.split(scalar: ",").filter { !$0.isEmpty }) }
    if let filter { wanted.filter = .value([filter]) }
    if let since = lastEventID ?? since { wanted.since = .value([since]) }
    if let last { wanted.last = .value([last]) }
    let request = "tables \(String(reflecting: tables)) ops \(String(reflecting: ops)) filter \(String(reflecting: filter)) since \(String(reflecting: since)) last \(String(reflecting: last)) Last-Event-ID \(String(reflecting: lastEventID))"

    guard case .subscribe(let subscription, let cursor, let count)? = try? wanted.resolve() else { return 0 }
    if let cursor { expect(Cursor(cursor.description) == cursor, "cursor \(cursor) does not read back from its text; \(request)") }
    if let count { expect((0...10_000).contains(count), "last \(count); \(request)") }
    // The `subscribed` event's data, sent back as a `subscribe` frame's.
    let echo = ServerMessage.subscribed(subscription, cursor: cursor?.description).data
    let again = try? ClientMessage.parse(event: "subscribe", data: JSONText(echo))
    expect(
        again == .subscribe(subscription, since: nil, last: nil),
        "the echo \(String(decoding: echo, as: UTF8.self)) subscribes to \(String(describing: again)); \(request)"
    )
    return 0
}

/// `Host`: never traps; a parsed host reads back from its text; one a server on
/// 127.0.0.1 allows is this machine (`localhost`, 127/8, `::1`); one a server on every
/// interface allows is an address or `localhost`, never another name (DNS rebinding).
private func checkHost(_ text: String) {
    let loopback = HostAllowlist(listening: "127.0.0.1", extraHosts: [])
    let everywhere = HostAllowlist(listening: "0.0.0.0", extraHosts: [])
    for parsed in [RequestHost(authority: text), RequestHost(option: text)] {
        guard let host = parsed else { continue }
        expect(RequestHost(authority: host.description) == host, "host \(host) does not read back; input \(String(reflecting: text))")
        if loopback.allows(host) {
            expect(host == .name("localhost") || host.isLoopbackIPv4 || host == .ipv6("::1"), "127.0.0.1 allows \(host)")
        }
        if everywhere.allows(host), case .name(let name) = host {
            expect(name == "localhost", "0.0.0.0 allows the name \(name)")
        }
    }
}

/// The head ends, whatever pieces the bytes arrive in, where a plain search says: at
/// the first `\r\n\r\n` after the first byte that is not CR or LF.
private func checkHeadScanner(_ bytes: [UInt8], cutting seed: UInt8) {
    var reference: Int?
    if let start = bytes.firstIndex(where: { $0 != 13 && $0 != 10 }), bytes.count >= 4 {
        reference = (start...max(start, bytes.count - 4)).first { bytes[$0..<min($0 + 4, bytes.count)].elementsEqual([13, 10, 13, 10]) }.map { $0 + 4 }
    }
    var scanner = RequestHeadScanner()
    var offset = 0, piece = 0, found: Int?
    while offset < bytes.count, found == nil {
        let size = 1 + (Int(seed) &+ piece &* 7) % 16
        let end = min(offset + size, bytes.count)
        if let taken = scanner.scan(bytes[offset..<end]) { found = offset + taken }
        offset = end
        piece += 1
    }
    expect(found == reference, "the head scanner ends at \(String(describing: found)), a plain search at \(String(describing: reference)); \(bytes.count) bytes")
}
