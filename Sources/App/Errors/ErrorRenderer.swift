import Core
import Foundation
import HTTPTypes
import Hummingbird

/// Renders a `GatewayError` as the response body each dialect's clients expect.
enum ErrorRenderer {
    static func response(_ error: GatewayError, dialect: Dialect) -> Response {
        // An upstream error in the caller's own dialect passes through untouched.
        if case .upstreamStatus(_, _, let body?, let bodyDialect) = error, bodyDialect == dialect {
            return Response(status: error.status, headers: [.contentType: "application/json; charset=utf-8"],
                            body: .init(byteBuffer: body))
        }
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if case .rateLimited(let refusal) = error { addRateLimitHeaders(refusal, dialect: dialect, to: &headers) }
        return Response(status: error.status, headers: headers, body: .init(byteBuffer: body(error, dialect: dialect)))
    }

    /// `Retry-After` (whole seconds) and `retry-after-ms` (which the OpenAI and Anthropic SDKs
    /// prefer), unless the request can never fit; and the limit that refused it in the headers
    /// each dialect's clients read (`x-ratelimit-*` for OpenAI, `anthropic-ratelimit-*`).
    static func addRateLimitHeaders(_ refusal: LimitRefusal, dialect: Dialect, to headers: inout HTTPFields) {
        if refusal.retryAfterMicros >= 0 {
            headers[.retryAfter] = String(refusal.retryAfterSeconds)
            headers[HTTPField.Name("retry-after-ms")!] = String((refusal.retryAfterMicros + 999) / 1000)
        }
        let reset = LimitRefusal.seconds(max(refusal.retryAfterMicros, 0))
        let (openAI, anthropic): (String, String) = switch refusal.kind {
        case .requestsPerMinute, .concurrency: ("requests", "requests")
        case .tokensPerMinute: ("tokens", "tokens")
        }
        switch dialect {
        case .anthropic:
            headers[HTTPField.Name("anthropic-ratelimit-\(anthropic)-limit")!] = String(refusal.limit)
            headers[HTTPField.Name("anthropic-ratelimit-\(anthropic)-remaining")!] = "0"
        case .openai, .ollama:
            headers[HTTPField.Name("x-ratelimit-limit-\(openAI)")!] = String(refusal.limit)
            headers[HTTPField.Name("x-ratelimit-remaining-\(openAI)")!] = "0"
            headers[HTTPField.Name("x-ratelimit-reset-\(openAI)")!] = reset
        }
    }

    static func body(_ error: GatewayError, dialect: Dialect) -> ByteBuffer {
        switch dialect {
        case .ollama:
            return ByteBuffer(string: "{\"error\":\(JSONText.quote(error.message))}")
        case .openai:
            let (type, code, param) = openAIVocabulary(error)
            return ByteBuffer(string: "{\"error\":{\"message\":\(JSONText.quote(error.message)),\"type\":\(JSONText.quote(type)),\"param\":\(param.map(JSONText.quote) ?? "null"),\"code\":\(code.map(JSONText.quote) ?? "null")}}")
        case .anthropic:
            return ByteBuffer(string: "{\"type\":\"error\",\"error\":{\"type\":\(JSONText.quote(anthropicType(error))),\"message\":\(JSONText.quote(error.message))}}")
        }
    }

    /// OpenAI's (type, code, param) for an error.
    static func openAIVocabulary(_ error: GatewayError) -> (String, String?, String?) {
        switch error {
        case .missingKey, .invalidKey, .revokedKey, .expiredKey: ("invalid_request_error", "invalid_api_key", nil)
        case .forbiddenAPI, .forbiddenModel: ("permission_error", "permission_denied", nil)
        case .rateLimited(let refusal):
            (refusal.kind == .tokensPerMinute ? "tokens" : "requests", "rate_limit_exceeded", nil)
        case .invalidRequest, .bodyTooLarge, .routeNotFound: ("invalid_request_error", nil, nil)
        case .unknownModel, .upstreamStatus(404, _, _, _): ("invalid_request_error", "model_not_found", "model")
        case .budgetExceeded: ("insufficient_quota", "insufficient_quota", nil)
        case .forbiddenRoute: ("invalid_request_error", "forbidden", nil)
        case .upstreamStatus(429, _, _, _): ("rate_limit_exceeded", "rate_limit_exceeded", nil)
        case .upstreamStatus(let status, _, _, _) where status < 500: ("invalid_request_error", nil, nil)
        case .databaseUnavailable, .chargesBacklogged: ("service_unavailable_error", "service_unavailable", nil)
        default: ("server_error", nil, nil)
        }
    }

    static func anthropicType(_ error: GatewayError) -> String {
        switch error {
        case .missingKey, .invalidKey, .revokedKey, .expiredKey: "authentication_error"
        case .forbiddenAPI, .forbiddenModel: "permission_error"
        case .rateLimited: "rate_limit_error"
        case .invalidRequest, .routeNotFound: "invalid_request_error"
        case .bodyTooLarge: "request_too_large"
        case .unknownModel, .upstreamStatus(404, _, _, _): "not_found_error"
        case .budgetExceeded: "billing_error"
        case .forbiddenRoute: "permission_error"
        case .upstreamStatus(429, _, _, _): "rate_limit_error"
        case .upstreamStatus(let status, _, _, _) where status == 529 || status == 503: "overloaded_error"
        case .upstreamStatus(401, _, _, _), .upstreamStatus(403, _, _, _): "api_error"
        case .upstreamStatus(let status, _, _, _) where status < 500: "invalid_request_error"
        case .upstreamTimeout: "timeout_error"
        case .databaseUnavailable, .chargesBacklogged: "overloaded_error"
        default: "api_error"
        }
    }
}

/// Minimal JSON text helpers for bodies the gateway writes itself.
enum JSONText {
    /// A JSON string literal for `text`, escaped per RFC 8259.
    static func quote(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let s where s.value < 0x20:
                let hex = String(s.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Serialises a JSON value built from dictionaries, arrays, strings and numbers.
    static func encode(_ value: Any) -> ByteBuffer {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("null".utf8)
        return ByteBuffer(bytes: data)
    }
}
