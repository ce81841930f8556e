import HTTPTypes
import Hummingbird
import RowcastWire

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
    /// Hosts requests may name.
    let hosts: HostAllowlist
    /// Origins allowed besides the page's own; `*` allows every origin.
    let origins: Set<String>

    /// - Parameters:
    ///   - listening: the address rowcast listens on.
    ///   - extraHosts: `--allow-host` names (a proxy's public name, say).
    ///   - origins: `--allow-origin` values.
    init(listening: String, extraHosts: [String], origins: Set<String>) {
        hosts = HostAllowlist(listening: listening, extraHosts: extraHosts)
        self.origins = origins
    }

    func checkHost(_ request: Request) throws(HTTPError) {
        guard let authority = request.head.authority else { return }
        let host = RequestHost(authority: authority)
        if let host, hosts.allows(host) { return }
        let named = host?.description ?? String(authority.prefix(100))
        throw HTTPError(.misdirectedRequest, message: "rowcast does not serve host \(named) (fix: open it by the address it listens on, or pass --allow-host \(named))")
    }

    func checkOrigin(_ request: Request) throws(HTTPError) {
        guard let origin = request.headers[.origin] else { return }
        if origins.contains(origin) || origins.contains("*") { return }
        // A browser's Origin is its page's: http, https or null. WebSocket client
        // libraries that send one of their own (ws://host) are not browsers, and could
        // as well send none.
        if origin.hasPrefix("ws://") || origin.hasPrefix("wss://") { return }
        // The page's own origin: http, or https through a proxy that ends TLS, and the
        // origin's authority is the Host the request names.
        if let authority = request.head.authority?.lowercased(),
            ["http://" + authority, "https://" + authority].contains(origin.lowercased())
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
