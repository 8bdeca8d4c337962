import AsyncHTTPClient
import Hummingbird
import Core
import Foundation
import NIOCore
import NIOHTTP1
import Providers

/// Sends an admitted request upstream. Whatever keeps it from a 200 answer (unreachable,
/// timeout, an error status) settles the ticket uncharged and becomes a `GatewayError`.
struct UpstreamCall: Sendable {
    let upstream: UpstreamClient
    let billing: Billing

    func send(_ url: String, headers: [(String, String)] = [], body: ByteBuffer, ticket: Billing.Ticket,
              bodyDialect: Dialect) async throws -> HTTPClientResponse {
        let response: HTTPClientResponse
        do {
            response = try await upstream.send(method: .POST, url: url, headers: headers, body: body)
        } catch {
            await billing.settle(ticket, status: Int(error.status.code), outcome: .upstreamError, charge: false)
            throw error
        }
        guard response.status.code == 200 else {
            let errorBody = try? await UpstreamClient.collect(response, limit: 1 << 20)
            let status = Int(response.status.code)
            await billing.settle(ticket, status: status, outcome: .upstreamError, charge: false)
            if bodyDialect != .ollama && (status == 401 || status == 403) {
                // The operator's provider key was refused: not the customer's fault, and never
                // shown as an authentication error on their side.
                throw GatewayError.upstreamInvalid("the \(bodyDialect.rawValue) upstream refused the gateway's credentials (\(status))")
            }
            throw GatewayError.upstreamStatus(status: status, message: Self.errorMessage(errorBody) ?? "upstream error \(status)",
                                              body: errorBody, bodyDialect: bodyDialect)
        }
        return response
    }

    /// Reads a whole 200 answer, settling uncharged if it cannot be read or is not JSON.
    func collectJSON(_ response: HTTPClientResponse, ticket: Billing.Ticket) async throws -> (ByteBuffer, [String: Any]) {
        do {
            let body = try await UpstreamClient.collect(response)
            guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
                throw GatewayError.upstreamInvalid("the upstream's answer is not JSON")
            }
            return (body, object)
        } catch let error as GatewayError {
            await billing.settle(ticket, status: Int(error.status.code), outcome: .upstreamError, charge: false)
            throw error
        }
    }

    /// A non-streamed Ollama chat answer for a translated request: read it whole and settle it
    /// with the counts of its final chunk.
    func collectOllamaAnswer(_ response: HTTPClientResponse, ticket: Billing.Ticket) async throws -> [String: Any] {
        let (_, answer) = try await collectJSON(response, ticket: ticket)
        let final = OllamaFinal(answer)
        await billing.settleAnswered(ticket, usage: ReportedUsage(promptTokens: final.promptEvalCount,
                                                                  completionTokens: final.evalCount))
        return answer
    }

    /// The message of an error body in any of the three shapes.
    static func errorMessage(_ body: ByteBuffer?) -> String? {
        guard let body, let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
            return nil
        }
        if let message = object["error"] as? String { return message }
        return (object["error"] as? [String: Any])?["message"] as? String
    }
}

/// Parses a request body as a JSON object, or fails with the dialect's 400.
func parseJSONObject(_ body: ByteBuffer) throws -> [String: Any] {
    guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
        throw GatewayError.invalidRequest(body.readableBytes == 0 ? "missing request body" : "invalid JSON in request body")
    }
    return object
}

/// Serialises a JSON object for an upstream.
func jsonBody(_ object: [String: Any]) -> ByteBuffer {
    ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8))
}

/// Reads a request body up to the configured limit (413 beyond).
func readRequestBody(_ request: Hummingbird.Request, limit: Int) async throws -> ByteBuffer {
    do {
        return try await request.body.collect(upTo: limit)
    } catch is NIOTooManyBytesError {
        throw GatewayError.bodyTooLarge(limit: limit)
    }
}

/// What every metered handler reads first: the caller, the body (within the limit), its JSON
/// object and the model it names. Failures are the caller's dialect's 400/401/413.
struct MeteredRequest {
    let principal: Principal
    let body: ByteBuffer
    var object: [String: Any]
    let model: String

    /// An upper estimate of the prompt, for the hold.
    var promptEstimate: Int64 { estimatedTokens(bytes: body.readableBytes) }

    static func read(_ request: Hummingbird.Request, _ context: GatewayContext, limit: Int, modelKeys: [String] = ["model"],
                     missingModel: String) async throws -> MeteredRequest {
        guard let principal = context.principal else { throw GatewayError.missingKey }
        let body = try await readRequestBody(request, limit: limit)
        let object = try parseJSONObject(body)
        guard let model = modelKeys.lazy.compactMap({ object[$0] as? String }).first, !model.isEmpty else {
            throw GatewayError.invalidRequest(missingModel)
        }
        return MeteredRequest(principal: principal, body: body, object: object, model: model)
    }
}
