import Core
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// `/admin` (the operator dashboard, behind `ADMIN_TOKEN`) and `/usage` (a key holder's own
/// month). Both are outside the customer API's authentication: an admin token is never a
/// customer key and a customer key never opens `/admin`. Every page is read-only (changes stay
/// in the CLI, so the audit trail stays in one place) and is served with a strict
/// Content-Security-Policy: no inline script, no request to anywhere else.
struct DashboardRoutes: Sendable {
    let pages: AdminPages
    let session: AdminSession?
    let logger: Logger
    let guesses = GuessLimiter()

    init(store: any Store, ollama: OllamaPool, configuration: Configuration, logger: Logger) {
        pages = AdminPages(store: store, ollama: ollama, configuration: configuration)
        session = configuration.adminToken.map(AdminSession.init(token:))
        self.logger = logger
    }

    /// Paths that skip customer authentication (the dashboard checks its own credential).
    static func owns(_ path: String) -> Bool {
        path == "/admin" || path.hasPrefix("/admin/") || path == "/usage" || path.hasPrefix("/usage/")
    }

    static let contentSecurityPolicy = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        + "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

    func register(on router: Router<GatewayContext>) {
        router.get("/admin/assets/dashboard.css") { _, _ in Self.asset(DashboardAssets.css, type: "text/css; charset=utf-8") }
        router.get("/admin/assets/favicon.svg") { _, _ in Self.asset(DashboardAssets.favicon, type: "image/svg+xml") }
        router.get("/usage/usage.js") { _, _ in Self.asset(DashboardAssets.keyHolderScript, type: "text/javascript; charset=utf-8") }
        router.get("/usage") { _, _ in Self.html(DashboardAssets.keyHolderPage) }
        router.get("/admin/login") { request, _ in
            guard session != nil else { return Self.off() }
            return Self.html(Self.loginPage(error: nil))
        }
        router.post("/admin/login") { request, _ in try await login(request) }
        router.post("/admin/logout") { request, _ in
            if Self.isCrossSite(request) { return Self.html(HTML.page(title: "Refused", nav: false, body: "<p>Cross-site request.</p>"), status: .forbidden) }
            var response = Self.redirect("/admin/login")
            response.headers[.setCookie] = "\(AdminSession.cookieName)=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"
            return response
        }
        router.get("/admin") { request, _ in
            try await authorized(request) { try await pages.overview(month: request.uri.queryParameters["month"].map(String.init)) }
        }
        router.get("/admin/customers") { request, _ in
            try await authorized(request) { try await pages.customers(sort: request.uri.queryParameters["sort"].map(String.init)) }
        }
        router.get("/admin/customers/:id") { request, context in
            try await authorized(request) {
                guard let id = context.parameters.get("id").flatMap({ Int64($0) }),
                      let page = try await pages.customer(id: id, month: request.uri.queryParameters["month"].map(String.init))
                else { return nil }
                return page
            }
        }
        router.get("/admin/models") { request, _ in try await authorized(request) { try await pages.models() } }
    }

    // MARK: Credentials

    /// The page when the request carries the admin token (bearer) or a live session cookie;
    /// otherwise the login form. A database failure is a 503 page, never a pass.
    func authorized(_ request: Request, _ page: () async throws -> String?) async throws -> Response {
        guard let session else { return Self.off() }
        switch admission(request, session) {
        case .admitted: break
        case .anonymous: return Self.redirect("/admin/login")
        case .throttled: return Self.throttled()
        }
        do {
            guard let html = try await page() else { return Self.html(HTML.page(title: "Not found", body: "<p>No such page.</p>"), status: .notFound) }
            return Self.html(html)
        } catch {
            return Self.html(HTML.page(title: "Database unavailable", body: "<p>The billing database cannot be read now; try again shortly.</p>"),
                             status: .serviceUnavailable)
        }
    }

    enum Admission { case admitted, anonymous, throttled }

    /// A live session cookie admits; a bearer token admits when it is the admin token, and a
    /// wrong one counts as a guess (refused for everyone once too many were wrong this minute).
    func admission(_ request: Request, _ session: AdminSession) -> Admission {
        let now = nowMicros()
        if Self.cookies(request.headers[values: .cookie]).contains(where: { name, value in
            name == AdminSession.cookieName && session.isValid(cookie: value, nowMicros: now)
        }) {
            return .admitted
        }
        guard let authorization = request.headers[.authorization], authorization.lowercased().hasPrefix("bearer ") else {
            return .anonymous
        }
        guard guesses.allowsAnother(nowMicros: now) else { return .throttled }
        if session.isToken(String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)) { return .admitted }
        failedGuess(now, how: "bearer")
        return .anonymous
    }

    func failedGuess(_ now: Int64, how: String) {
        guesses.recordFailure(nowMicros: now)
        logger.warning("a wrong admin token was presented", metadata: ["via": "\(how)"])
    }

    func login(_ request: Request) async throws -> Response {
        guard let session else { return Self.off() }
        // Another site's page cannot log a browser in with a token of its choosing.
        if Self.isCrossSite(request) { return Self.html(Self.loginPage(error: "Cross-site login refused."), status: .forbidden) }
        let now = nowMicros()
        guard guesses.allowsAnother(nowMicros: now) else { return Self.throttled() }
        let body = try await request.body.collect(upTo: 4096)
        let token = Self.formValue(String(buffer: body), "token") ?? ""
        guard session.isToken(token) else {
            failedGuess(now, how: "login form")
            return Self.html(Self.loginPage(error: "That is not the admin token."), status: .unauthorized)
        }
        var response = Self.redirect("/admin")
        // Secure unless the browser is on this machine (http://localhost, or an SSH tunnel to it):
        // behind a proxy or tunnel that terminates TLS the cookie must never travel in clear.
        response.headers[.setCookie] = "\(AdminSession.cookieName)=\(session.cookieValue(issuedAtMicros: now)); Path=/admin; "
            + "HttpOnly; SameSite=Strict; Max-Age=\(AdminSession.lifetimeMicros / 1_000_000)" + (Self.isLoopback(request) ? "" : "; Secure")
        return response
    }

    // MARK: Responses

    static func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [
            .contentType: "text/html; charset=utf-8", .contentSecurityPolicy: contentSecurityPolicy,
            .cacheControl: "no-store", HTTPField.Name("x-content-type-options")!: "nosniff",
            HTTPField.Name("referrer-policy")!: "no-referrer",
        ], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache", HTTPField.Name("x-content-type-options")!: "nosniff"],
                 body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }

    /// Whether the browser addressed this machine itself (`Host` is localhost or a loopback address).
    static func isLoopback(_ request: Request) -> Bool {
        guard var host = request.head.authority else { return false }
        if host.hasPrefix("[") { host = String(host.dropFirst().prefix { $0 != "]" }) }
        else if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// A browser's own word that another site sent this request (`Sec-Fetch-Site`).
    static func isCrossSite(_ request: Request) -> Bool {
        request.headers[HTTPField.Name("sec-fetch-site")!]?.lowercased() == "cross-site"
    }

    static func throttled() -> Response {
        var response = html(HTML.page(title: "Too many wrong tokens", nav: false, body:
            "<p>Too many wrong admin tokens were tried in the last minute; try again in a minute.</p>"), status: .tooManyRequests)
        response.headers[.retryAfter] = "60"
        return response
    }

    static func off() -> Response {
        html(HTML.page(title: "Dashboard off", nav: false, body: """
            <p>The operator dashboard is off because no admin token is set. To turn it on, set
            <code>ADMIN_TOKEN</code> to a long random value (for example <code>openssl rand -hex 24</code>)
            in the environment of <code>lmsvr serve</code> and restart it.</p>
            <p>Key holders can see their own usage at <a href="/usage">/usage</a>.</p>
            """), status: .notFound)
    }

    static func loginPage(error: String?) -> String {
        HTML.page(title: "Log in", nav: false, body: """
            \(error.map { "<p class=\"error\" role=\"alert\">\(HTML.escape($0))</p>" } ?? "")
            <form method="post" action="/admin/login" class="login">
            <label for="token">Admin token</label>
            <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
            <button type="submit">Log in</button>
            </form>
            """)
    }

    /// `name=value` pairs of `Cookie` headers.
    static func cookies(_ headers: [String]) -> [(String, String)] {
        headers.flatMap { $0.split(separator: ";") }.compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            return parts.count == 2 ? (parts[0], parts[1]) : nil
        }
    }

    /// One field of an `application/x-www-form-urlencoded` body.
    static func formValue(_ body: String, _ name: String) -> String? {
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0] == name else { continue }
            return String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
        }
        return nil
    }
}

/// Wrong admin tokens are counted per process: past `limit` in a minute, every token attempt
/// (form or bearer) is refused until the minute ends, so the token cannot be guessed online.
/// Sessions already open keep working.
final class GuessLimiter: Sendable {
    static let limit = 20
    private let window = NIOLockedValueBox<(start: Int64, failures: Int)>((0, 0))

    func allowsAnother(nowMicros: Int64) -> Bool {
        window.withLockedValue { window in
            if nowMicros - window.start >= 60_000_000 { window = (nowMicros, 0) }
            return window.failures < Self.limit
        }
    }

    func recordFailure(nowMicros: Int64) {
        window.withLockedValue { window in
            if nowMicros - window.start >= 60_000_000 { window = (nowMicros, 0) }
            window.failures += 1
        }
    }
}
