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
}
