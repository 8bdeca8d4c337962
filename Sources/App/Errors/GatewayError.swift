import Core
import Hummingbird
import HTTPTypes

/// Every way a request can fail, grouped by who is at fault. The HTTP status comes from one
/// switch; each API dialect renders the same error in its own shape (`ErrorRenderer`).
public enum GatewayError: Error, Sendable {
    // The caller.
    case missingKey
    case invalidKey
    case revokedKey
    case expiredKey
    case invalidRequest(String)
    case bodyTooLarge(limit: Int)
    case routeNotFound(String)
    case unknownModel(String)
    // Policy.
    case budgetExceeded(BudgetStatus)
    case forbiddenRoute(String)
    /// The key's scope does not include this API family.
    case forbiddenAPI(APIFamily)
    /// The key's scope does not include this model.
    case forbiddenModel(String)
    case rateLimited(LimitRefusal)
    // The upstream provider.
    case upstreamUnreachable(String)
    case upstreamInvalid(String)
    case upstreamTimeout
    /// The upstream answered with an error status; `body` is its own error body, in the shape
    /// of `bodyDialect`, passed through untouched to clients of that dialect.
    case upstreamStatus(status: Int, message: String, body: ByteBuffer?, bodyDialect: Dialect = .ollama)
    // The gateway itself.
    case databaseUnavailable
    /// The settle journal is over its size limit: the gateway could not record new charges.
    case chargesBacklogged
    case internalError(String)

    public var status: HTTPResponse.Status {
        switch self {
        case .missingKey, .invalidKey, .revokedKey, .expiredKey: .unauthorized
        case .invalidRequest: .badRequest
        case .bodyTooLarge: .contentTooLarge
        case .routeNotFound, .unknownModel: .notFound
        case .budgetExceeded: HTTPResponse.Status(code: 402, reasonPhrase: "Payment Required")
        case .forbiddenRoute, .forbiddenAPI, .forbiddenModel: .forbidden
        case .rateLimited: .tooManyRequests
        case .upstreamUnreachable, .upstreamInvalid: .badGateway
        case .upstreamTimeout: .gatewayTimeout
        case .upstreamStatus(let status, _, _, _): HTTPResponse.Status(code: status)
        case .databaseUnavailable, .chargesBacklogged: .serviceUnavailable
        case .internalError: .internalServerError
        }
    }

    /// A message for the client: actionable, never a secret.
    public var message: String {
        switch self {
        case .missingKey: "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        case .invalidKey: "invalid API key"
        case .revokedKey: "this API key has been revoked"
        case .expiredKey: "this API key has expired"
        case .invalidRequest(let m): m
        case .bodyTooLarge(let limit): "request body is larger than the limit of \(limit) bytes"
        case .routeNotFound(let path): "no route for \(path)"
        case .unknownModel(let model): "model '\(model)' not found"
        case .budgetExceeded(let s) where s.keyId != nil:
            "key budget exceeded: this API key spent \(s.spent) and \(s.held) in flight of its \(s.budget?.description ?? "unlimited") monthly budget for \(s.period)"
        case .budgetExceeded(let s):
            "budget exceeded: spent \(s.spent) and \(s.held) in flight of the \(s.budget?.description ?? "unlimited") monthly budget for \(s.period)"
        case .forbiddenRoute(let path): "\(path) is not available through this gateway: models are managed by the operator"
        case .forbiddenAPI(let family): "this API key may not use the \(family.rawValue) API"
        case .forbiddenModel(let model): "this API key may not use model '\(model)'"
        case .rateLimited(let refusal): refusal.message
        case .upstreamUnreachable(let m): "upstream unreachable: \(m)"
        case .upstreamInvalid(let m): "invalid response from upstream: \(m)"
        case .upstreamTimeout: "upstream timed out"
        case .upstreamStatus(_, let m, _, _): m
        case .databaseUnavailable: "service temporarily unavailable: the billing database cannot be reached"
        case .chargesBacklogged: "service temporarily unavailable: charges cannot be recorded right now"
        case .internalError(let m): "internal error: \(m)"
        }
    }
}

/// The API dialect a route speaks, which decides the shape of its errors.
public enum Dialect: String, Sendable {
    case ollama
    case openai
    case anthropic

    /// The API family a key's scope names for this dialect.
    var family: APIFamily {
        switch self {
        case .ollama: .ollama
        case .openai: .openai
        case .anthropic: .anthropic
        }
    }

    /// The dialect of a path (the Anthropic models list is told apart by its headers).
    static func of(path: String, headers: HTTPFields) -> Dialect {
        if path.hasPrefix("/v1/messages") { return .anthropic }
        if path.hasPrefix("/v1/") {
            if path.hasPrefix("/v1/models"),
               headers[.anthropicVersion] != nil { return .anthropic }
            return .openai
        }
        return .ollama
    }
}
