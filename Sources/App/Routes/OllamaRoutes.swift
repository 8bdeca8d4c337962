import AsyncHTTPClient
import Core
import Foundation
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
    let ollama: OllamaPool

    func register(on router: Router<GatewayContext>) {
        for endpoint in OllamaRequest.Endpoint.allCases {
            router.post(RouterPath(stringLiteral: endpoint.rawValue)) { request, context in
                let read = try await MeteredRequest.read(request, context, limit: configuration.maxBodyBytes)
                return try await metered.run(try plan(endpoint, read), principal: read.principal, context: context)
            }
        }
        router.get("/api/tags") { _, context in try await listing("/api/tags", for: context.principal) }
        router.get("/api/ps") { _, context in try await listing("/api/ps", for: context.principal) }
        router.get("/api/version") { _, _ in
            try await passThrough(.GET, "/api/version", on: ollama.acquire(model: "")?.url)
        }
        router.post("/api/show") { request, context in
            let body = try await readRequestBody(request, limit: configuration.maxBodyBytes)
            let model = try Self.checkShowScope(body, principal: context.principal)
            // A server that has the model (the lease only picks it: `show` is not counted as load).
            return try await passThrough(.POST, "/api/show", body: body,
                                         on: ollama.acquire(model: (try? ModelName.ollama(model ?? "")) ?? "")?.url)
        }
        router.get("/api/models") { _, context in try await modelsWithPricing(for: context.principal) }
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
                        producesOutput: endpoint.generatesText, url: endpoint.rawValue,
                        body: { body.json(outputBound: $0, policy: policy) }, answer: answer)
    }

    // MARK: Pass-through and listings

    /// Forwards an unmetered read-only call (tags, ps, version, show) and relays its answer as
    /// it arrives, never holding it whole (a verbose `/api/show` is tens of megabytes).
    func passThrough(_ method: NIOHTTP1.HTTPMethod, _ path: String, body: ByteBuffer? = nil, on server: String? = nil)
        async throws -> Response
    {
        let response = try await upstream.send(method: method, url: (server ?? configuration.ollamaBaseURL) + path, body: body)
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

    /// `/api/tags` or `/api/ps`: passed through as it is, or, for a key scoped to some models,
    /// read whole (a listing is small) and cut to those.
    func listing(_ path: String, for principal: Principal?) async throws -> Response {
        let servers = configuration.ollamaServers
        if servers.count == 1 && principal?.scope.models == nil { return try await passThrough(.GET, path) }
        // Several servers: the union of their lists, each model once (a server that cannot be
        // read is left out; if none can, the first one's failure is the answer).
        let catalog = ModelCatalog(upstream: upstream, store: store, configuration: configuration)
        let (served, failures) = await catalog.servedAcrossServers(path: path)
        if failures.count == servers.count, let first = failures.first { throw first.error }
        // Ollama's own shape: without the `servers` the catalog adds.
        let models = served.map { $0.filter { $0.key != "servers" } }
        let body = JSONText.encode(["models": models])
        return Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: ScopedListing.filterOllamaListing(body, for: principal)))
    }

    /// `/api/show` of a model outside the key's scope is refused (403) before Ollama is asked.
    /// The body is read as Ollama reads it (keys ignoring case, the last one winning) and
    /// refused when two keys collide ignoring case, so what is checked is what Ollama shows.
    /// Returns the model the body names (as Ollama reads it), when it can be read.
    @discardableResult
    static func checkShowScope(_ body: ByteBuffer, principal: Principal?) throws -> String? {
        guard principal?.scope.models != nil else {
            // Only to choose a server: a body Ollama cannot read is Ollama's to refuse.
            let root = try? JSONDocument.parse(Array(buffer: body)).root
            return root?.field("model")?.string ?? root?.field("name")?.string
        }
        let parsed = Result { () throws(JSONError) in try JSONDocument.parse(Array(buffer: body), limits: .request) }
        guard case .success(let document) = parsed else {
            if case .failure(let error) = parsed { throw GatewayError.invalidRequest(MeteredRequest.message(error)) }
            return nil
        }
        let root = document.root
        // Ollama shows `model`, or the older `name` when `model` is empty: both must be allowed.
        for name in [root.field("model")?.string, root.field("name")?.string].compactMap({ $0 }) where !name.isEmpty {
            guard ScopedListing.allows(principal, ollamaName: name) else { throw GatewayError.forbiddenModel(name) }
        }
        return root.field("model")?.string ?? root.field("name")?.string
    }

    /// `GET /api/models`: what Ollama serves, each with the price it is charged at and the
    /// metadata `sync-models` stored. Which servers have a model is the operator's business
    /// (`list-models`), not the customer's.
    func modelsWithPricing(for principal: Principal?) async throws -> Response {
        let catalog = ModelCatalog(upstream: upstream, store: store, configuration: configuration)
        let models = try await catalog.entries().filter { ScopedListing.allows(principal, ollamaName: $0.name) }
        let objects = models.map { entry in entry.json.filter { $0.key != "servers" } }
        return Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: JSONText.encode(["models": objects])))
    }
}
