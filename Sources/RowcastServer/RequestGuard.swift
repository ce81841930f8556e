import HTTPTypes
import Hummingbird

/// Who may talk to rowcast at all, before credentials: the `Host` a request names and,
/// on streaming routes, the browser origin it comes from.
///
/// Browsers apply no CORS to WebSockets and a page on any site may open
/// `ws://127.0.0.1:8080/ws`; DNS rebinding lets a page reach a loopback server under a
/// name of its own. So, by default, a request must name a host rowcast serves, and a
/// browser (a request with `Origin`) may stream only from the page's own origin or an
/// origin given with `--allow-origin`. Requests without `Origin` (or with a `ws://`
/// one, which only WebSocket libraries send) are not from a browser and pass; so do
/// requests without `Host` (no browser sends one).
struct RequestGuard: Sendable {
    /// Host names (lowercased, without port) requests may name; nil accepts any.
    let hosts: Set<String>?
    /// Origins allowed besides the page's own; `*` allows every origin.
    let origins: Set<String>

    /// - Parameters:
    ///   - listening: the address rowcast listens on.
    ///   - extraHosts: `--allow-host` names (a proxy's public name, say).
    ///   - origins: `--allow-origin` values.
    init(listening: String, extraHosts: [String], origins: Set<String>) {
        let loopbackNames: Set<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
        let extra = Set(extraHosts.map { $0.lowercased() })
        switch listening.lowercased() {
        case "0.0.0.0", "::", "[::]", "":
            // Every interface: names are the operator's to know; credentials guard it.
            hosts = extra.isEmpty ? nil : extra.union(loopbackNames)
        case let host:
            hosts = extra.union(loopbackNames).union([host])
        }
        self.origins = origins
    }

    /// The host part of a `Host` header: `name`, `name:port`, `[v6]:port`.
    static func hostName(_ authority: String) -> String {
        let lowered = authority.lowercased()
        if lowered.hasPrefix("["), let end = lowered.firstIndex(of: "]") { return String(lowered[...end]) }
        if lowered.filter({ $0 == ":" }).count == 1, let colon = lowered.firstIndex(of: ":") { return String(lowered[..<colon]) }
        return lowered
    }

    func checkHost(_ request: Request) throws(HTTPError) {
        guard let hosts, let authority = request.head.authority else { return }
        let name = Self.hostName(authority)
        if hosts.contains(name) || name.hasPrefix("127.") { return }
        throw HTTPError(.misdirectedRequest, message: "rowcast does not serve host \(name) (fix: open it by the address it listens on, or pass --allow-host \(name))")
    }

    func checkOrigin(_ request: Request) throws(HTTPError) {
        guard let origin = request.headers[.origin] else { return }
        if origins.contains(origin) || origins.contains("*") { return }
        // A browser's Origin is its page's: http, https or null. WebSocket client
        // libraries that send one of their own (ws://host) are not browsers, and could
        // as well send none.
        if origin.hasPrefix("ws://") || origin.hasPrefix("wss://") { return }
        // The page's own origin: its authority is the Host the request names.
        if let authority = request.head.authority,
            let schemeEnd = origin.range(of: "://"),
            origin[schemeEnd.upperBound...].lowercased() == authority.lowercased()
        {
            return
        }
        throw HTTPError(.forbidden, message: "origin \(origin) may not read this stream (fix: rowcast serve --allow-origin \(origin))")
    }
}

/// Applies ``RequestGuard/checkHost(_:)`` to every route.
struct HostCheckMiddleware<Context: RequestContext>: RouterMiddleware {
    let guardian: RequestGuard

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try guardian.checkHost(request)
        return try await next(request, context)
    }
}
