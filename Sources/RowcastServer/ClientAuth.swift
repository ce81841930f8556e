import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import NIOCore
import RowcastCore
import RowcastWire

/// What one authenticated client may see, decided when it connects.
package struct ClientAccess: Sendable, Equatable {
    /// `schema.table` names the client may see; nil means every table, and the records
    /// without one (`notify`, `message`).
    package var tables: Set<TableName>?
    /// Which rows of a table the client may see (a JWT's `rows` claim): every condition
    /// of a table's rule holds for each row in view. A table without a rule is whole.
    package var rows: [TableName: [RowFilter]]
    /// When the credential stops being valid (a JWT's `exp`); the client is closed then.
    package var expires: Date?

    /// Everything, for ever: no authentication configured, or the static `--token`.
    package static let everything = ClientAccess(tables: nil, expires: nil)

    package init(tables: Set<TableName>?, rows: [TableName: [RowFilter]] = [:], expires: Date?) {
        self.tables = tables
        self.rows = rows
        self.expires = expires
    }

    /// `subscription` narrowed to what the client may see: its tables to the allowed
    /// ones, its rows to the credential's rules (which replace whatever rules it
    /// carried: a Socket.IO session recovered with a fresh credential gets the fresh
    /// one's). Asking for no tables means every table allowed; naming a table outside
    /// the allowed ones is refused.
    package func restrict(_ subscription: Subscription) throws(ClientMessageError) -> Subscription {
        var ruled = subscription
        ruled.rules = rows
        // Checked as new (``Subscription/checkingRules(by:)`` follows): nothing of the
        // rules the subscription was checked with before is kept.
        ruled.claimedRules = nil
        ruled.catalogVersion = nil
        ruled.knownTables = nil
        return try restrictTables(ruled)
    }

    private func restrictTables(_ subscription: Subscription) throws(ClientMessageError) -> Subscription {
        guard let allowed = tables else { return subscription }
        var narrowed = subscription
        guard let wanted = subscription.tables else {
            narrowed.tables = allowed
            return narrowed
        }
        let forbidden = wanted.subtracting(allowed)
        guard forbidden.isEmpty else {
            throw .forbidden(
                "not allowed to see \(forbidden.sorted().map(\.description).joined(separator: ", ")); this credential allows \(allowed.isEmpty ? "no tables" : allowed.sorted().map(\.description).joined(separator: ", "))"
            )
        }
        return narrowed
    }
}

/// Why a request was not authenticated; Hummingbird answers it with a 401 whose JSON
/// body is shaped like the protocol's errors.
package struct AuthFailure: HTTPResponseError, Sendable, Equatable {
    package let message: String

    package var status: HTTPResponse.Status { .unauthorized }

    package func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(
            status: .unauthorized,
            headers: [.contentType: "application/json", .wwwAuthenticate: #"Bearer realm="rowcast""#],
            body: .init(byteBuffer: ByteBuffer(bytes: ServerMessage.errorObject(code: "unauthorized", message: message)))
        )
    }
}

/// Checks client credentials: the static `--token`, or an HS256 JWT signed with
/// `--jwt-secret` whose optional `tables` claim limits what the client sees.
///
/// Credentials come as `?token=` (browsers cannot set headers on a WebSocket or an
/// EventSource) or `Authorization: Bearer`.
package struct ClientAuthenticator: Sendable {
    private let token: [UInt8]?
    private let keys: JWTKeyCollection?

    /// Whether clients must authenticate at all.
    package var isEnabled: Bool { token != nil || keys != nil }

    /// No authentication: every client sees everything (loopback only, or `--insecure-no-auth`).
    package static let disabled = ClientAuthenticator(token: nil, keys: nil)

    private init(token: [UInt8]?, keys: JWTKeyCollection?) {
        self.token = token
        self.keys = keys
    }

    package init(token: String?, jwtSecret: String?) async {
        var keys: JWTKeyCollection?
        if let jwtSecret {
            let collection = JWTKeyCollection()
            await collection.add(hmac: HMACKey(from: jwtSecret), digestAlgorithm: .sha256)
            keys = collection
        }
        self.init(token: token.map { Array($0.utf8) }, keys: keys)
    }

    /// The access a request's credential grants.
    package func authenticate(_ request: Request) async throws(AuthFailure) -> ClientAccess {
        try await authenticate(credential: Self.credential(in: request))
    }

    /// The access a credential grants (a Socket.IO client's comes in its `auth` payload).
    package func authenticate(credential: String?) async throws(AuthFailure) -> ClientAccess {
        guard isEnabled else { return .everything }
        guard let credential else {
            throw AuthFailure(message: "authentication required: pass ?token=TOKEN or an Authorization: Bearer TOKEN header")
        }
        if let token, Self.constantTimeEqual(Array(credential.utf8), token) {
            return .everything
        }
        guard let keys else { throw AuthFailure(message: "the token is not valid") }
        let claims: RowcastClaims
        do {
            claims = try await keys.verify(credential, as: RowcastClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw AuthFailure(message: "the token is not valid: \(error.reason ?? "a claim failed"); ask for a fresh one")
        } catch let error as JWTError where error.errorType == .malformedToken {
            throw AuthFailure(message: "the token is not a JWT rowcast can read (\"tables\" is an array of table names, \"rows\" an object of table names to a filter or an array of filters, \"exp\" and \"nbf\" are numbers)")
        } catch {
            throw AuthFailure(message: "the token is not valid: neither the server's token nor a JWT signed (HS256) with its secret")
        }
        var tables: Set<TableName>?
        if let names = claims.tables {
            var parsed: Set<TableName> = []
            for name in names {
                guard let table = TableName(parsing: name) else {
                    throw AuthFailure(message: "the token's tables claim has \"\(name)\", which is not a table name (schema.table or table)")
                }
                parsed.insert(table)
            }
            tables = parsed
        }
        var rows: [TableName: [RowFilter]] = [:]
        for (name, rule) in claims.rows ?? [:] {
            guard let table = TableName(parsing: name) else {
                throw AuthFailure(message: "the token's rows claim has \"\(name)\", which is not a table name (schema.table or table)")
            }
            guard !rule.conditions.isEmpty, rule.conditions.count <= Self.maxRuleConditions else {
                throw AuthFailure(message: "the token's rows claim for \(table) must have 1 to \(Self.maxRuleConditions) conditions; ask for a token with a valid rule")
            }
            for text in rule.conditions {
                do {
                    rows[table, default: []].append(try RowFilter(parsing: text))
                } catch {
                    throw AuthFailure(message: "the token's rows claim for \(table) is not a filter rowcast can read (\(error.description)); ask for a token with a valid rule")
                }
            }
        }
        return ClientAccess(tables: tables, rows: rows, expires: claims.exp?.value)
    }

    static func credential(in request: Request) -> String? {
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return String(parts[1]) }
        }
        if let token = request.uri.queryParameters["token"], !token.isEmpty { return String(token) }
        return nil
    }

    /// The most conditions a table's rule may have: each is checked for every record of
    /// the table, for every client it might reach.
    static let maxRuleConditions = 8

    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// The claims rowcast reads from a JWT: `exp` and `nbf` when present, `tables`, and
/// `rows` (`{"public.orders": "tenant_id=eq.42"}`, or an array of conditions to AND).
struct RowcastClaims: JWTPayload {
    var exp: ExpirationClaim?
    var nbf: NotBeforeClaim?
    var tables: [String]?
    var rows: [String: RowRule]?

    /// One table's rule: a condition, or several that all must hold.
    struct RowRule: Codable {
        var conditions: [String]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let one = try? container.decode(String.self) {
                conditions = [one]
            } else {
                conditions = try container.decode([String].self)
            }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(conditions)
        }
    }

    func verify(using algorithm: some JWTAlgorithm) throws {
        try exp?.verifyNotExpired()
        try nbf?.verifyNotBefore()
    }
}
