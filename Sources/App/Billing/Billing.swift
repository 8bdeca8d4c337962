import Core
import EventLoopClock
import Logging
import NIOConcurrencyHelpers
import Providers

/// Prices requests and runs the hold → settle protocol around each upstream call, for
/// `MeteredCall`. The rules of what is held and charged are `BillingPolicy`'s.
///
/// Fail closed: if the store cannot be reached for the price or the hold, the request gets 503
/// and the upstream is never called.
///
/// A class: every metered call and its settlement keep it, and a struct holding the whole
/// `Configuration` was copied (a retain per field) and destroyed several times per request.
final class Billing: Sendable {
    let store: any Store
    let configuration: Configuration
    let logger: Logger
    let metrics: GatewayMetrics
    let cache: LookupCache
    let liveHolds: LiveHolds
    let journal: SettleJournal
    /// Settles no request waits for, awaited at shutdown.
    let detached: DetachedSettles

    init(store: any Store, configuration: Configuration, logger: Logger, metrics: GatewayMetrics, cache: LookupCache,
         liveHolds: LiveHolds, journal: SettleJournal, detached: DetachedSettles) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.cache = cache
        self.liveHolds = liveHolds
        self.journal = journal
        self.detached = detached
    }

    /// What a request was admitted with; everything settling needs.
    struct Ticket: Sendable {
        var requestId: String
        var customerId: Int64
        var keyId: Int64
        var endpoint: String
        var dialect: Dialect
        var provider: Provider
        var model: String
        var price: ModelPrice
        var priceSource: PriceSource
        /// The amount set aside: the most this request can be charged.
        var held: Money
        var promptEstimate: Int64
        /// The output limit the upstream is given (nil for calls without output).
        var outputBound: Int64?
        /// Completions asked for: the output bound holds for each.
        var choices: Int64 = 1
        var startedAt: ContinuousClock.Instant
    }

    /// The price in force for a model: its own row, else the same model with or without the
    /// `:latest` tag Ollama treats as implied, else the shipped catalog, else the default
    /// price per request. `model` is already normalised and length-bounded.
    func price(for model: String) async throws(GatewayError) -> (ModelPrice, PriceSource) {
        let now = nowMicros()
        if let cached = cache.price(for: model, nowMicros: now) { return cached }
        let generation = cache.generation()
        let found: PriceInForce
        do {
            found = try await store.priceInForce(models: [model, model + ":latest"], atMicros: now)
        } catch {
            throw Self.storeFailure(error, logger: logger)
        }
        let price: (ModelPrice, PriceSource)
        if let record = found.record {
            price = (record.price, .configured)
        } else if let entry = PriceCatalog.shipped.entry(for: model) {
            price = (entry.price, .catalog)
        } else {
            price = (ModelPrice(perRequest: configuration.defaultPricePerRequest), .fallback)
        }
        cache.remember(price.0, source: price.1, nextChangeMicros: found.nextChangeMicros, for: model, generation: generation)
        return price
    }

    /// Holds an upper bound of the call's cost: the prompt's bound plus the output bound, for
    /// each of its choices. When that does not fit the budget but a smaller output bound does,
    /// the bound is lowered to what fits (the upstream is told that limit). Throws
    /// `.budgetExceeded` (after writing the refusal to the ledger) when not even one token fits.
    func hold(_ plan: CallPlan, principal: Principal, requestId: String, startedAt: ContinuousClock.Instant)
        async throws(GatewayError) -> Ticket
    {
        // Scope first: a model the key may not use is refused before anything is held or written.
        // The family is checked on the path by the middleware too; this is the call's own.
        guard principal.scope.allows(plan.dialect.family) else { throw .forbiddenAPI(plan.dialect.family) }
        guard principal.scope.allows(model: plan.model) else { throw .forbiddenModel(plan.model) }
        let (price, source) = try await self.price(for: plan.model)
        let imageTokens = BillingPolicy.imageTokens(plan.model, configuration)
        let promptBound = BillingPolicy.promptBound(plan.prompt, imageTokens: imageTokens, configuration)
        var output: Int64? = plan.producesOutput ? BillingPolicy.outputBound(requested: plan.requestedOutput, configuration) : nil
        var ticket = Ticket(requestId: requestId, customerId: principal.customerId, keyId: principal.keyId,
                            endpoint: plan.endpoint, dialect: plan.dialect, provider: plan.provider, model: plan.model,
                            price: price, priceSource: source, held: .zero,
                            promptEstimate: min(promptBound, BillingPolicy.promptEstimate(plan.prompt, imageTokens: imageTokens)),
                            outputBound: output, choices: plan.choices, startedAt: startedAt)
        for attempt in 1...4 {
            let amount = price.cost(promptTokens: promptBound, completionTokens: (output ?? 0) * plan.choices,
                                    cacheWrites: BillingPolicy.holdCacheWrites(plan.provider, promptBound: promptBound))
            let now = nowMicros()
            let request = HoldRequest(holdId: requestId, customerId: principal.customerId, keyId: principal.keyId,
                                      amount: amount, tokens: Self.tokenBound(promptBound, output, plan.choices), nowMicros: now,
                                      expiresAtMicros: now + Int64(configuration.holdExpirySeconds) * 1_000_000,
                                      endpoint: plan.endpoint, dialect: plan.dialect.rawValue,
                                      provider: plan.provider.rawValue, model: plan.model)
            let decision: HoldDecision
            do {
                decision = try await store.hold(request)
            } catch {
                throw Self.storeFailure(error, logger: logger)
            }
            switch decision {
            case .admitted:
                liveHolds.add(requestId)
                ticket.held = amount
                ticket.outputBound = output
                return ticket
            case .refused(let status):
                // Room for a smaller output bound? Try again with that (others may race for it).
                if attempt < 4, let current = output, let remaining = status.remaining,
                   let fitted = BillingPolicy.largestOutput(fitting: remaining, price: price, promptBound: promptBound,
                                                            choices: plan.choices, upTo: current - 1,
                                                            cacheWrites: BillingPolicy.holdCacheWrites(plan.provider, promptBound: promptBound)) {
                    output = fitted
                    continue
                }
                metrics.budgetRefused()
                await recordRefusal(ticket, status: 402, outcome: .budgetExceeded)
                throw .budgetExceeded(status)
            case .limited(let refusal):
                // A bound over the token limit by itself can never fit: with a smaller output
                // bound it may (as a budget refusal lowers it). A request that waits for room does not.
                if attempt < 4, refusal.kind == .tokensPerMinute, refusal.retryAfterMicros < 0, let current = output,
                   case let fitted = min(current - 1, (refusal.limit - promptBound) / max(plan.choices, 1)), fitted >= 1 {
                    output = fitted
                    continue
                }
                metrics.rateLimited(refusal)
                await recordRefusal(ticket, status: 429, outcome: .rateLimited)
                throw .rateLimited(refusal)
            }
        }
        preconditionFailure("the hold loop returns or throws")
    }

    /// The most tokens a call can use, for tokens-per-minute limits: clamped just past the
    /// largest limit, so that no bound (an image-heavy prompt, say) can overflow the arithmetic.
    static func tokenBound(_ promptBound: Int64, _ output: Int64?, _ choices: Int64) -> Int64 {
        let cap = RateLimits.maximum + 1
        let (outputs, o1) = (output ?? 0).multipliedReportingOverflow(by: choices)
        let (total, o2) = promptBound.addingReportingOverflow(outputs)
        return o1 || o2 ? cap : min(total, cap)
    }

    /// Writes a refused request to the ledger at no cost (a failure to write is counted and
    /// logged: the refusal itself stands).
    private func recordRefusal(_ ticket: Ticket, status: Int, outcome: Outcome) async {
        var row = usage(ticket, status: status, outcome: outcome)
        row.held = .zero
        do {
            try await store.recordUnheld(row)
        } catch {
            metrics.usageWriteFailed()
            logger.error("could not record a refusal", metadata: [
                "request_id": "\(ticket.requestId)", "outcome": "\(outcome.rawValue)", "error": "\(error)",
            ])
        }
    }

    /// Settles a ticket by how its call ended: one ledger row, the charge added to spent, the
    /// hold dropped. Returns only once the charge is durable: in the database, or, when the
    /// database cannot take it now (down, no connection free, locked), in the settle journal,
    /// which `JournalDrainer` writes to the database as soon as it can. If neither can take it
    /// (the database away and the disk failing), it keeps trying both: the client's response
    /// does not complete before its charge is on disk somewhere.
    ///
    /// Runs outside the caller's task, so a client that disconnects cannot cancel the write.
    func settle(_ ticket: Ticket, _ ending: CallEnding, timeToFirstByteMicros: Int64?, server: String? = nil) async {
        let charge = BillingPolicy.charge(ending, ticket: ticket)
        var row = usage(ticket, status: charge.status, outcome: charge.outcome)
        row.promptTokens = charge.usage.promptTokens
        row.completionTokens = charge.usage.completionTokens
        row.cachedTokens = charge.usage.cachedTokens
        row.tokenSource = charge.source
        row.cost = charge.cost
        row.timeToFirstByteMicros = timeToFirstByteMicros
        row.server = server
        let store = self.store, logger = self.logger, metrics = self.metrics, journal = self.journal
        let liveHolds = self.liveHolds, finalRow = row
        metrics.settled(finalRow)
        await Task {
            var backoff: Duration = .milliseconds(100)
            while true {
                if journal.databaseAccepts {
                    do {
                        if try await store.settle(holdId: finalRow.requestId, usage: finalRow) == .settledWithoutHold {
                            metrics.settledWithoutHold()
                            logger.warning("settled a request whose hold was gone: charged anyway", metadata: [
                                "request_id": "\(finalRow.requestId)", "cost_usd": "\(finalRow.cost.decimalString)",
                            ])
                        }
                        liveHolds.remove(finalRow.requestId)
                        return
                    } catch {
                        journal.databaseAccepts = false
                        logger.warning("the database could not take a settle now; settles go to the journal", metadata: [
                            "request_id": "\(finalRow.requestId)", "error": "\(error)",
                        ])
                    }
                }
                do {
                    // The hold stays live (renewed) until the drainer writes the settle.
                    try await journal.append(finalRow)
                    metrics.journaled()
                    return
                } catch {
                    metrics.usageWriteFailed()
                    logger.error("could not write a settle to the journal; trying again", metadata: [
                        "request_id": "\(finalRow.requestId)", "cost_usd": "\(finalRow.cost.decimalString)", "error": "\(error)",
                    ])
                    journal.databaseAccepts = true // the database may be back: try it too
                    try? await EventLoopClock.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(5))
                }
            }
        }.value
    }

    func usage(_ t: Ticket, status: Int, outcome: Outcome) -> UsageRecord {
        UsageRecord(requestId: t.requestId, customerId: t.customerId, keyId: t.keyId, endpoint: t.endpoint,
                    dialect: t.dialect.rawValue, provider: t.provider.rawValue, model: t.model, httpStatus: status,
                    outcome: outcome, price: t.price, priceSource: t.priceSource, held: t.held,
                    latencyMicros: t.startedAt.microsecondsElapsed, createdAtMicros: nowMicros())
    }

    /// A store failure as the client sees it (503), logged at most once every few seconds with
    /// how many like it were not: during an outage every request fails alike, and a log line
    /// apiece would only flood the log (and can stall the process on a slow log pipe).
    static func storeFailure(_ error: Error, logger: Logger) -> GatewayError {
        let (log, suppressed) = failureLog.withLockedValue { state -> (Bool, Int) in
            let now = ContinuousClock.now
            if let last = state.last, now - last < .seconds(5) {
                state.suppressed += 1
                return (false, 0)
            }
            defer { state = (now, 0) }
            return (true, state.suppressed)
        }
        if log {
            logger.warning("database failure", metadata: ["error": "\(error)", "similar_failures_not_logged": "\(suppressed)"])
        }
        return .databaseUnavailable
    }

    private static let failureLog = NIOLockedValueBox<(last: ContinuousClock.Instant?, suppressed: Int)>((nil, 0))
}
