import AsyncHTTPClient
import Core
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Providers

/// Ollama's native API, metered: auth has run; these handlers price, hold, forward and settle.
struct OllamaRoutes: Sendable {
    let upstream: UpstreamClient
    let billing: Billing
    let store: any Store
    let configuration: Configuration
    let logger: Logger

    /// The metered endpoints and what each needs.
    enum Call: String, Sendable {
        case chat = "/api/chat"
        case generate = "/api/generate"
        case embed = "/api/embed"
        case embeddings = "/api/embeddings"

        /// Chat and generate stream and produce output tokens; the embedding calls do neither.
        var canStream: Bool { self == .chat || self == .generate }
    }

    func register(on router: Router<GatewayContext>) {
        for call in [Call.chat, .generate, .embed, .embeddings] {
            router.post(RouterPath(stringLiteral: call.rawValue)) { request, context in
                try await metered(call, request: request, context: context)
            }
        }
        router.get("/api/tags") { _, _ in try await passThrough(.GET, "/api/tags") }
        router.get("/api/ps") { _, _ in try await passThrough(.GET, "/api/ps") }
        router.get("/api/version") { _, _ in try await passThrough(.GET, "/api/version") }
        router.post("/api/show") { request, _ in
            try await passThrough(.POST, "/api/show", body: try await readRequestBody(request, limit: configuration.maxBodyBytes))
        }
        router.get("/api/models") { _, _ in try await modelsWithPricing() }
        router.on("/", method: .get) { _, _ in Self.running() }
        router.on("/", method: .head) { _, _ in Self.running() }
    }

    /// Ollama clients probe `/` for this exact text.
    static func running() -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: "Ollama is running")))
    }

    // MARK: Metered calls

    func metered(_ call: Call, request: Request, context: GatewayContext) async throws -> Response {
        let metered = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes,
                                                    modelKeys: ["model", "name"], missingModel: "model is required")
        let (body, object, model) = (metered.body, metered.object, metered.model)
        let streaming = call.canStream && (object["stream"] as? Bool ?? true)
        let options = object["options"] as? [String: Any]
        let maxOutput = call.canStream ? JSONValue.int64(options?["num_predict"]) : 0
        let ticket = try await billing.hold(
            requestId: context.requestId, principal: metered.principal, endpoint: call.rawValue, dialect: .ollama,
            provider: "ollama", model: model, promptEstimate: metered.promptEstimate,
            maxOutputTokens: maxOutput, startedAt: context.startedAt)

        let response = try await UpstreamCall(upstream: upstream, billing: billing)
            .send(configuration.ollamaBaseURL + call.rawValue, body: body, ticket: ticket, bodyDialect: .ollama)
        if streaming {
            return StreamRunner.respond(response, relay: OllamaNativeRelay(contentType: response.contentType),
                                        ticket: ticket, billing: billing)
        }
        return try await collected(call, response, ticket: ticket)
    }

    /// A non-streaming answer: read it whole, meter it, return the bytes unchanged.
    func collected(_ call: Call, _ response: HTTPClientResponse, ticket: Billing.Ticket) async throws -> Response {
        let (body, object) = try await UpstreamCall(upstream: upstream, billing: billing).collectJSON(response, ticket: ticket)
        let ttfb = ticket.startedAt.microsecondsElapsed
        if call == .embeddings {
            // The legacy endpoint reports no token count: bill the estimate, and say so.
            await billing.settle(ticket, status: 200, outcome: .ok, promptTokens: ticket.promptEstimate,
                                 tokenSource: .estimated, charge: true, timeToFirstByteMicros: ttfb)
        } else {
            let final = OllamaFinal(object)
            await billing.settleAnswered(ticket, usage: ReportedUsage(promptTokens: final.promptEvalCount,
                                                                      completionTokens: final.evalCount))
        }
        return Response(status: .ok, headers: [.contentType: response.contentType], body: .init(byteBuffer: body))
    }

    // MARK: Pass-through and listings

    /// Forwards an unmetered read-only call (tags, ps, version, show) and returns its answer as is.
    func passThrough(_ method: NIOHTTP1.HTTPMethod, _ path: String, body: ByteBuffer? = nil) async throws -> Response {
        let response = try await upstream.send(method: method,
                                               url: configuration.ollamaBaseURL + path, body: body)
        let bytes = try await UpstreamClient.collect(response)
        if response.status.code != 200 {
            throw GatewayError.upstreamStatus(status: Int(response.status.code),
                                              message: UpstreamCall.errorMessage(bytes) ?? "upstream error", body: bytes)
        }
        return Response(status: .ok, headers: [.contentType: response.contentType], body: .init(byteBuffer: bytes))
    }

    /// `GET /api/models`: what Ollama serves, each with the price it is charged at and the
    /// metadata `sync-models` stored.
    func modelsWithPricing() async throws -> Response {
        let catalog = ModelCatalog(upstream: upstream, store: store, configuration: configuration)
        let models = try await catalog.entries()
        return Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: JSONText.encode(["models": models.map(\.json)])))
    }
}
