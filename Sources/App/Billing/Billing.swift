import Core
import Logging
import Providers

/// Prices requests and runs the hold → settle protocol around each upstream call.
///
/// Fail closed: if the store cannot be reached for the price or the hold, the request gets 503
/// and the upstream is never called.
public struct Billing: Sendable {
    let store: any Store
    let configuration: Configuration
    let logger: Logger
    let metrics: GatewayMetrics
    let cache: LookupCache

    /// What a request was admitted with; everything settling needs.
    struct Ticket: Sendable {
        var requestId: String
        var customerId: Int64
        var keyId: Int64
        var endpoint: String
        var dialect: Dialect
        var provider: String
        var model: String
        var price: ModelPrice
        var priceSource: PriceSource
        var held: Money
        var promptEstimate: Int64
        var startedAt: ContinuousClock.Instant
    }

    /// The price in force for a model: its own row, else the same model with or without the
    /// `:latest` tag Ollama treats as implied, else the default price per request.
    func price(for model: String) async throws(GatewayError) -> (ModelPrice, PriceSource) {
        if let cached = cache.price(for: model) { return cached }
        let generation = cache.generation()
        let found = try await lookUpPrice(for: model)
        cache.remember(found.0, source: found.1, for: model, generation: generation)
        return found
    }

    private func lookUpPrice(for model: String) async throws(GatewayError) -> (ModelPrice, PriceSource) {
        let now = nowMicros()
        var candidates = [model]
        if model.hasSuffix(":latest") { candidates.append(String(model.dropLast(7))) }
        else if !model.contains(":") { candidates.append(model + ":latest") }
        do {
            for name in candidates {
                if let record = try await store.price(model: name, atMicros: now) { return (record.price, .configured) }
            }
        } catch {
            throw Self.storeFailure(error, logger: logger)
        }
        if let entry = PriceCatalog.shipped.entry(for: model) { return (entry.price, .catalog) }
        return (ModelPrice(perRequest: configuration.defaultPricePerRequest), .fallback)
    }

    /// Holds an upper bound of the request's cost. Throws `.budgetExceeded` (after writing the
    /// refusal to the ledger) when it does not fit.
    func hold(requestId: String, principal: Principal, endpoint: String, dialect: Dialect, provider: String,
              model: String, promptEstimate: Int64, maxOutputTokens: Int64?, startedAt: ContinuousClock.Instant)
        async throws(GatewayError) -> Ticket
    {
        let (price, source) = try await self.price(for: model)
        let outputBound = maxOutputTokens.flatMap { $0 > 0 ? $0 : nil } ?? configuration.defaultMaxOutputTokens
        let amount = price.cost(promptTokens: promptEstimate, completionTokens: outputBound)
        let ticket = Ticket(requestId: requestId, customerId: principal.customerId, keyId: principal.keyId,
                            endpoint: endpoint, dialect: dialect, provider: provider, model: model, price: price,
                            priceSource: source, held: amount, promptEstimate: promptEstimate, startedAt: startedAt)
        let now = nowMicros()
        let request = HoldRequest(holdId: requestId, customerId: principal.customerId, keyId: principal.keyId,
                                  amount: amount, nowMicros: now,
                                  expiresAtMicros: now + Int64(configuration.holdExpirySeconds) * 1_000_000,
                                  endpoint: endpoint, dialect: dialect.rawValue, provider: provider, model: model)
        let decision: HoldDecision
        do {
            decision = try await store.hold(request)
        } catch {
            throw Self.storeFailure(error, logger: logger)
        }
        if case .refused(let status) = decision {
            metrics.budgetRefused()
            var row = usage(ticket, status: 402, outcome: .budgetExceeded)
            row.held = .zero
            do {
                try await store.recordUnheld(row)
            } catch {
                logger.error("could not record a budget refusal", metadata: ["request_id": "\(requestId)", "error": "\(error)"])
            }
            throw .budgetExceeded(status)
        }
        return ticket
    }

    /// Settles a ticket: the real cost (zero for failures) goes to spent with one ledger row.
    /// Runs outside the caller's task so a client that disconnects cannot cancel the write, and
    /// retries briefly; a row that still cannot be written is logged with its cost.
    func settle(_ ticket: Ticket, status: Int, outcome: Outcome, promptTokens: Int64 = 0, completionTokens: Int64 = 0,
                cachedTokens: Int64 = 0, tokenSource: TokenSource = .none, charge: Bool,
                timeToFirstByteMicros: Int64? = nil) async {
        var row = usage(ticket, status: status, outcome: outcome)
        row.promptTokens = promptTokens
        row.completionTokens = completionTokens
        row.cachedTokens = cachedTokens
        row.tokenSource = tokenSource
        row.cost = charge ? ticket.price.cost(promptTokens: promptTokens, completionTokens: completionTokens,
                                              cachedTokens: cachedTokens) : .zero
        row.timeToFirstByteMicros = timeToFirstByteMicros
        let store = self.store, logger = self.logger, metrics = self.metrics, finalRow = row
        metrics.settled(finalRow)
        await Task {
            for attempt in 1...3 {
                do {
                    _ = try await store.settle(holdId: finalRow.requestId, usage: finalRow)
                    return
                } catch {
                    if attempt == 3 {
                        metrics.usageWriteFailed()
                        logger.error("usage row not written; the hold will expire and be released uncharged", metadata: [
                            "request_id": "\(finalRow.requestId)", "customer_id": "\(finalRow.customerId)",
                            "cost_usd": "\(finalRow.cost.decimalString)", "error": "\(error)",
                        ])
                        return
                    }
                    try? await Task.sleep(nanoseconds: UInt64(attempt) * 200_000_000)
                }
            }
        }.value
    }

    /// Settles a successful, non-streamed answer with the counts the upstream reported (`nil`:
    /// it reported none, so only the flat fees are charged and the row says so).
    func settleAnswered(_ ticket: Ticket, usage: ReportedUsage?) async {
        let u = usage ?? ReportedUsage()
        await settle(ticket, status: 200, outcome: .ok, promptTokens: u.promptTokens, completionTokens: u.completionTokens,
                     cachedTokens: u.cachedTokens, tokenSource: usage == nil ? .none : .provider, charge: true,
                     timeToFirstByteMicros: ticket.startedAt.microsecondsElapsed)
    }

    func usage(_ t: Ticket, status: Int, outcome: Outcome) -> UsageRecord {
        UsageRecord(requestId: t.requestId, customerId: t.customerId, keyId: t.keyId, endpoint: t.endpoint,
                    dialect: t.dialect.rawValue, provider: t.provider, model: t.model, httpStatus: status, outcome: outcome,
                    price: t.price, priceSource: t.priceSource, held: t.held,
                    latencyMicros: t.startedAt.microsecondsElapsed, createdAtMicros: nowMicros())
    }

    static func storeFailure(_ error: Error, logger: Logger) -> GatewayError {
        logger.warning("database failure", metadata: ["error": "\(error)"])
        return .databaseUnavailable
    }
}

/// A rough upper estimate of prompt tokens from the request size, for holds and for billing
/// requests whose upstream reports no counts: about four bytes of JSON per token.
func estimatedTokens(bytes: Int) -> Int64 {
    Int64(max(1, bytes / 4))
}
