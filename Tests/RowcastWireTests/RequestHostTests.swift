import RowcastWire
import Testing

/// `Host` headers are parsed and compared exactly: what a DNS rebinding site can name
/// (any name, `127.rebind.example` included) never passes for a loopback address.
@Suite struct RequestHostTests {
    @Test(arguments: [
        ("localhost", RequestHost.name("localhost")),
        ("LOCALHOST:8080", .name("localhost")),
        ("localhost.:8080", .name("localhost")),
        ("127.0.0.1", .ipv4(127, 0, 0, 1)),
        ("127.0.0.1:8080", .ipv4(127, 0, 0, 1)),
        ("127.8.9.10:1", .ipv4(127, 8, 9, 10)),
        ("[::1]", .ipv6("::1")),
        ("[::1]:8080", .ipv6("::1")),
        ("[::FFFF:127.0.0.1]:80", .ipv6("::ffff:127.0.0.1")),
        ("rowcast.example.com:443", .name("rowcast.example.com")),
        ("127.rebind.example:8080", .name("127.rebind.example")),
        ("127.0.0.1.rebind.example", .name("127.0.0.1.rebind.example")),
    ])
    func parses(_ authority: String, _ expected: RequestHost) {
        #expect(RequestHost(authority: authority) == expected)
    }

    @Test(arguments: [
        "", ":8080", "localhost:", "localhost:99999", "localhost:80:80", "local host", "a..b",
        "127.1", "0x7f.0.0.1", "0177.0.0.1", "127.0.0.256", "1.2.3.4.5", "[::1", "[::1]x", "[::1].rebind.example",
        "[]", "[evil.example]:80", "évil.example", "a/b", "\u{0}",
    ])
    func refuses(_ authority: String) {
        #expect(RequestHost(authority: authority) == nil, "\(authority)")
    }

    @Test func optionsMayNameABareIPv6Address() {
        #expect(RequestHost(option: "::1") == .ipv6("::1"))
        #expect(RequestHost(option: "[::1]") == .ipv6("::1"))
        #expect(RequestHost(option: "Proxy.Example:8443") == .name("proxy.example"))
        #expect(RequestHost(option: "*") == nil)
        #expect(RequestHost(option: "http://proxy.example") == nil)
    }

    @Test func onlyDottedLoopbackAddressesAreLoopback() {
        #expect(RequestHost(authority: "127.0.0.2")?.isLoopbackIPv4 == true)
        #expect(RequestHost(authority: "127.rebind.example")?.isLoopbackIPv4 == false)
        #expect(RequestHost(authority: "128.0.0.1")?.isLoopbackIPv4 == false)
    }
}
