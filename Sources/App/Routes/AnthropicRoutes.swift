import AsyncHTTPClient
import Core
import Foundation
import Hummingbird
import NIOCore
import Providers

/// The Anthropic-compatible API: `/v1/messages`, translated to Ollama for Ollama's models and
/// passed through (with the operator's key) for `claude-*` models.
struct AnthropicRoutes: Sendable {
    let upstream: UpstreamClient
    let billing: Billing
    let router: ModelRouter
    let configuration: Configuration

    func register(on router: Router<GatewayContext>) {
        router.post("/v1/messages") { request, context in try await messages(request, context) }
    }

    var call: UpstreamCall { UpstreamCall(upstream: upstream, billing: billing) }

    func messages(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let metered = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes,
                                                    missingModel: "model: Field required")
        let (principal, body, object, model) = (metered.principal, metered.body, metered.object, metered.model)
        let promptEstimate = metered.promptEstimate
        switch await router.provider(for: model) {
        case .openai:
            throw GatewayError.invalidRequest("model '\(model)' is served through the OpenAI API: POST /v1/chat/completions")
        case .anthropic:
            let stream = object["stream"] as? Bool ?? false
            let ticket = try await billing.hold(
                requestId: context.requestId, principal: principal, endpoint: "/v1/messages", dialect: .anthropic,
                provider: "anthropic", model: model, promptEstimate: promptEstimate,
                maxOutputTokens: JSONValue.int64(object["max_tokens"]), startedAt: context.startedAt)
            var headers = [("x-api-key", configuration.anthropicAPIKey ?? ""),
                           ("anthropic-version", request.headers[.anthropicVersion] ?? "2023-06-01")]
            if let beta = request.headers[.anthropicBeta] { headers.append(("anthropic-beta", beta)) }
            // The body goes upstream byte for byte: nothing in it needs changing.
            let response = try await call.send(configuration.anthropicBaseURL + "/v1/messages", headers: headers,
                                               body: body, ticket: ticket, bodyDialect: .anthropic)
            if stream {
                return StreamRunner.respond(response, relay: AnthropicPassRelay(), ticket: ticket, billing: billing)
            }
            let (bytes, answer) = try await call.collectJSON(response, ticket: ticket)
            await billing.settleAnswered(ticket, usage: (answer["usage"] as? [String: Any]).map { ReportedUsage.anthropic($0) })
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: bytes))
        case .ollama:
            let translated: AnthropicRequestTranslator.Translated
            do {
                translated = try AnthropicRequestTranslator.translate(object)
            } catch {
                throw GatewayError.invalidRequest(error.message)
            }
            let ticket = try await billing.hold(
                requestId: context.requestId, principal: principal, endpoint: "/v1/messages", dialect: .anthropic,
                provider: "ollama", model: model, promptEstimate: promptEstimate,
                maxOutputTokens: translated.maxOutputTokens, startedAt: context.startedAt)
            let response = try await call.send(configuration.ollamaBaseURL + "/api/chat", body: jsonBody(translated.ollamaBody),
                                               ticket: ticket, bodyDialect: .ollama)
            if translated.stream {
                let encoder = AnthropicStreamEncoder(requestId: context.requestId, model: model, inputEstimate: promptEstimate)
                return StreamRunner.respond(response, relay: TranslatingRelay(encoder: encoder), ticket: ticket, billing: billing)
            }
            let answer = try await call.collectOllamaAnswer(response, ticket: ticket)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(
                string: AnthropicResponseTranslator.message(answer, model: model, requestId: context.requestId))))
        }
    }
}
