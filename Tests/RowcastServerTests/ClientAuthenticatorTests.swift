import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import NIOCore
import RowcastCore
import RowcastServer
import RowcastWire
import Testing

/// Credentials without a server: what each one grants, and why each bad one fails.
@Suite struct ClientAuthenticatorTests {
    // Long enough to sign HS384 too (jwt-kit asserts a key at least as long as the digest).
    static let secret = String(repeating: "a-jwt-secret-", count: 5)

    struct Claims: JWTPayload {
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var tables: [String]?
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// Claims of any shape, to test what rowcast refuses.
    struct OddClaims: JWTPayload {
        var tables: Int
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    static func sign(_ claims: some JWTPayload, digest: DigestAlgorithm = .sha256, secret: String = secret) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: digest)
        return try await keys.sign(claims)
    }

    static func request(query token: String? = nil, bearer: String? = nil) -> Request {
        var head = HTTPRequest(method: .get, scheme: "http", authority: "localhost", path: "/ws" + (token.map { "?token=" + $0 } ?? ""))
        if let bearer { head.headerFields[.authorization] = "Bearer " + bearer }
        return Request(head: head, body: .init(buffer: ByteBuffer()))
    }

    static func failure(_ auth: ClientAuthenticator, _ request: Request) async -> String? {
        do {
            _ = try await auth.authenticate(request)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func withoutAuthenticationEveryoneSeesEverything() async throws {
        #expect(try await ClientAuthenticator.disabled.authenticate(Self.request()) == .everything)
    }

    @Test func theStaticTokenGrantsEverythingByQueryOrBearer() async throws {
        let auth = await ClientAuthenticator(token: "s3cret", jwtSecret: nil)
        #expect(try await auth.authenticate(Self.request(query: "s3cret")) == .everything)
        #expect(try await auth.authenticate(Self.request(bearer: "s3cret")) == .everything)
        #expect(await Self.failure(auth, Self.request())?.hasPrefix("authentication required") == true)
        #expect(await Self.failure(auth, Self.request(query: "s3cre")) == "the token is not valid")
    }

    @Test func aJWTsTablesClaimBecomesQualifiedNamesAndItsExpiryIsKept() async throws {
        let auth = await ClientAuthenticator(token: nil, jwtSecret: Self.secret)
        let expiry = Date().addingTimeInterval(600)
        let jwt = try await Self.sign(Claims(exp: .init(value: expiry), tables: ["orders", "audit.events"]))
        let access = try await auth.authenticate(Self.request(bearer: jwt))
        #expect(access.tables == ["public.orders", "audit.events"])
        #expect(abs((access.expires ?? .distantPast).timeIntervalSince(expiry)) < 1)
        #expect(try await auth.authenticate(Self.request(query: try await Self.sign(Claims()))) == .everything)
    }

    @Test func badJWTsAreRefusedWithTheirCause() async throws {
        let auth = await ClientAuthenticator(token: "s3cret", jwtSecret: Self.secret)
        let cases: [(String, String)] = [
            (try await Self.sign(Claims(exp: .init(value: Date().addingTimeInterval(-60)))), "expired"),
            (try await Self.sign(Claims(nbf: .init(value: Date().addingTimeInterval(600)))), "not valid"),
            (try await Self.sign(Claims(), secret: String(repeating: "another-secret-", count: 5)), "neither the server's token nor a JWT"),
            (try await Self.sign(Claims(), digest: .sha384), "neither the server's token nor a JWT"),
            ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ0YWJsZXMiOm51bGx9.", "neither the server's token nor a JWT"),
            ("not.a.jwt", "not a JWT rowcast can read"),
            (try await Self.sign(OddClaims(tables: 3)), "\"tables\" is an array of table names"),
            (try await Self.sign(Claims(tables: ["a.b.c"])), "\"a.b.c\", which is not a table name"),
        ]
        for (jwt, cause) in cases {
            let message = await Self.failure(auth, Self.request(bearer: jwt))
            #expect(message?.contains(cause) == true, "\(jwt): \(message ?? "accepted")")
        }
    }

    @Test func accessNarrowsSubscriptionsAndRefusesOtherTables() throws {
        let access = ClientAccess(tables: ["public.orders"], expires: nil)
        #expect(try access.restrict(.everything).tables == ["public.orders"])
        let orders = Subscription(tables: ["public.orders"], ops: [.insert], filter: nil)
        #expect(try access.restrict(orders) == orders)
        #expect(throws: ClientMessageError.forbidden("not allowed to see public.secrets; this credential allows public.orders")) {
            try access.restrict(Subscription(tables: ["public.orders", "public.secrets"], ops: nil, filter: nil))
        }
        #expect(try ClientAccess.everything.restrict(orders) == orders)
    }

    /// A `rows` claim's value, of any shape, to test what rowcast reads and refuses.
    enum RuleValue: Codable {
        case one(String), all([String]), number(Int), object([String: String])

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .one(let value): try container.encode(value)
            case .all(let values): try container.encode(values)
            case .number(let value): try container.encode(value)
            case .object(let value): try container.encode(value)
            }
        }

        init(from decoder: any Decoder) throws { self = .one(try decoder.singleValueContainer().decode(String.self)) }
    }

    struct RowsClaims: JWTPayload {
        var tables: [String]?
        var rows: [String: RuleValue]
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// A `rows` claim becomes each table's conditions, and the subscription carries them
    /// whatever the client asks; a claim rowcast cannot read is a 401 naming the cause.
    @Test func rowsClaimsAreReadOrRefusedWithTheirCause() async throws {
        let auth = await ClientAuthenticator(token: nil, jwtSecret: Self.secret)
        let jwt = try await Self.sign(RowsClaims(rows: ["orders": .one("tenant=eq.42"), "audit.events": .all(["a=gt.1", "b=in.(x,y)"])]))
        let access = try await auth.authenticate(Self.request(bearer: jwt))
        #expect(access.tables == nil)
        #expect(access.rows["public.orders"]?.map(\.description) == ["tenant=eq.42"])
        #expect(access.rows["audit.events"]?.map(\.description) == ["a=gt.1", "b=in.(x,y)"])
        // The client's own subscription gets the rules, and cannot drop them.
        var asked = Subscription(tables: ["public.orders"], ops: nil, filter: try RowFilter(parsing: "tenant=eq.7"))
        asked.rules = [:]
        #expect(try access.restrict(asked).rules == access.rows)
        let cases: [(RowsClaims, String)] = [
            (RowsClaims(rows: ["orders": .number(3)]), "\"rows\" an object of table names to a filter"),
            (RowsClaims(rows: ["orders": .object(["a": "b"])]), "\"rows\" an object of table names to a filter"),
            (RowsClaims(rows: ["orders": .one("tenant")]), "the token's rows claim for public.orders is not a filter rowcast can read"),
            (RowsClaims(rows: ["orders": .all([])]), "must have 1 to 8 conditions"),
            (RowsClaims(rows: ["orders": .all(Array(repeating: "a=eq.1", count: 9))]), "must have 1 to 8 conditions"),
            (RowsClaims(rows: ["a.b.c": .one("a=eq.1")]), "\"a.b.c\", which is not a table name"),
        ]
        for (claims, cause) in cases {
            let message = await Self.failure(auth, Self.request(bearer: try await Self.sign(claims)))
            #expect(message?.contains(cause) == true, "\(claims.rows): \(message ?? "accepted")")
        }
    }
}
