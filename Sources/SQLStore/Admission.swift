import Core

/// The admission rules of a hold, in Swift, for the stores that run them in a transaction of
/// their own (SQLite, whose writes are serial). PostgreSQL runs the same rules, in the same
/// order, inside `lmsvr_admit_many`; the store contract tests hold both to the same results.
///
/// A request is checked against, in order: concurrency (customer, key), requests per minute
/// (customer, key), tokens per minute (customer, key), the customer's budget, the key's budget.
/// It takes its share of all of them only if every one fits.
struct Admission {
    /// One subject's limits and use: the customer, or the key.
    struct Subject {
        var limits: RateLimits
        var budget: Money?
        var spent: Int64 = 0
        var held: Int64 = 0
        var inFlight: Int64 = 0
        var requests: Int64 = 0
        var tokens: Int64 = 0
        var updatedMicros: Int64 = 0

        /// The bucket levels drained to `now`.
        func drained(_ now: Int64) -> (requests: Int64, tokens: Int64) {
            (RateBucket.drain(requests, elapsed: now - updatedMicros, limit: limits.requestsPerMinute),
             RateBucket.drain(tokens, elapsed: now - updatedMicros, limit: limits.tokensPerMinute))
        }

        var hasBucket: Bool { limits.requestsPerMinute != nil || limits.tokensPerMinute != nil }
    }

    enum Outcome: Equatable {
        case admitted
        case budget
        case keyBudget
        case limited(code: String, limit: Int64, retryAfterMicros: Int64)
    }

    var customer: Subject
    var key: Subject?

    /// Decides one request and, if admitted, takes its share.
    mutating func admit(amount: Int64, tokens: Int64, now: Int64) -> Outcome {
        let tokens = min(tokens, RateLimits.maximum + 1) // past every limit already; keeps the arithmetic in range
        let c = customer.drained(now), k = key?.drained(now)
        if let limit = customer.limits.concurrency, customer.inFlight >= limit {
            return .limited(code: "customer_concurrency", limit: limit, retryAfterMicros: 1_000_000)
        }
        if let key, let limit = key.limits.concurrency, key.inFlight >= limit {
            return .limited(code: "key_concurrency", limit: limit, retryAfterMicros: 1_000_000)
        }
        if let limit = customer.limits.requestsPerMinute, let wait = RateBucket.wait(level: c.requests, amount: 1, limit: limit) {
            return .limited(code: "customer_rpm", limit: limit, retryAfterMicros: wait)
        }
        if let key, let k, let limit = key.limits.requestsPerMinute,
           let wait = RateBucket.wait(level: k.requests, amount: 1, limit: limit) {
            return .limited(code: "key_rpm", limit: limit, retryAfterMicros: wait)
        }
        if let limit = customer.limits.tokensPerMinute, let wait = RateBucket.wait(level: c.tokens, amount: tokens, limit: limit) {
            return .limited(code: "customer_tpm", limit: limit, retryAfterMicros: wait)
        }
        if let key, let k, let limit = key.limits.tokensPerMinute,
           let wait = RateBucket.wait(level: k.tokens, amount: tokens, limit: limit) {
            return .limited(code: "key_tpm", limit: limit, retryAfterMicros: wait)
        }
        if let budget = customer.budget, customer.spent + customer.held + amount > budget.nanos { return .budget }
        if let key, let budget = key.budget, key.spent + key.held + amount > budget.nanos { return .keyBudget }
        Self.take(&customer, drained: c, amount: amount, tokens: tokens, now: now)
        if var taken = key, let k {
            Self.take(&taken, drained: k, amount: amount, tokens: tokens, now: now)
            key = taken
        }
        return .admitted
    }

    private static func take(_ s: inout Subject, drained: (requests: Int64, tokens: Int64), amount: Int64, tokens: Int64, now: Int64) {
        s.held += amount
        s.inFlight += 1
        guard s.hasBucket else { return }
        s.requests = s.limits.requestsPerMinute == nil ? 0 : drained.requests + RateBucket.unit
        s.tokens = s.limits.tokensPerMinute == nil ? 0 : drained.tokens + tokens * RateBucket.unit
        s.updatedMicros = max(s.updatedMicros, now)
    }
}
