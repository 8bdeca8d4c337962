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
    let ollama: OllamaPool

    func run(_ plan: CallPlan, principal: Principal, context: GatewayContext) async throws -> Response {
        let settlement = Settlement(billing: billing,
                                    ticket: try await billing.hold(plan, principal: principal, requestId: context.requestId,
                                                                   startedAt: context.startedAt))
        let response = try await send(plan, body: ByteBuffer(bytes: plan.body(settlement.ticket.outputBound).bytes),
                                      settlement: settlement)
        guard response.status.code == 200 else { throw await refuse(response, plan: plan, settlement: settlement) }
        let ticket = settlement.ticket
        let setup = RelaySetup(requestId: ticket.requestId, model: plan.model,
                               outputLimit: ticket.outputBound ?? .max, promptEstimate: ticket.promptEstimate)
        switch plan.answer {
        case .stream(let makeRelay):
            return streamed(response, relay: makeRelay(setup), settlement: settlement)
        case .passThrough(let reader, let estimatesOutput):
            return try await passedThrough(response, reader: reader, estimatesOutput: estimatesOutput, settlement: settlement)
        case .whole(let reader, let translate):
            return try await translated(response, reader: reader, translate: translate, setup: setup, settlement: settlement)
        }
    }

    /// Sends the call upstream and returns the answer's head. Ollama calls go to the server the
    /// pool chooses for the model. A server that cannot be reached, drops the call before
    /// answering, or answers 502/503/504 (no byte has reached the client yet) is left for
    /// another healthy server that lists the model, once; without one the call ends with the
    /// first failure. One hold, one settle: a call that ends here is settled here.
    private func send(_ plan: CallPlan, body: ByteBuffer, settlement: Settlement) async throws -> UpstreamResponse {
        var retried = false, next: OllamaPool.Lease?
        while true {
            var url = plan.url, lease: OllamaPool.Lease?
            if plan.provider == .ollama {
                let chosen: OllamaPool.Lease?
                if let next { chosen = next } else { chosen = await ollama.acquire(model: plan.model) }
                guard let chosen else {
                    await settlement.settle(.upstreamFailed(status: 502, usage: nil, delivered: .nothing))
                    throw GatewayError.upstreamUnreachable("no Ollama server is available")
                }
                lease = chosen
                settlement.attach(chosen)
                url = chosen.url + plan.url
            }
            let mayRetry = !retried && !ollama.isSingle
            let started = ContinuousClock.now
            let response: UpstreamResponse
            do {
                response = try await upstream.send(method: .POST, url: url, headers: plan.headers, body: body)
            } catch {
                if let lease { billing.metrics.ollamaCall(lease.name, status: nil, since: started) }
                if mayRetry, let lease, error.failedBeforeAnswering {
                    ollama.markFailed(lease.index, error: error.message)
                    if let other = ollama.alternative(to: lease.index, model: plan.model) {
                        lease.end()
                        (retried, next) = (true, other)
                        continue
                    }
                }
                await settlement.settle(.upstreamFailed(status: Int(error.status.code), usage: nil, delivered: .nothing))
                throw error
            }
            if let lease { billing.metrics.ollamaCall(lease.name, status: Int(response.status.code), since: started) }
            // A 500 is about the request (a bad option, a model that fails to load): not retried.
            if mayRetry, let lease, (502...504).contains(response.status.code),
               let other = ollama.alternative(to: lease.index, model: plan.model) {
                _ = try? await upstream.collect(response, limit: 1 << 20)
                lease.end()
                (retried, next) = (true, other)
                continue
            }
            return response
        }
    }

    /// An upstream's refusal (any status but 200): settled as failed, told to the client in
    /// the dialect's words.
    private func refuse(_ response: UpstreamResponse, plan: CallPlan, settlement: Settlement) async -> any Error {
        let status = Int(response.status.code)
        let errorBody = try? await upstream.collect(response, limit: 1 << 20)
        await settlement.settle(.upstreamFailed(status: status, usage: nil, delivered: .nothing))
        return Self.upstreamError(status: status, body: errorBody, provider: plan.provider)
    }

    /// Streams the upstream's answer through `relay`, then settles by how it ended: completed,
    /// stopped at the held bound, abandoned by the client (which cancels the upstream request),
    /// or failed upstream (told to the client as the dialect's in-stream error).
    ///
    /// The end of the response (the terminal event and what follows it) is held back until the
    /// settle is durable, so a client never sees its answer complete without the charge on disk.
    func streamed(_ response: UpstreamResponse, relay: any StreamRelay, settlement: Settlement) -> Response {
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
            // What the client had before the write that failed: the chunk it carried was counted
            // by the relay but never delivered, so it is not charged.
            var deliveredBeforeFailedWrite: Delivered?
            var tail: [UInt8] = [] // everything from the terminal event on
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
                        let before = relay.delivered
                        let out = relay.relay(chunk)
                        if relay.complete {
                            tail += out
                        } else if !(await send(out)) {
                            clientGone = true
                            deliveredBeforeFailedWrite = before
                            return false // stops reading, which cancels the upstream request
                        }
                        return !relay.reachedLimit
                    }
                    if relay.reachedLimit {
                        tail += relay.cutOff()
                    } else {
                        tail += relay.finish()
                    }
                } catch {
                    if Task.isCancelled || error is CancellationError { clientGone = true } else { failure = UpstreamClient.classify(error) }
                }
            }
            let ending: CallEnding
            if let delivered = deliveredBeforeFailedWrite {
                ending = .clientGone(usage: relay.usage, delivered: delivered)
            } else if relay.reachedLimit {
                ending = .stoppedAtLimit(usage: relay.usage, delivered: relay.delivered)
            } else if clientGone {
                ending = .clientGone(usage: relay.usage, delivered: relay.delivered)
            } else if failure == nil, relay.errorMessage == nil, relay.complete {
                ending = .completed(usage: relay.usage, delivered: relay.delivered)
            } else {
                if relay.errorMessage == nil {
                    // The upstream failed or stopped early: say so in the dialect's own in-stream error.
                    tail += relay.errorEvent(failure?.message ?? "the upstream ended the stream before it was done")
                }
                ending = .upstreamFailed(status: 200, usage: relay.usage, delivered: relay.delivered)
            }
            await settlement.settle(ending, firstByte: firstByte)
            if !clientGone, await send(tail) { try? await writer.finish(nil) }
        })
    }

    /// Passes a whole answer to the client, reading its counts on the way: any size, in constant
    /// memory. An answer from the lean client that ends within `wholeAnswerLimit` is read first,
    /// settled, and sent as one write (head, body and end in one flush, a third of the socket
    /// writes of a streamed body); a failure before then is an error status, not a cut body.
    /// A longer answer is passed on as it arrives, its last chunk waiting for the settle, like a
    /// stream's end; one that fails midway reaches the client cut short (its 200 is sent) and
    /// is charged only as far as the client received it.
    func passedThrough(_ response: UpstreamResponse, reader: UsageReader, estimatesOutput: Bool,
                       settlement: Settlement) async throws -> Response {
        let startedAt = settlement.ticket.startedAt
        var scanner = JSONTopLevelScanner(keys: reader.keys)
        var prefix: ByteBuffer?
        if case .http1(let body) = response.body {
            var whole = ByteBuffer()
            do {
                while whole.readableBytes <= Self.wholeAnswerLimit,
                      var chunk = try await body.next(idleTimeout: TimeAmount(upstream.readTimeout)) {
                    scanner.feed(chunk.readableBytesView)
                    whole.writeBuffer(&chunk)
                }
            } catch {
                if Task.isCancelled || error is CancellationError {
                    await settlement.settle(.clientGone(usage: nil, delivered: .nothing))
                    throw CancellationError()
                }
                let failure = UpstreamClient.classify(error)
                await settlement.settle(.upstreamFailed(status: Int(failure.status.code), usage: nil, delivered: .nothing))
                throw failure
            }
            // Settled as completed before the client has it: a client that leaves meanwhile pays
            // for the answer Ollama finished (the old path charged the same for a one-read answer).
            if whole.readableBytes <= Self.wholeAnswerLimit {
                let delivered = Delivered(units: 0, textBytes: estimatesOutput ? Int64(whole.readableBytes) : 0)
                await settlement.settle(.completed(usage: reader.read(scanner), delivered: delivered),
                                        firstByte: startedAt.microsecondsElapsed)
                return Response(status: .ok, headers: [.contentType: response.contentType], body: .init(byteBuffer: whole))
            }
            prefix = whole
        }
        let upstreamBody = response.body, idleTimeout = upstream.readTimeout
        return Response(status: .ok, headers: [.contentType: response.contentType], body: ResponseBody { [scanner, prefix] writer in
            var scanner = scanner
            var held = prefix
            var sent = 0, firstByte: Int64?
            var clientGone = false, failed = false
            do {
                try await UpstreamBody.forEach(upstreamBody, idleTimeout: idleTimeout) { chunk in
                    scanner.feed(chunk.readableBytesView)
                    if let previous = held {
                        do {
                            try await writer.write(previous)
                        } catch {
                            clientGone = true
                            return false
                        }
                        sent += previous.readableBytes
                        if firstByte == nil { firstByte = startedAt.microsecondsElapsed }
                    }
                    held = chunk
                    return true
                }
            } catch {
                if Task.isCancelled || error is CancellationError { clientGone = true } else { failed = true }
            }
            let usage = reader.read(scanner)
            let total = sent + (held?.readableBytes ?? 0)
            let delivered = Delivered(units: 0, textBytes: estimatesOutput ? Int64(sent) : 0)
            // A whole answer cut short is of no use to its client: it is charged only as far as
            // the client received it.
            let ending: CallEnding = clientGone ? .clientGone(usage: nil, delivered: delivered)
                : failed ? .upstreamFailed(status: 200, usage: nil, delivered: .nothing)
                : .completed(usage: usage, delivered: Delivered(units: 0, textBytes: estimatesOutput ? Int64(total) : 0))
            await settlement.settle(ending, firstByte: firstByte ?? startedAt.microsecondsElapsed)
            guard !clientGone, !failed else { return }
            if let held { try? await writer.write(held) }
            try? await writer.finish(nil)
        })
    }

    /// The largest whole answer read before answering (one write); longer ones are passed on as
    /// they arrive, so memory per call stays bounded.
    static let wholeAnswerLimit = 64 << 10

    /// Reads a whole answer and translates it. An answer too large to translate is still read
    /// to the end for its counts and charged (the upstream did the work the client asked for),
    /// and the client is told to ask for it streamed.
    func translated(_ response: UpstreamResponse, reader: UsageReader,
                    translate: @Sendable (JSONValue, RelaySetup) throws(GatewayError) -> WholeAnswer,
                    setup: RelaySetup, settlement: Settlement) async throws -> Response {
        var scanner = JSONTopLevelScanner(keys: reader.keys)
        var body = ByteBuffer(), tooLarge = false
        do {
            try await UpstreamBody.forEach(response.body, idleTimeout: upstream.readTimeout) { chunk in
                scanner.feed(chunk.readableBytesView)
                if !tooLarge {
                    var chunk = chunk
                    body.writeBuffer(&chunk)
                    if body.readableBytes > Self.translationLimit {
                        tooLarge = true
                        body = ByteBuffer()
                    }
                }
                return true
            }
        } catch {
            let failure = UpstreamClient.classify(error)
            await settlement.settle(.upstreamFailed(status: Int(failure.status.code), usage: nil, delivered: .nothing))
            throw failure
        }
        let usage = reader.read(scanner)
        if tooLarge {
            await settlement.settle(.completed(usage: usage, delivered: .nothing), firstByte: settlement.ticket.startedAt.microsecondsElapsed)
            throw GatewayError.upstreamInvalid("the answer is larger than \(Self.translationLimit >> 20) MiB and cannot be translated: ask for it streamed")
        }
        let answer: WholeAnswer
        do throws(GatewayError) {
            guard let document = try? JSONDocument.parse(Array(buffer: body)) else {
                throw GatewayError.upstreamInvalid("the upstream's answer is not JSON")
            }
            answer = try translate(document.root, setup)
        } catch {
            await settlement.settle(.upstreamFailed(status: Int(error.status.code), usage: nil, delivered: .nothing))
            throw error
        }
        await settlement.settle(.completed(usage: usage, delivered: .nothing), firstByte: settlement.ticket.startedAt.microsecondsElapsed)
        return Response(status: .ok, headers: [.contentType: answer.contentType], body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
    }

    /// The largest whole answer the gateway reads to translate it.
    static let translationLimit = 64 << 20

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
    /// The Ollama server the call is on: counted as in flight until the call is settled.
    private let lease = NIOLockedValueBox<OllamaPool.Lease?>(nil)

    func attach(_ lease: OllamaPool.Lease) {
        self.lease.withLockedValue { $0 = lease }
    }

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
        let lease = self.lease.withLockedValue { $0 }
        lease?.end()
        await billing.settle(ticket, ending, timeToFirstByteMicros: firstByte, server: lease?.name)
    }

    deinit {
        guard claim() else { return }
        let billing = self.billing, ticket = self.ticket, server = lease.withLockedValue { $0 }?.name
        billing.logger.warning("a metered call ended without settling; settling it as abandoned",
                               metadata: ["request_id": "\(ticket.requestId)"])
        billing.detached.start {
            await billing.settle(ticket, .clientGone(usage: nil, delivered: .nothing), timeToFirstByteMicros: nil, server: server)
        }
    }
}

extension GatewayError {
    /// The upstream could not be reached, or dropped the connection before its answer's head:
    /// nothing reached the client, so another server may take the call.
    var failedBeforeAnswering: Bool {
        switch self {
        case .upstreamUnreachable, .upstreamInvalid: true
        default: false
        }
    }
}
