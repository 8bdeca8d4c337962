import Core

extension SQLStore {
    public func keyStanding(keyId: Int64, nowMicros: Int64) async throws -> KeyStanding? {
        let period = BudgetPeriod(containingMicros: nowMicros)
        return try await read { c in
            guard let key = try c.execute("SELECT \(Self.keyColumns) FROM api_keys WHERE id = $1", .int(keyId)).first.map(Self.key)
            else { return nil }
            // A key's month is kept only while it has a budget.
            let month = key.monthlyBudget == nil ? nil : try c.execute(
                "SELECT spent_nanos, held_nanos FROM key_periods WHERE key_id = $1 AND period = $2",
                .int(keyId), .text(period.description)).first
            return KeyStanding(key: key, period: period,
                               spent: key.monthlyBudget == nil ? nil : Money(nanos: try month?.int(0) ?? 0),
                               held: key.monthlyBudget == nil ? nil : Money(nanos: try month?.int(1) ?? 0),
                               use: try Self.limitUse(c, key.limits, subject: "k:\(keyId)", customerId: key.customerId, keyId: keyId,
                                                      now: nowMicros))
        }
    }

    public func customerLimitUse(customerId: Int64, nowMicros: Int64) async throws -> LimitUse? {
        try await read { c in
            guard let customer = try c.execute("SELECT \(Self.customerColumns) FROM customers WHERE id = $1", .int(customerId))
                .first.map(Self.customer) else { return nil }
            return try Self.limitUse(c, customer.limits, subject: "c:\(customerId)", customerId: customerId, keyId: nil,
                                     now: nowMicros)
        }
    }

    /// A subject's buckets drained to now, and its requests in flight.
    static func limitUse(_ c: any SQLConnection, _ limits: RateLimits, subject: String, customerId: Int64, keyId: Int64?,
                         now: Int64) throws -> LimitUse {
        var requests: Int64 = 0, tokens: Int64 = 0
        if let state = try c.execute("SELECT requests, tokens, updated_us FROM rate_state WHERE subject = $1", .text(subject)).first {
            let elapsed = now - (try state.int(2))
            requests = RateBucket.used(level: RateBucket.drain(try state.int(0), elapsed: elapsed, limit: limits.requestsPerMinute))
            tokens = RateBucket.used(level: RateBucket.drain(try state.int(1), elapsed: elapsed, limit: limits.tokensPerMinute))
        }
        let inFlight = try Self.inFlight(c, customerId: customerId, keyId: keyId)
        return LimitUse(limits: limits, requests: requests, tokens: tokens, inFlight: inFlight)
    }
}
