/// Finds, in the bytes of a connection as they arrive, the end of each request head
/// that asks for a protocol upgrade (an `Upgrade` header, any case): the point after
/// which the server must not read on until it answered, because what follows is
/// another protocol's (WebSocket frames), buffered whole until the upgrade is done.
/// Heads that ask for none are passed over, and the scan goes on with the next bytes.
/// Pure, so that `make fuzz` can cut requests every way.
package struct UpgradeRequestScanner: Sendable {
    private var head = RequestHeadScanner()
    /// How much of `\nupgrade:` the head's bytes end with (lowercased).
    private var matched = 0
    private var upgrade = false

    private static let header = Array("\nupgrade:".utf8)

    package init() {}

    /// Reads the next piece; returns how many of its bytes come before the point to
    /// stop reading at (the end of an upgrade request's head), nil when no such head
    /// ends in it.
    package mutating func scan(_ bytes: some Collection<UInt8>) -> Int? {
        var offset = 0
        for byte in bytes {
            offset += 1
            if !upgrade {
                let lower = byte >= 65 && byte <= 90 ? byte + 32 : byte
                matched = lower == Self.header[matched] ? matched + 1 : (lower == Self.header[0] ? 1 : 0)
                if matched == Self.header.count { upgrade = true }
            }
            guard head.scan(CollectionOfOne(byte)) != nil else { continue }
            let ended = upgrade
            head = RequestHeadScanner()
            (matched, upgrade) = (0, false)
            if ended { return offset }
        }
        return nil
    }
}
