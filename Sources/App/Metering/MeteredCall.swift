import AsyncHTTPClient
import Core
import Hummingbird
import JSONKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers

/// The one owner of a metered call, for every dialect and provider: hold → send → relay or
/// collect → settle, exactly once. Routes describe the call (`CallPlan`); everything billing
/// decides happens here and in `Billing`/`BillingPolicy`.
struct MeteredCall: Sendable {
    let billing: Billing
    let upstream: UpstreamClient

    func run(_ plan: CallPlan, principal: Principal, context: GatewayContext) async throws -> Response {
        let ticket = try await billing.hold(plan, principal: principal, requestId: context.requestId,
                                            startedAt: context.startedAt)
        let settlement = Settlement(billing: billing, ticket: ticket)
        let setup = RelaySetup(requestId: ticket.requestId, model: plan.model,
                               outputLimit: ticket.outputBound ?? .max, promptEstimate: ticket.promptEstimate)
        let response: HTTPClientResponse
        do {
            response = try await upstream.send(method: .POST, url: plan.url, headers: plan.headers,
                                               body: ByteBuffer(bytes: plan.body(ticket.outputBound).bytes))
        } catch {
            await settlement.settle(.upstreamFailed(status: Int(error.status.code), usage: nil, delivered: 0))
            throw error
        }
        guard response.status.code == 200 else {
            let status = Int(response.status.code)
            let errorBody = try? await upstream.collect(response, limit: 1 << 20)
            await settlement.settle(.upstreamFailed(status: status, usage: nil, delivered: 0))
            throw Self.upstreamError(status: status, body: errorBody, provider: plan.provider)
        }
        switch plan.answer {
        case .stream(let makeRelay):
            return streamed(response, relay: makeRelay(setup), settlement: settlement)
        case .whole(let translate):
            let answer: WholeAnswer
            do {
                let bytes = try await upstream.collect(response)
                guard let document = try? JSONDocument.parse(Array(buffer: bytes)) else {
                    throw GatewayError.upstreamInvalid("the upstream's answer is not JSON")
                }
                answer = try translate(document.root, setup)
            } catch {
                let failure = UpstreamClient.classify(error)
                await settlement.settle(.upstreamFailed(status: Int(failure.status.code), usage: nil, delivered: 0))
                throw failure
            }
            await settlement.settle(.completed(usage: answer.usage, delivered: answer.delivered),
                                    firstByte: ticket.startedAt.microsecondsElapsed)
            return Response(status: .ok, headers: [.contentType: answer.contentType], body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
    }

    /// Streams the upstream's answer through `relay`, then settles by how it ended: completed,
    /// stopped at the held bound, abandoned by the client (which cancels the upstream request),
    /// or failed upstream (told to the client as the dialect's in-stream error).
    func streamed(_ response: HTTPClientResponse, relay: any StreamRelay, settlement: Settlement) -> Response {
        let upstreamBody = response.body, idleTimeout = upstream.readTimeout, metrics = billing.metrics
        let startedAt = settlement.ticket.startedAt
        var headers: HTTPFields = [.contentType: relay.contentType]
        if relay.contentType == "text/event-stream" { headers[.cacheControl] = "no-cache" }
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            metrics.streamOpened()
            defer { metrics.streamClosed() }
            var relay = relay
            var firstByte: Int64?
            var clientGone = false, failure: GatewayError?
            func send(_ bytes: [UInt8]) async -> Bool {
                guard !bytes.isEmpty else { return true }
                do {
                    try await writer.write(ByteBuffer(bytes: bytes))
                } catch {
                    return false
                }
                if firstByte == nil { firstByte = startedAt.microsecondsElapsed }
                return true
            }
            clientGone = !(await send(relay.start()))
            if !clientGone {
                do {
                    try await UpstreamBody.forEach(upstreamBody, idleTimeout: idleTimeout) { chunk in
                        guard await send(relay.relay(chunk)) else {
                            clientGone = true
                            return false // stops reading, which cancels the upstream request
                        }
                        return !relay.reachedLimit
                    }
                    if relay.reachedLimit {
                        _ = await send(relay.cutOff())
                    } else if !clientGone {
                        clientGone = !(await send(relay.finish()))
                    }
                } catch {
                    if Task.isCancelled || error is CancellationError { clientGone = true } else { failure = UpstreamClient.classify(error) }
                }
            }
            let ending: CallEnding
            if relay.reachedLimit {
                ending = .stoppedAtLimit(usage: relay.usage, delivered: relay.delivered)
            } else if clientGone {
                ending = .clientGone(usage: relay.usage, delivered: relay.delivered)
            } else if failure == nil, relay.errorMessage == nil, relay.complete {
                ending = .completed(usage: relay.usage, delivered: relay.delivered)
            } else {
                if relay.errorMessage == nil {
                    // The upstream failed or stopped early: say so in the dialect's own in-stream error.
                    _ = await send(relay.errorEvent(failure?.message ?? "the upstream ended the stream before it was done"))
                }
                ending = .upstreamFailed(status: 200, usage: relay.usage, delivered: relay.delivered)
            }
            // Settled before the response completes: a client that saw the end was billed.
            await settlement.settle(ending, firstByte: firstByte)
            try? await writer.finish(nil)
        })
    }

    /// An upstream's error status, passed on: its own body goes to clients of its dialect; an
    /// operator key the provider refused is the gateway's problem, never shown as the client's.
    static func upstreamError(status: Int, body: ByteBuffer?, provider: Provider) -> GatewayError {
        let dialect: Dialect = switch provider {
        case .ollama: .ollama
        case .openai: .openai
        case .anthropic: .anthropic
        }
        if provider != .ollama && (status == 401 || status == 403) {
            return .upstreamInvalid("the \(provider.rawValue) upstream refused the gateway's credentials (\(status))")
        }
        return .upstreamStatus(status: status, message: errorMessage(body) ?? "upstream error \(status)", body: body,
                               bodyDialect: dialect)
    }

    /// The message of an error body in any of the three shapes.
    static func errorMessage(_ body: ByteBuffer?) -> String? {
        guard let body, let root = try? JSONDocument.parse(Array(buffer: body)).root else { return nil }
        return root["error"]?.string ?? root["error"]?["message"]?.string
    }
}

/// Settles one ticket exactly once, whichever path gets there first. If the call is dropped
/// without settling (its response was never started), the last reference settles it as a
/// request the client abandoned before anything was delivered.
final class Settlement: Sendable {
    let billing: Billing
    let ticket: Billing.Ticket
    private let done = NIOLockedValueBox(false)

    init(billing: Billing, ticket: Billing.Ticket) {
        self.billing = billing
        self.ticket = ticket
    }

    /// Claims the settlement; false when another path already did.
    private func claim() -> Bool {
        done.withLockedValue { done in
            defer { done = true }
            return !done
        }
    }

    func settle(_ ending: CallEnding, firstByte: Int64? = nil) async {
        guard claim() else { return }
        await billing.settle(ticket, ending, timeToFirstByteMicros: firstByte)
    }

    deinit {
        guard claim() else { return }
        let billing = self.billing, ticket = self.ticket
        billing.logger.warning("a metered call ended without settling; settling it as abandoned",
                               metadata: ["request_id": "\(ticket.requestId)"])
        Task { await billing.settle(ticket, .clientGone(usage: nil, delivered: 0), timeToFirstByteMicros: nil) }
    }
}
