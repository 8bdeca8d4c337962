import AsyncHTTPClient
import Core
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

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

        var canStream: Bool { self == .chat || self == .generate }
        var producesOutput: Bool { canStream }
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
            try await passThrough(.POST, "/api/show", body: try await readBody(request))
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
        guard let principal = context.principal else { throw GatewayError.missingKey }
        let body = try await readBody(request)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
            throw GatewayError.invalidRequest(body.readableBytes == 0 ? "missing request body" : "invalid JSON in request body")
        }
        guard let model = (object["model"] as? String) ?? (object["name"] as? String), !model.isEmpty else {
            throw GatewayError.invalidRequest("model is required")
        }
        let streaming = call.canStream && (object["stream"] as? Bool ?? true)
        let options = object["options"] as? [String: Any]
        let maxOutput = call.producesOutput ? (options?["num_predict"] as? NSNumber)?.int64Value : 0
        let promptEstimate = estimatedTokens(bytes: body.readableBytes)
        let ticket = try await billing.hold(
            requestId: context.requestId, principal: principal, endpoint: call.rawValue, dialect: .ollama,
            provider: "ollama", model: model, promptEstimate: promptEstimate,
            maxOutputTokens: call.producesOutput ? maxOutput : 0, startedAt: context.startedAt)

        let response: HTTPClientResponse
        do {
            response = try await upstream.send(method: .POST, url: configuration.ollamaBaseURL + call.rawValue, body: body)
        } catch {
            await billing.settle(ticket, status: Int(error.status.code), outcome: .upstreamError, charge: false)
            throw error
        }
        guard response.status.code == 200 else {
            // Ollama's own error (404 unknown model, 400, 500...) passes through, uncharged.
            let errorBody = try? await UpstreamClient.collect(response, limit: 1 << 20)
            await billing.settle(ticket, status: Int(response.status.code), outcome: .upstreamError, charge: false)
            throw GatewayError.upstreamStatus(status: Int(response.status.code),
                                              message: Self.errorMessage(errorBody) ?? "upstream error \(response.status.code)",
                                              body: errorBody)
        }
        if streaming {
            return streamed(response, ticket: ticket)
        }
        return try await collected(call, response, ticket: ticket)
    }

    /// A non-streaming answer: read it whole, meter it, return the bytes unchanged.
    func collected(_ call: Call, _ response: HTTPClientResponse, ticket: Billing.Ticket) async throws -> Response {
        let body: ByteBuffer
        do {
            body = try await UpstreamClient.collect(response)
        } catch {
            await billing.settle(ticket, status: Int(error.status.code), outcome: .upstreamError, charge: false)
            throw error
        }
        let ttfb = ticket.startedAt.microsecondsElapsed
        guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
            await billing.settle(ticket, status: 502, outcome: .upstreamError, charge: false)
            throw GatewayError.upstreamInvalid("the upstream's answer is not JSON")
        }
        if call == .embeddings {
            // The legacy endpoint reports no token count: bill the estimate, and say so.
            await billing.settle(ticket, status: 200, outcome: .ok, promptTokens: ticket.promptEstimate,
                                 tokenSource: .estimated, charge: true, timeToFirstByteMicros: ttfb)
        } else {
            let final = OllamaFinal(object)
            await billing.settle(ticket, status: 200, outcome: .ok, promptTokens: final.promptEvalCount,
                                 completionTokens: final.evalCount, tokenSource: .provider, charge: true,
                                 timeToFirstByteMicros: ttfb)
        }
        return Response(status: .ok, headers: [.contentType: response.contentType], body: .init(byteBuffer: body))
    }

    /// A streaming answer: every upstream chunk is written to the client as it arrives while a
    /// meter watches for the final counts; the request is settled when the stream ends, fails,
    /// or the client goes away (which cancels the upstream request).
    func streamed(_ response: HTTPClientResponse, ticket: Billing.Ticket) -> Response {
        let billing = self.billing
        let upstreamBody = response.body
        return Response(
            status: .ok, headers: [.contentType: response.contentType],
            body: ResponseBody { writer in
                var meter = OllamaStreamMeter()
                var firstByte: Int64?
                var clientGone = false
                var failure: GatewayError?
                do {
                    for try await chunk in upstreamBody {
                        meter.consume(chunk)
                        do {
                            try await writer.write(chunk)
                        } catch {
                            clientGone = true
                            break // dropping the upstream body cancels the upstream request
                        }
                        if firstByte == nil { firstByte = ticket.startedAt.microsecondsElapsed }
                    }
                } catch {
                    if Task.isCancelled || error is CancellationError { clientGone = true }
                    else { failure = UpstreamClient.classify(error) }
                }
                meter.finish()
                if clientGone {
                    // Flat fees, plus the estimated prompt and at least one completion token once
                    // anything was delivered.
                    let delivered = meter.chunks > 0 || firstByte != nil
                    await billing.settle(ticket, status: 499, outcome: .clientCancelled,
                                         promptTokens: delivered ? (meter.final?.promptEvalCount ?? ticket.promptEstimate) : 0,
                                         completionTokens: delivered ? max(1, Int64(meter.chunks)) : 0,
                                         tokenSource: meter.final == nil ? .estimated : .provider, charge: true,
                                         timeToFirstByteMicros: firstByte)
                    return
                }
                if let final = meter.final, failure == nil, meter.errorMessage == nil {
                    await billing.settle(ticket, status: 200, outcome: .ok, promptTokens: final.promptEvalCount,
                                         completionTokens: final.evalCount, tokenSource: .provider, charge: true,
                                         timeToFirstByteMicros: firstByte)
                } else {
                    if meter.errorMessage == nil {
                        // The upstream stopped without its final chunk: tell the client the
                        // way Ollama does mid-stream.
                        let message = failure?.message ?? "the upstream ended the stream before it was done"
                        try? await writer.write(ByteBuffer(string: "{\"error\":\(JSONText.quote(message))}\n"))
                    }
                    await billing.settle(ticket, status: 200, outcome: .upstreamError, charge: false,
                                         timeToFirstByteMicros: firstByte)
                }
                try? await writer.finish(nil)
            })
    }

    // MARK: Pass-through and listings

    /// Forwards an unmetered read-only call (tags, ps, version, show) and returns its answer as is.
    func passThrough(_ method: NIOHTTP1.HTTPMethod, _ path: String, body: ByteBuffer? = nil) async throws -> Response {
        let response = try await upstream.send(method: method,
                                               url: configuration.ollamaBaseURL + path, body: body)
        let bytes = try await UpstreamClient.collect(response)
        if response.status.code != 200 {
            throw GatewayError.upstreamStatus(status: Int(response.status.code),
                                              message: Self.errorMessage(bytes) ?? "upstream error", body: bytes)
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

    // MARK: Helpers

    func readBody(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw GatewayError.bodyTooLarge(limit: configuration.maxBodyBytes)
        }
    }

    /// The `error` field of an Ollama error body.
    static func errorMessage(_ body: ByteBuffer?) -> String? {
        guard let body, let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
            return nil
        }
        return object["error"] as? String
    }
}
