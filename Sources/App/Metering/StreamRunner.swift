import AsyncHTTPClient
import Core
import Hummingbird
import NIOCore
import Providers

/// Streams an upstream response to the client through a relay and settles the request when the
/// stream ends, fails, or the client goes away (which cancels the upstream request).
enum StreamRunner {
    static func respond<Relay: StreamRelay>(_ response: HTTPClientResponse, relay: Relay, ticket: Billing.Ticket,
                                            billing: Billing) -> Response {
        let upstreamBody = response.body
        var headers: HTTPFields = [.contentType: relay.contentType]
        if relay.contentType == "text/event-stream" { headers[.cacheControl] = "no-cache" }
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                billing.metrics.streamOpened()
                defer { billing.metrics.streamClosed() }
                var relay = relay
                var firstByte: Int64?
                var clientGone = false
                var failure: GatewayError?
                func send(_ buffer: ByteBuffer) async -> Bool {
                    guard buffer.readableBytes > 0 else { return true }
                    do {
                        try await writer.write(buffer)
                    } catch {
                        return false
                    }
                    if firstByte == nil { firstByte = ticket.startedAt.microsecondsElapsed }
                    return true
                }
                clientGone = !(await send(ByteBuffer(string: relay.start())))
                if !clientGone {
                    do {
                        for try await chunk in upstreamBody {
                            guard await send(relay.relay(chunk)) else {
                                clientGone = true
                                break // dropping the upstream body cancels the upstream request
                            }
                        }
                        if !clientGone { clientGone = !(await send(ByteBuffer(string: relay.finish()))) }
                    } catch {
                        if Task.isCancelled || error is CancellationError { clientGone = true }
                        else { failure = UpstreamClient.classify(error) }
                    }
                }
                let report = relay.report
                if clientGone {
                    // Flat fees, plus the prompt and at least one completion token once anything
                    // was delivered; estimated unless the upstream had already reported counts.
                    let delivered = firstByte != nil && report.contentChunks > 0
                    await billing.settle(
                        ticket, status: 499, outcome: .clientCancelled,
                        promptTokens: delivered ? (report.usage?.promptTokens ?? ticket.promptEstimate) : 0,
                        completionTokens: delivered ? max(1, report.usage?.completionTokens ?? Int64(report.contentChunks)) : 0,
                        cachedTokens: report.usage?.cachedTokens ?? 0,
                        tokenSource: report.usage == nil ? .estimated : .provider, charge: true,
                        timeToFirstByteMicros: firstByte)
                    return
                }
                if report.complete, failure == nil, report.errorMessage == nil {
                    let usage = report.usage ?? ReportedUsage()
                    await billing.settle(ticket, status: 200, outcome: .ok, promptTokens: usage.promptTokens,
                                         completionTokens: usage.completionTokens, cachedTokens: usage.cachedTokens,
                                         tokenSource: report.usage == nil ? .none : .provider, charge: true,
                                         timeToFirstByteMicros: firstByte)
                } else {
                    if report.errorMessage == nil {
                        // The upstream stopped early: say so in the dialect's own in-stream error.
                        let message = failure?.message ?? "the upstream ended the stream before it was done"
                        _ = await send(ByteBuffer(string: relay.errorEvent(message)))
                    }
                    await billing.settle(ticket, status: 200, outcome: .upstreamError, charge: false,
                                         timeToFirstByteMicros: firstByte)
                }
                try? await writer.finish(nil)
            })
    }
}
