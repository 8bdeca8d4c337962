import Core
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Wraps every request: gives it an `x-request-id`, authenticates it unless the route is public,
/// renders any error in the dialect of the route, and logs one line (never the key or a body).
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = GatewayContext

    let authenticator: Authenticator
    /// Past its size limit, new requests are refused before anything else is done.
    let journal: SettleJournal
    let logger: Logger
    let metrics: GatewayMetrics
    /// The configured body limit, for 413 messages.
    let maxBodyBytes: Int

    /// Routes that need no key. Everything else does (deny by default).
    static let publicPaths: Set<String> = ["/", "/health", "/health/live", "/health/ollama", "/metrics"]
    /// Ollama's model-management routes: refused to everyone with 403.
    static let forbiddenPrefixes = ["/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs"]

    func handle(_ request: Request, context: GatewayContext,
                next: (Request, GatewayContext) async throws -> Response) async throws -> Response {
        var context = context
        let path = request.uri.path
        let dialect = Dialect.of(path: path, headers: request.headers)
        var response: Response
        do {
            if try needsKey(path) {
                let principal = try await authenticator.authenticate(request.headers)
                try Self.checkScope(principal, dialect: dialect, path: path)
                context.principal = principal
            }
            response = try await next(request, context)
        } catch {
            response = render(error, dialect: dialect, path: path, requestId: context.requestId)
        }
        finish(&response, method: request.method, path: path, dialect: dialect, context: context)
        return response
    }

    /// Refuses what no key may reach and says whether the path needs one.
    func needsKey(_ path: String) throws(GatewayError) -> Bool {
        // The router skips empty segments, so `//v1/chat/completions` would reach the OpenAI
        // route while its path reads as Ollama's: a path must be what it routes as.
        guard Self.isCanonical(path) else { throw GatewayError.routeNotFound(path) }
        if Self.forbiddenPrefixes.contains(where: { path == $0 || path.hasPrefix($0 + "/") }) {
            throw GatewayError.forbiddenRoute(path)
        }
        // The dashboard and the key holder's page check their own credentials.
        guard !Self.publicPaths.contains(path) && !DashboardRoutes.owns(path) else { return false }
        guard !journal.isFull else { throw GatewayError.chargesBacklogged }
        return true
    }

    /// A key scoped to some API families reaches only their routes (its own usage is every
    /// key's to read).
    static func checkScope(_ principal: Principal, dialect: Dialect, path: String) throws(GatewayError) {
        if !principal.scope.allows(dialect.family), !SelfServiceRoutes.paths.contains(path) {
            throw GatewayError.forbiddenAPI(dialect.family)
        }
    }

    /// Any error as the route's dialect renders it.
    func render(_ error: any Error, dialect: Dialect, path: String, requestId: String) -> Response {
        switch error {
        case let error as GatewayError:
            return ErrorRenderer.response(error, dialect: dialect)
        case let error as HTTPError:
            return ErrorRenderer.response(Self.translate(error, path: path, maxBodyBytes: maxBodyBytes), dialect: dialect)
        case is NIOTooManyBytesError:
            return ErrorRenderer.response(.bodyTooLarge(limit: maxBodyBytes), dialect: dialect)
        default:
            logger.error("unhandled error", metadata: ["request_id": "\(requestId)", "error": "\(error)"])
            return ErrorRenderer.response(.internalError("unexpected failure"), dialect: dialect)
        }
    }

    /// The request id header, the metrics and the log line of a finished request.
    func finish(_ response: inout Response, method: HTTPRequest.Method, path: String, dialect: Dialect,
                context: GatewayContext) {
        response.headers[.xRequestId] = context.requestId
        metrics.request(route: context.endpointPath ?? "unmatched", dialect: dialect, status: Int(response.status.code),
                        latency: ContinuousClock.now - context.startedAt)
        if logger.logLevel <= .info {
            // Plain strings, not interpolations: this line is written for every request.
            logger.info("request", metadata: [
                "request_id": .string(context.requestId), "method": .string(method.rawValue), "path": .string(path),
                "status": .string(String(response.status.code)),
                "latency_ms": .string(String(Double(context.startedAt.microsecondsElapsed) / 1000)),
                "customer_id": .string(context.principal.map { String($0.customerId) } ?? "-"),
            ])
        }
    }

    /// No empty, `.` or `..` segment (a trailing `/` aside): the dialect, the scope and the
    /// forbidden prefixes are read from the path, so it must name the route it reaches.
    static func isCanonical(_ path: String) -> Bool {
        var segments = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst()
        if segments.count > 1, segments.last?.isEmpty == true { segments = segments.dropLast() }
        return segments.allSatisfy { segment in
            !segment.isEmpty && !segment.elementsEqual(".".utf8) && !segment.elementsEqual("..".utf8)
        } || path == "/"
    }

    /// Hummingbird's own errors (no route, body too large, bad method) in our vocabulary.
    static func translate(_ error: HTTPError, path: String, maxBodyBytes: Int) -> GatewayError {
        switch error.status {
        case .notFound: .routeNotFound(path)
        case .contentTooLarge: .bodyTooLarge(limit: maxBodyBytes)
        case .methodNotAllowed: .invalidRequest("method not allowed on \(path)")
        default: error.status.code < 500 ? .invalidRequest(error.body ?? error.status.reasonPhrase) : .internalError(error.status.reasonPhrase)
        }
    }
}
