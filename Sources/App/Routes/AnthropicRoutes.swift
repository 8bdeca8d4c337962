import Core
import Hummingbird
import JSONKit
import Providers

/// The Anthropic-compatible API: `/v1/messages`, translated to Ollama for Ollama's models and
/// passed through (with the operator's key) for `claude-*` models. The handler describes its
/// call; `MeteredCall` runs it.
struct AnthropicRoutes: Sendable {
    let metered: MeteredCall
    let router: ModelRouter
    let configuration: Configuration

    func register(on router: Router<GatewayContext>) {
        router.post("/v1/messages") { request, context in
            let read = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes)
            let version = request.headers[.anthropicVersion] ?? "2023-06-01", beta = request.headers[.anthropicBeta]
            return try await metered.run(try await messages(read, version: version, beta: beta), principal: read.principal,
                                         context: context)
        }
    }

    func messages(_ read: MeteredRequest, version: String, beta: String?) async throws(GatewayError) -> CallPlan {
        let request = read.root
        let (provider, model) = try await router.resolve(try read.model(missing: "model: Field required"))
        do {
            switch provider {
            case .openai:
                throw GatewayError.invalidRequest("model '\(model)' is served through the OpenAI API: POST /v1/chat/completions")
            case .anthropic:
                try AnthropicPassThrough.checkBetas(beta)
                let pass = try AnthropicPassThrough.read(request, model: model, bodyBytes: read.bodyBytes)
                var headers = [("x-api-key", configuration.anthropicAPIKey ?? ""), ("anthropic-version", version)]
                if let beta { headers.append(("anthropic-beta", beta)) }
                let answer: CallPlan.Answer = pass.stream
                    ? .stream { setup in AnthropicPassRelay(setup: setup) }
                    : .passThrough(.anthropic, estimatesOutput: true)
                return CallPlan(endpoint: "/v1/messages", dialect: .anthropic, provider: .anthropic, model: model,
                                prompt: pass.prompt, requestedOutput: pass.requestedOutput, producesOutput: true,
                                url: configuration.anthropicBaseURL + "/v1/messages", headers: headers,
                                body: { pass.body(outputBound: $0 ?? 1) }, answer: answer)
            case .ollama:
                let translated = try AnthropicRequestTranslator.translate(request, model: model)
                let answer: CallPlan.Answer = translated.stream
                    ? .stream { setup in
                        TranslatingRelay(encoder: AnthropicStreamEncoder(requestId: setup.requestId, model: model,
                                                                         inputEstimate: setup.promptEstimate), setup: setup)
                    }
                    : .whole(.ollama) { object, setup in
                        WholeAnswer(body: AnthropicResponseTranslator.message(object, model: model, requestId: setup.requestId),
                                    contentType: "application/json")
                    }
                let policy = configuration.ollamaOptions, body = translated.body
                return CallPlan(endpoint: "/v1/messages", dialect: .anthropic, provider: .ollama, model: model,
                                prompt: .anthropic(request, bodyBytes: read.bodyBytes), requestedOutput: translated.requestedOutput,
                                producesOutput: true, url: "/api/chat",
                                body: { body.json(outputBound: $0, policy: policy) }, answer: answer)
            }
        } catch let error as TranslationError {
            throw .invalidRequest(error.message)
        } catch {
            throw error as? GatewayError ?? .internalError("\(error)")
        }
    }
}
