import AsyncHTTPClient
import Core
import Foundation
import Hummingbird
import Logging
import NIOCore
import Providers

/// The OpenAI-compatible API: `/v1/chat/completions` and `/v1/embeddings`, translated to Ollama
/// for Ollama's models and passed through (with the operator's key) for OpenAI's.
struct OpenAIRoutes: Sendable {
    let upstream: UpstreamClient
    let billing: Billing
    let router: ModelRouter
    let configuration: Configuration

    func register(on router: Router<GatewayContext>) {
        router.post("/v1/chat/completions") { request, context in try await chat(request, context) }
        router.post("/v1/embeddings") { request, context in try await embeddings(request, context) }
    }

    var call: UpstreamCall { UpstreamCall(upstream: upstream, billing: billing) }

    func chat(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let metered = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes,
                                                    missingModel: "you must provide a model parameter")
        let (principal, model, promptEstimate) = (metered.principal, metered.model, metered.promptEstimate)
        var object = metered.object
        switch await router.provider(for: model) {
        case .anthropic:
            throw GatewayError.invalidRequest("model '\(model)' is served through the Anthropic API: POST /v1/messages")
        case .openai:
            let stream = object["stream"] as? Bool ?? false
            var streamOptions = object["stream_options"] as? [String: Any] ?? [:]
            let clientAskedForUsage = streamOptions["include_usage"] as? Bool ?? false
            if stream {
                // Always ask for the usage chunk; the relay drops it again if the client did not.
                streamOptions["include_usage"] = true
                object["stream_options"] = streamOptions
            }
            let maxOutput = JSONValue.int64(object["max_completion_tokens"]) ?? JSONValue.int64(object["max_tokens"])
            let ticket = try await billing.hold(
                requestId: context.requestId, principal: principal, endpoint: "/v1/chat/completions", dialect: .openai,
                provider: "openai", model: model, promptEstimate: promptEstimate, maxOutputTokens: maxOutput,
                startedAt: context.startedAt)
            let response = try await call.send(configuration.openAIBaseURL + "/chat/completions",
                                               headers: [("authorization", "Bearer \(configuration.openAIAPIKey ?? "")")],
                                               body: jsonBody(object), ticket: ticket, bodyDialect: .openai)
            if stream {
                return StreamRunner.respond(response, relay: OpenAIPassRelay(clientAskedForUsage: clientAskedForUsage),
                                            ticket: ticket, billing: billing)
            }
            let (bytes, answer) = try await call.collectJSON(response, ticket: ticket)
            await billing.settleAnswered(ticket, usage: (answer["usage"] as? [String: Any]).map(ReportedUsage.openAI))
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: bytes))
        case .ollama:
            let translated: OpenAIRequestTranslator.Translated
            do {
                translated = try OpenAIRequestTranslator.translate(object)
            } catch {
                throw GatewayError.invalidRequest(error.message)
            }
            let ticket = try await billing.hold(
                requestId: context.requestId, principal: principal, endpoint: "/v1/chat/completions", dialect: .openai,
                provider: "ollama", model: model, promptEstimate: promptEstimate,
                maxOutputTokens: translated.maxOutputTokens, startedAt: context.startedAt)
            let response = try await call.send(configuration.ollamaBaseURL + "/api/chat", body: jsonBody(translated.ollamaBody),
                                               ticket: ticket, bodyDialect: .ollama)
            let created = nowMicros() / 1_000_000
            if translated.stream {
                let encoder = OpenAIStreamEncoder(requestId: context.requestId, model: model, created: created,
                                                  includeUsage: translated.includeUsage)
                return StreamRunner.respond(response, relay: TranslatingRelay(encoder: encoder), ticket: ticket, billing: billing)
            }
            let answer = try await call.collectOllamaAnswer(response, ticket: ticket)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(
                string: OpenAIResponseTranslator.completion(answer, model: model, requestId: context.requestId, created: created))))
        }
    }

    func embeddings(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let metered = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes,
                                                    missingModel: "you must provide a model parameter")
        let (body, object, model) = (metered.body, metered.object, metered.model)
        guard let input = object["input"], input is String || input is [String] else {
            throw GatewayError.invalidRequest("input must be a string or an array of strings")
        }
        let provider = await router.provider(for: model)
        let ticket = try await billing.hold(
            requestId: context.requestId, principal: metered.principal, endpoint: "/v1/embeddings", dialect: .openai,
            provider: provider.rawValue, model: model, promptEstimate: metered.promptEstimate,
            maxOutputTokens: 0, startedAt: context.startedAt)
        if provider == .openai {
            let response = try await call.send(configuration.openAIBaseURL + "/embeddings",
                                               headers: [("authorization", "Bearer \(configuration.openAIAPIKey ?? "")")],
                                               body: body, ticket: ticket, bodyDialect: .openai)
            let (bytes, answer) = try await call.collectJSON(response, ticket: ticket)
            await billing.settleAnswered(ticket, usage: (answer["usage"] as? [String: Any]).map(ReportedUsage.openAI))
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: bytes))
        }
        var ollamaBody: [String: Any] = ["model": model, "input": input]
        if let dimensions = object["dimensions"] { ollamaBody["dimensions"] = dimensions }
        let response = try await call.send(configuration.ollamaBaseURL + "/api/embed", body: jsonBody(ollamaBody),
                                           ticket: ticket, bodyDialect: .ollama)
        let (_, answer) = try await call.collectJSON(response, ticket: ticket)
        await billing.settleAnswered(ticket, usage: ReportedUsage(promptTokens: JSONValue.int64(answer["prompt_eval_count"]) ?? 0))
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: OpenAIResponseTranslator.embeddings(answer, model: model))))
    }
}
