import AsyncHTTPClient
import Core
import Hummingbird
import JSONKit
import Logging
import NIOCore
import NIOHTTP1
import Providers

/// Ollama's native API. Auth has run; the metered endpoints describe their call and leave it
/// to `MeteredCall`; the read-only ones pass through.
struct OllamaRoutes: Sendable {
    let upstream: UpstreamClient
    let metered: MeteredCall
    let store: any Store
    let configuration: Configuration

    func register(on router: Router<GatewayContext>) {
        for endpoint in OllamaRequest.Endpoint.allCases {
            router.post(RouterPath(stringLiteral: endpoint.rawValue)) { request, context in
                let read = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes)
                return try await metered.run(try plan(endpoint, read), principal: read.principal, context: context)
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

    /// A native call: the request as Ollama reads it, rebuilt with the priced model, the held
    /// output bound and the operator's option policy; the answer passes through, metered.
    func plan(_ endpoint: OllamaRequest.Endpoint, _ read: MeteredRequest) throws(GatewayError) -> CallPlan {
        let request: OllamaRequest
        do {
            request = try OllamaRequest.read(read.root, endpoint: endpoint, bodyBytes: read.bodyBytes,
                                             policy: configuration.ollamaOptions)
        } catch {
            throw .invalidRequest(error.message)
        }
        let policy = configuration.ollamaOptions, body = request.body
        let answer: CallPlan.Answer
        if request.stream {
            answer = .stream { setup in
                OllamaNativeRelay(contentType: "application/x-ndjson", chat: endpoint == .chat, setup: setup)
            }
        } else {
            // The answer passes through as it is. The legacy embeddings endpoint reports no
            // token count: billed on the estimate.
            let reader: UsageReader = switch endpoint {
            case .chat, .generate: .ollama
            case .embed: .ollamaEmbed
            case .embeddings: .none
            }
            answer = .passThrough(reader, estimatesOutput: endpoint.generatesText)
        }
        return CallPlan(endpoint: endpoint.rawValue, dialect: .ollama, provider: .ollama, model: request.model,
                        prompt: request.prompt, requestedOutput: request.requestedOutput,
                        producesOutput: endpoint.generatesText, url: configuration.ollamaBaseURL + endpoint.rawValue,
                        body: { body.json(outputBound: $0, policy: policy) }, answer: answer)
    }

    // MARK: Pass-through and listings

    /// Forwards an unmetered read-only call (tags, ps, version, show) and relays its answer as
    /// it arrives, never holding it whole (a verbose `/api/show` is tens of megabytes).
    func passThrough(_ method: NIOHTTP1.HTTPMethod, _ path: String, body: ByteBuffer? = nil) async throws -> Response {
        let response = try await upstream.send(method: method, url: configuration.ollamaBaseURL + path, body: body)
        if response.status.code != 200 {
            let bytes = try? await upstream.collect(response, limit: 1 << 20)
            throw MeteredCall.upstreamError(status: Int(response.status.code), body: bytes, provider: .ollama)
        }
        let upstreamBody = response.body, idleTimeout = upstream.readTimeout
        return Response(status: .ok, headers: [.contentType: response.contentType], body: ResponseBody { writer in
            try await UpstreamBody.forEach(upstreamBody, idleTimeout: idleTimeout) { chunk in
                try await writer.write(chunk)
                return true
            }
            try await writer.finish(nil)
        })
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
