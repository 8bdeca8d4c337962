import Core
import Hummingbird
import JSONKit
import Providers

/// The OpenAI-compatible API: `/v1/chat/completions` and `/v1/embeddings`, translated to Ollama
/// for Ollama's models and passed through (with the operator's key) for OpenAI's. Each handler
/// describes its call; `MeteredCall` runs it.
struct OpenAIRoutes: Sendable {
    let metered: MeteredCall
    let router: ModelRouter
    let configuration: Configuration

    func register(on router: Router<GatewayContext>) {
        router.post("/v1/chat/completions") { request, context in
            let read = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes)
            return try await metered.run(try await chat(read, context), principal: read.principal, context: context)
        }
        router.post("/v1/embeddings") { request, context in
            let read = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes)
            return try await metered.run(try await embeddings(read), principal: read.principal, context: context)
        }
    }

    var openAIHeaders: [(String, String)] { [("authorization", "Bearer \(configuration.openAIAPIKey ?? "")")] }

    func chat(_ read: MeteredRequest, _ context: GatewayContext) async throws(GatewayError) -> CallPlan {
        let request = read.root
        let (provider, model) = try await router.resolve(try read.model(missing: "you must provide a model parameter"))
        do {
            switch provider {
            case .anthropic:
                throw GatewayError.invalidRequest("model '\(model)' is served through the Anthropic API: POST /v1/messages")
            case .openai:
                let pass = try OpenAIPassThrough.read(request, model: model, bodyBytes: read.bodyBytes)
                let answer: CallPlan.Answer = pass.fields.stream
                    ? .stream { [choices = pass.fields.choices, asked = pass.fields.includeUsage] setup in
                        OpenAIPassRelay(clientAskedForUsage: asked, choices: choices, setup: setup)
                    }
                    : .passThrough(.openAI, estimatesOutput: true)
                return CallPlan(endpoint: "/v1/chat/completions", dialect: .openai, provider: .openai, model: model,
                                prompt: pass.prompt, requestedOutput: pass.fields.requestedOutput, producesOutput: true,
                                choices: pass.fields.choices, url: configuration.openAIBaseURL + "/chat/completions",
                                headers: openAIHeaders, body: { pass.body(outputBound: $0 ?? 1) }, answer: answer)
            case .ollama:
                let translated = try OpenAIRequestTranslator.translate(request, model: model)
                let created = nowMicros() / 1_000_000, includeUsage = translated.includeUsage
                let answer: CallPlan.Answer = translated.stream
                    ? .stream { setup in
                        TranslatingRelay(encoder: OpenAIStreamEncoder(requestId: setup.requestId, model: model, created: created,
                                                                      includeUsage: includeUsage), setup: setup)
                    }
                    : .whole(.ollama) { object, setup in
                        WholeAnswer(body: OpenAIResponseTranslator.completion(object, model: model, requestId: setup.requestId,
                                                                             created: created),
                                    contentType: "application/json")
                    }
                return ollamaChatPlan(translated.body, model: model, prompt: .openAI(request, bodyBytes: read.bodyBytes),
                                      requestedOutput: translated.requestedOutput, answer: answer)
            }
        } catch let error as TranslationError {
            throw .invalidRequest(error.message)
        } catch {
            throw error as? GatewayError ?? .internalError("\(error)")
        }
    }

    func ollamaChatPlan(_ body: OllamaBody, model: String, prompt: PromptSize, requestedOutput: Int64?,
                        answer: CallPlan.Answer) -> CallPlan {
        let policy = configuration.ollamaOptions
        return CallPlan(endpoint: "/v1/chat/completions", dialect: .openai, provider: .ollama, model: model, prompt: prompt,
                        requestedOutput: requestedOutput, producesOutput: true, url: "/api/chat",
                        body: { body.json(outputBound: $0, policy: policy) }, answer: answer)
    }

    func embeddings(_ read: MeteredRequest) async throws(GatewayError) -> CallPlan {
        let request = read.root
        let (provider, model) = try await router.resolve(try read.model(missing: "you must provide a model parameter"))
        let input: JSONValue
        do {
            input = try OpenAIEmbeddingsRequest.check(request)
        } catch {
            throw .invalidRequest(error.message)
        }
        let prompt = PromptSize(textBytes: Int64(read.bodyBytes))
        if provider == .anthropic { throw .invalidRequest("model '\(model)' has no embeddings") }
        if provider == .openai {
            return CallPlan(endpoint: "/v1/embeddings", dialect: .openai, provider: .openai, model: model, prompt: prompt,
                            producesOutput: false, url: configuration.openAIBaseURL + "/embeddings", headers: openAIHeaders,
                            body: { _ in OpenAIEmbeddingsRequest.passThroughBody(request, model: model) },
                            answer: .passThrough(.openAI, estimatesOutput: false))
        }
        let body = OpenAIEmbeddingsRequest.ollamaBody(request, input: input, model: model), policy = configuration.ollamaOptions
        return CallPlan(endpoint: "/v1/embeddings", dialect: .openai, provider: .ollama, model: model, prompt: prompt,
                        producesOutput: false, url: "/api/embed",
                        body: { body.json(outputBound: $0, policy: policy) },
                        answer: .whole(.ollamaEmbed) { object, _ in
                            WholeAnswer(body: OpenAIResponseTranslator.embeddings(object, model: model), contentType: "application/json")
                        })
    }
}
