/// What a request's `Host` may name: the address rowcast listens on, loopback names,
/// and `--allow-host` names. Pure, so that `make fuzz` drives it.
package struct HostAllowlist: Sendable {
    /// Hosts requests may name.
    package let hosts: Set<RequestHost>
    /// Whether any IP address may be named (listening on every interface): a DNS
    /// rebinding site needs a name of its own, so only names must be listed.
    package let anyAddress: Bool

    /// - Parameters:
    ///   - listening: the address rowcast listens on.
    ///   - extraHosts: `--allow-host` names (a proxy's public name, say).
    package init(listening: String, extraHosts: [String]) {
        let loopback: Set<RequestHost> = [.name("localhost"), .ipv4(127, 0, 0, 1), .ipv6("::1")]
        // A name given without a port; one that is not a host at all can match nothing.
        let extra = Set(extraHosts.compactMap { RequestHost(option: $0) })
        switch listening.lowercased() {
        case "0.0.0.0", "::", "[::]", "":
            // Every interface: any of the machine's addresses, and the names given.
            hosts = extra.union(loopback)
            anyAddress = true
        case let address:
            hosts = extra.union(loopback).union(RequestHost(option: address).map { [$0] } ?? [])
            anyAddress = false
        }
    }

    /// Whether a request may name `host`.
    package func allows(_ host: RequestHost) -> Bool {
        hosts.contains(host) || host.isLoopbackIPv4 || (anyAddress && host.isAddress)
    }
}

/// The host a `Host` header (or `--host`, `--allow-host`) names, parsed and normalised:
/// compared exactly, never by prefix (`127.rebind.example` is a name, not a loopback
/// address, and a DNS rebinding site can answer for it).
package enum RequestHost: Hashable, Sendable, CustomStringConvertible {
    /// A DNS name: lowercased, without the trailing dot of a fully qualified one.
    case name(String)
    /// An IPv4 address in dotted decimal, the only form browsers send.
    case ipv4(UInt8, UInt8, UInt8, UInt8)
    /// An IPv6 address, as written between the brackets, lowercased.
    case ipv6(String)

    /// Parses `host`, `host:port`, `a.b.c.d[:port]` or `[v6][:port]`; nil for anything
    /// else (a bad port, characters no host has, a name whose last label is numeric
    /// but that is no dotted-decimal address, such as `127.1` or `0x7f.1`).
    package init?(authority: String) {
        // ASCII only, and not longer than a name can be: lowercasing first would turn
        // the Kelvin sign into a "k".
        guard authority.utf8.count <= 261, authority.allSatisfy(\.isASCII) else { return nil }
        var text = Substring(authority.lowercased())
        if text.hasPrefix("[") {
            guard let end = text.firstIndex(of: "]") else { return nil }
            let address = text[text.index(after: text.startIndex)..<end]
            let rest = text[text.index(after: end)...]
            guard rest.isEmpty || (rest.first == ":" && Self.isPort(rest.dropFirst())),
                address.contains(":"), address.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." })
            else { return nil }
            self = .ipv6(String(address))
            return
        }
        if let colon = text.firstIndex(of: ":") {
            guard Self.isPort(text[text.index(after: colon)...]) else { return nil }
            text = text[..<colon]
        }
        if text.hasSuffix(".") { text = text.dropLast() }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        guard !text.isEmpty, labels.allSatisfy({ label in
            !label.isEmpty && label.count <= 63 && label.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "_" }
        }) else { return nil }
        guard let last = labels.last, last.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            self = .name(String(text))
            return
        }
        // Numeric last label: a dotted-decimal IPv4 address or nothing.
        let octets = labels.compactMap { label -> UInt8? in
            guard label.allSatisfy({ $0.isASCII && $0.isNumber }), label == "0" || !label.hasPrefix("0") else { return nil }
            return UInt8(label)
        }
        guard labels.count == 4, octets.count == 4 else { return nil }
        self = .ipv4(octets[0], octets[1], octets[2], octets[3])
    }

    /// A host as an operator writes it in `--host` or `--allow-host`: also a bare IPv6
    /// address (`::1`), which a `Host` header would bracket; a port is ignored.
    package init?(option: String) {
        let bare = option.filter { $0 == ":" }.count > 1 && !option.hasPrefix("[")
        self.init(authority: bare ? "[\(option)]" : option)
    }

    /// An IP address, not a name.
    package var isAddress: Bool {
        if case .name = self { return false }
        return true
    }

    /// An address of 127.0.0.0/8, which only this machine answers.
    package var isLoopbackIPv4: Bool {
        if case .ipv4(127, _, _, _) = self { return true }
        return false
    }

    package var description: String {
        switch self {
        case .name(let name): name
        case .ipv4(let a, let b, let c, let d): "\(a).\(b).\(c).\(d)"
        case .ipv6(let address): "[\(address)]"
        }
    }

    private static func isPort(_ text: Substring) -> Bool {
        !text.isEmpty && text.count <= 5 && text.allSatisfy { $0.isASCII && $0.isNumber } && (Int(text) ?? .max) <= 65_535
    }
}
