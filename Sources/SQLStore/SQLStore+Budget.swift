import Core

extension SQLStore {
    public func hold(_ request: HoldRequest) async throws -> HoldDecision {
        if let batching { return try await batching.hold(request) }
        let period = BudgetPeriod(containingMicros: request.nowMicros)
        // Not durable on SQLite: a hold only matters while this process lives (it is released
        // when it expires), and a process crash keeps it anyway (it is in the WAL, which the OS
        // holds); only a power loss could drop it, together with the request it covered. The
        // settle that follows is durable, and its fsync writes this commit out too. That saves
        // one of the two fsyncs a request costs. PostgreSQL commits it durably regardless.
        return try await write(durable: false) { c in
            // BEGIN IMMEDIATE serialises writers on SQLite, so reading the state and then writing
            // it back is exact. (PostgreSQL runs the same rules in `lmsvr_admit_many`.) The
            // customer, its month and the key's limits come in one statement: keys and customers
            // without limits cost one statement more than a plain budget hold, not five.
            let p = period.description
            guard let row = try c.execute(
                """
                SELECT c.monthly_budget_nanos, c.rpm, c.tpm, c.concurrency, b.spent_nanos, b.held_nanos, \
                k.monthly_budget_nanos, k.rpm, k.tpm, k.concurrency, k.id FROM customers c \
                LEFT JOIN budget_periods b ON b.customer_id = c.id AND b.period = $2 \
                LEFT JOIN api_keys k ON k.id = $3 AND k.customer_id = c.id WHERE c.id = $1
                """, .int(request.customerId), .text(p), .optional(request.keyId)).first
            else { throw SQLError.other("no customer with id \(request.customerId)") }
            var admission = Admission(customer: try Self.subject(row, at: 0))
            if let spent = try row.optionalInt(4) {
                admission.customer.spent = spent
                admission.customer.held = try row.int(5)
            } else {
                try c.execute("INSERT INTO budget_periods (customer_id, period, spent_nanos, held_nanos) VALUES ($1, $2, 0, 0)",
                              .int(request.customerId), .text(p))
            }
            try Self.loadUse(c, &admission.customer, subject: "c:\(request.customerId)", customerId: request.customerId, keyId: nil)
            let keyId = try row.optionalInt(10)
            if let keyId {
                var key = try Self.subject(row, at: 6)
                if key.budget != nil || !key.limits.isEmpty {
                    if key.budget != nil {
                        try c.execute(
                            "INSERT INTO key_periods (key_id, period, spent_nanos, held_nanos) VALUES ($1, $2, 0, 0) ON CONFLICT DO NOTHING",
                            .int(keyId), .text(p))
                        let month = try c.execute("SELECT spent_nanos, held_nanos FROM key_periods WHERE key_id = $1 AND period = $2",
                                                  .int(keyId), .text(p))[0]
                        key.spent = try month.int(0)
                        key.held = try month.int(1)
                    }
                    try Self.loadUse(c, &key, subject: "k:\(keyId)", customerId: request.customerId, keyId: keyId)
                    admission.key = key
                }
            }
            switch admission.admit(amount: request.amount.nanos, tokens: request.tokens, now: request.nowMicros) {
            case .budget:
                return .refused(BudgetStatus(customerId: request.customerId, period: period, budget: admission.customer.budget,
                                             spent: Money(nanos: admission.customer.spent), held: Money(nanos: admission.customer.held)))
            case .keyBudget:
                let key = admission.key!
                return .refused(BudgetStatus(customerId: request.customerId, period: period, budget: key.budget,
                                             spent: Money(nanos: key.spent), held: Money(nanos: key.held), keyId: request.keyId))
            case .limited(let code, let limit, let wait):
                return .limited(LimitRefusal(code: code, customerId: request.customerId, keyId: request.keyId, limit: limit,
                                             retryAfterMicros: wait, requestedTokens: request.tokens)!)
            case .admitted:
                break
            }
            try c.execute("UPDATE budget_periods SET held_nanos = $3 WHERE customer_id = $1 AND period = $2",
                          .int(request.customerId), .text(p), .int(admission.customer.held))
            try Self.storeBucket(c, admission.customer, subject: "c:\(request.customerId)")
            var keyShare: Int64 = 0
            if let key = admission.key, let keyId {
                if key.budget != nil {
                    try c.execute("UPDATE key_periods SET held_nanos = $3 WHERE key_id = $1 AND period = $2",
                                  .int(keyId), .text(p), .int(key.held))
                    keyShare = request.amount.nanos
                }
                try Self.storeBucket(c, key, subject: "k:\(keyId)")
            }
            // Tokens are recorded only where a token limit took them: the settle gives them back.
            let tokenLimited = admission.customer.limits.tokensPerMinute != nil || admission.key?.limits.tokensPerMinute != nil
            try c.execute(
                """
                INSERT INTO holds (id, customer_id, key_id, period, amount_nanos, tokens, key_nanos, created_us, expires_us, \
                endpoint, dialect, provider, model) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                """,
                .text(request.holdId), .int(request.customerId), .optional(request.keyId), .text(p),
                .int(request.amount.nanos), .int(tokenLimited ? min(request.tokens, RateLimits.maximum + 1) : 0),
                .int(keyShare), .int(request.nowMicros), .int(request.expiresAtMicros),
                .text(request.endpoint), .text(request.dialect), .text(request.provider), .text(request.model))
            return .admitted(period: period)
        }
    }

    /// A subject's limits from `monthly_budget_nanos, rpm, tpm, concurrency` starting at `column`.
    static func subject(_ row: SQLRow, at column: Int) throws -> Admission.Subject {
        Admission.Subject(limits: RateLimits(requestsPerMinute: try row.optionalInt(column + 1),
                                             tokensPerMinute: try row.optionalInt(column + 2),
                                             concurrency: try row.optionalInt(column + 3)),
                          budget: try row.optionalInt(column).map(Money.init(nanos:)))
    }

    /// Its bucket levels and requests in flight, where it has limits that need them.
    static func loadUse(_ c: any SQLConnection, _ s: inout Admission.Subject, subject: String, customerId: Int64,
                        keyId: Int64?) throws {
        if s.hasBucket, let row = try c.execute("SELECT requests, tokens, updated_us FROM rate_state WHERE subject = $1",
                                                .text(subject)).first {
            s.requests = try row.int(0)
            s.tokens = try row.int(1)
            s.updatedMicros = try row.int(2)
        }
        if s.limits.concurrency != nil {
            s.inFlight = try inFlight(c, customerId: customerId, keyId: keyId)
        }
    }

    /// Requests in flight (open holds) of a customer, or of one of its keys (index `holds_customer_key`).
    static func inFlight(_ c: any SQLConnection, customerId: Int64, keyId: Int64?) throws -> Int64 {
        if let keyId {
            return try c.execute("SELECT count(*) FROM holds WHERE customer_id = $1 AND key_id = $2", .int(customerId), .int(keyId))[0].int(0)
        }
        return try c.execute("SELECT count(*) FROM holds WHERE customer_id = $1", .int(customerId))[0].int(0)
    }

    /// Writes back the bucket levels an admitted request took.
    static func storeBucket(_ c: any SQLConnection, _ s: Admission.Subject, subject: String) throws {
        guard s.hasBucket else { return }
        try c.execute(
            """
            INSERT INTO rate_state (subject, requests, tokens, updated_us) VALUES ($1, $2, $3, $4) \
            ON CONFLICT (subject) DO UPDATE SET requests = excluded.requests, tokens = excluded.tokens, updated_us = excluded.updated_us
            """, .text(subject), .int(s.requests), .int(s.tokens), .int(s.updatedMicros))
    }

    public func settle(holdId: String, usage: UsageRecord) async throws -> SettleResult {
        if let batching, holdId == usage.requestId { return try await batching.settle(usage) }
        do {
            // Urgent: a settle frees budget, so it never queues behind holds for a connection.
            // Two attempts: if the database stays locked (SQLite's busy timeout, twice), the
            // gateway journals the settle rather than keep its client waiting.
            return try await write(priority: .urgent, attempts: 2) { c in
                // The usual case: the hold is there. Deleting it takes its row lock, so a racing
                // settle of the same request waits here and then finds it gone.
                if let hold = try c.execute(
                    "DELETE FROM holds WHERE id = $1 RETURNING customer_id, period, amount_nanos, tokens, key_nanos, created_us",
                    .text(holdId)).first {
                    let period = try hold.text(1), amount = try hold.int(2), tokens = try hold.int(3)
                    try c.execute(
                        "UPDATE budget_periods SET held_nanos = held_nanos - $3, spent_nanos = spent_nanos + $4 WHERE customer_id = $1 AND period = $2",
                        .int(try hold.int(0)), .text(period), .int(amount), .int(usage.cost.nanos))
                    try Self.chargeKey(c, usage, period: period, released: try hold.int(4))
                    if tokens > 0 {
                        try Self.returnTokens(c, usage, credit: RateBucket.giveBack(
                            held: tokens, used: min(usage.promptTokens, RateLimits.maximum) + min(usage.completionTokens, RateLimits.maximum),
                            heldForMicros: usage.createdAtMicros - (try hold.int(5))))
                    }
                    var row = usage
                    row.held = Money(nanos: amount)
                    try Self.insertUsage(c, row, period: period)
                    return .settled
                }
                // Released as expired (its amount is no longer held): charge now, in its period,
                // replacing the uncharged `hold_expired` row.
                if let expired = try c.execute(
                    "DELETE FROM usage WHERE request_id = $1 AND outcome = $2 RETURNING period",
                    .text(usage.requestId), .text(Outcome.holdExpired.rawValue)).first {
                    try Self.chargeWithoutHold(c, usage, period: try expired.text(0))
                    return .settledWithoutHold
                }
                if try !c.execute("SELECT 1 FROM usage WHERE request_id = $1", .text(usage.requestId)).isEmpty {
                    return .alreadySettled
                }
                // Never held, or its hold row lost: still charge, in the month the request began.
                let began = BudgetPeriod(containingMicros: usage.createdAtMicros - usage.latencyMicros).description
                try Self.chargeWithoutHold(c, usage, period: began)
                return .settledWithoutHold
            }
        } catch StoreError.duplicate {
            // A concurrent settle of the same request wrote its row first.
            return .alreadySettled
        }
    }

    static func chargeWithoutHold(_ c: any SQLConnection, _ usage: UsageRecord, period: String) throws {
        try c.execute(
            "INSERT INTO budget_periods (customer_id, period, spent_nanos, held_nanos) VALUES ($1, $2, 0, 0) ON CONFLICT (customer_id, period) DO NOTHING",
            .int(usage.customerId), .text(period))
        try c.execute(
            "UPDATE budget_periods SET spent_nanos = spent_nanos + $3 WHERE customer_id = $1 AND period = $2",
            .int(usage.customerId), .text(period), .int(usage.cost.nanos))
        try chargeKey(c, usage, period: period, released: 0)
        var row = usage
        row.held = .zero
        try insertUsage(c, row, period: period)
    }

    /// Charges the key's month, if it is kept (from when the key is first given a budget), also
    /// for a hold that took no share of it (admitted before the budget was set). What the hold
    /// took from it (`released`) is given back; the floor at 0 is a guard.
    static func chargeKey(_ c: any SQLConnection, _ usage: UsageRecord, period: String, released: Int64) throws {
        guard let keyId = usage.keyId else { return }
        try c.execute(
            """
            UPDATE key_periods SET held_nanos = CASE WHEN held_nanos > $3 THEN held_nanos - $3 ELSE 0 END, \
            spent_nanos = spent_nanos + $4 WHERE key_id = $1 AND period = $2
            """, .int(keyId), .text(period), .int(released), .int(usage.cost.nanos))
    }

    /// Gives `credit` tokens (`RateBucket.giveBack`) back to the token buckets of the request's
    /// key and customer (takes them if negative), as `lmsvr_settle` does on PostgreSQL.
    static func returnTokens(_ c: any SQLConnection, _ usage: UsageRecord, credit: Int64) throws {
        var subjects: [(String, String, Int64)] = [("c:\(usage.customerId)", "customers", usage.customerId)]
        if let keyId = usage.keyId { subjects.append(("k:\(keyId)", "api_keys", keyId)) }
        for (subject, table, id) in subjects {
            guard let limits = try c.execute("SELECT rpm, tpm FROM \(table) WHERE id = $1", .int(id)).first,
                  let tpm = try limits.optionalInt(1),
                  let state = try c.execute("SELECT requests, tokens, updated_us FROM rate_state WHERE subject = $1",
                                            .text(subject)).first else { continue }
            let elapsed = usage.createdAtMicros - (try state.int(2))
            let requests = RateBucket.drain(try state.int(0), elapsed: elapsed, limit: try limits.optionalInt(0))
            let tokens = max(0, RateBucket.drain(try state.int(1), elapsed: elapsed, limit: tpm) - credit * RateBucket.unit)
            try c.execute("UPDATE rate_state SET requests = $2, tokens = $3, updated_us = $4 WHERE subject = $1",
                          .text(subject), .int(requests), .int(tokens), .int(max(try state.int(2), usage.createdAtMicros)))
        }
    }

    public func extendHolds(ids: [String], untilMicros: Int64) async throws -> Int {
        var extended = 0
        var start = 0
        while start < ids.count {
            let batch = Array(ids[start..<min(ids.count, start + 200)])
            start += batch.count
            let placeholders = (0..<batch.count).map { "$\($0 + 2)" }.joined(separator: ", ")
            // Not durable on SQLite: losing an extension to a power cut only shortens the hold,
            // and the process that extends it then died with its requests.
            extended += try await write(durable: false) { c in
                try c.execute("UPDATE holds SET expires_us = $1 WHERE id IN (\(placeholders)) AND expires_us < $1 RETURNING id",
                              [.int(untilMicros)] + batch.map { .text($0) }).count
            }
        }
        return extended
    }

    public func recordUnheld(_ usage: UsageRecord) async throws {
        let period = BudgetPeriod(containingMicros: usage.createdAtMicros).description
        try await write { c in
            if usage.cost.nanos != 0 {
                try Self.chargeWithoutHold(c, usage, period: period)
            } else {
                try Self.insertUsage(c, usage, period: period)
            }
        }
    }

    public func releaseExpiredHolds(nowMicros: Int64, limit: Int) async throws -> Int {
        let expired = try await read { c in
            try c.execute("SELECT id FROM holds WHERE expires_us < $1 ORDER BY expires_us LIMIT $2", .int(nowMicros), .int(Int64(limit)))
                .map { try $0.text(0) }
        }
        var released = 0
        for id in expired {
            let didRelease = try await write { c -> Bool in
                // Whoever deletes the row releases it; a racing releaser finds nothing.
                guard let h = try c.execute(
                    """
                    DELETE FROM holds WHERE id = $1 AND expires_us < $2 RETURNING customer_id, key_id, period, amount_nanos, \
                    endpoint, dialect, provider, model, created_us, key_nanos
                    """, .text(id), .int(nowMicros)).first
                else { return false }
                let customerId = try h.int(0), period = try h.text(2), amount = try h.int(3)
                try c.execute(
                    "UPDATE budget_periods SET held_nanos = held_nanos - $3 WHERE customer_id = $1 AND period = $2",
                    .int(customerId), .text(period), .int(amount))
                if let keyId = try h.optionalInt(1), try h.int(9) > 0 {
                    try c.execute(
                        "UPDATE key_periods SET held_nanos = CASE WHEN held_nanos > $3 THEN held_nanos - $3 ELSE 0 END WHERE key_id = $1 AND period = $2",
                        .int(keyId), .text(period), .int(try h.int(9)))
                }
                let usage = UsageRecord(
                    requestId: id, customerId: customerId, keyId: try h.optionalInt(1), endpoint: try h.text(4),
                    dialect: try h.text(5), provider: try h.text(6), model: try h.text(7), httpStatus: 0,
                    outcome: .holdExpired, price: ModelPrice(perRequest: .zero), priceSource: .fallback,
                    held: Money(nanos: amount), latencyMicros: nowMicros - (try h.int(8)), createdAtMicros: nowMicros)
                try Self.insertUsage(c, usage, period: period)
                return true
            }
            if didRelease { released += 1 }
        }
        return released
    }

    public func budgetStatus(customerId: Int64, period: BudgetPeriod) async throws -> BudgetStatus? {
        try await read { c in try Self.budgetStatus(c, customerId: customerId, period: period) }
    }

    static func budgetStatus(_ c: any SQLConnection, customerId: Int64, period: BudgetPeriod) throws -> BudgetStatus? {
        guard let row = try c.execute(
            """
            SELECT c.monthly_budget_nanos, COALESCE(b.spent_nanos, 0), COALESCE(b.held_nanos, 0) FROM customers c \
            LEFT JOIN budget_periods b ON b.customer_id = c.id AND b.period = $2 WHERE c.id = $1
            """, .int(customerId), .text(period.description)).first
        else { return nil }
        return BudgetStatus(customerId: customerId, period: period, budget: try row.optionalInt(0).map(Money.init(nanos:)),
                            spent: Money(nanos: try row.int(1)), held: Money(nanos: try row.int(2)))
    }
}
