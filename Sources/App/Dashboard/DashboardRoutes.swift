import Core
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `/admin` (the operator dashboard, behind `ADMIN_TOKEN`) and `/usage` (a key holder's own
/// month). Both are outside the customer API's authentication: an admin token is never a
/// customer key and a customer key never opens `/admin`. Every page is read-only (changes stay
/// in the CLI, so the audit trail stays in one place) and is served with a strict
/// Content-Security-Policy: no inline script, no request to anywhere else.
struct DashboardRoutes: Sendable {
    let pages: AdminPages
    let session: AdminSession?

    init(store: any Store, ollama: OllamaPool, configuration: Configuration) {
        pages = AdminPages(store: store, ollama: ollama, configuration: configuration)
        session = configuration.adminToken.map(AdminSession.init(token:))
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
        router.post("/admin/logout") { _, _ in
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
        guard isAdmin(request, session) else { return Self.redirect("/admin/login") }
        do {
            guard let html = try await page() else { return Self.html(HTML.page(title: "Not found", body: "<p>No such page.</p>"), status: .notFound) }
            return Self.html(html)
        } catch {
            return Self.html(HTML.page(title: "Database unavailable", body: "<p>The billing database cannot be read now; try again shortly.</p>"),
                             status: .serviceUnavailable)
        }
    }

    func isAdmin(_ request: Request, _ session: AdminSession) -> Bool {
        if let authorization = request.headers[.authorization], authorization.lowercased().hasPrefix("bearer "),
           session.isToken(String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)) {
            return true
        }
        let now = nowMicros()
        return Self.cookies(request.headers[values: .cookie]).contains { name, value in
            name == AdminSession.cookieName && session.isValid(cookie: value, nowMicros: now)
        }
    }

    func login(_ request: Request) async throws -> Response {
        guard let session else { return Self.off() }
        let body = try await request.body.collect(upTo: 4096)
        let token = Self.formValue(String(buffer: body), "token") ?? ""
        guard session.isToken(token) else {
            return Self.html(Self.loginPage(error: "That is not the admin token."), status: .unauthorized)
        }
        var response = Self.redirect("/admin")
        // Secure when the browser came over TLS (directly, or through a proxy or tunnel that says so).
        let tls = request.uri.scheme == .https || request.headers[HTTPField.Name("x-forwarded-proto")!]?.lowercased() == "https"
        response.headers[.setCookie] = "\(AdminSession.cookieName)=\(session.cookieValue(issuedAtMicros: nowMicros())); Path=/admin; "
            + "HttpOnly; SameSite=Strict; Max-Age=\(AdminSession.lifetimeMicros / 1_000_000)" + (tls ? "; Secure" : "")
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
