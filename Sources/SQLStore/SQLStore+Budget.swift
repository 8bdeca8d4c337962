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
            // The conditional UPDATE takes the period row lock; PostgreSQL re-checks the condition
            // against the latest committed row after waiting for it, so concurrent holds queue here
            // and each sees the others' amounts. On SQLite, BEGIN IMMEDIATE already serialises.
            func reserve() throws(SQLError) -> [SQLRow] {
                try c.execute(
                    """
                    UPDATE budget_periods SET held_nanos = held_nanos + $3 WHERE customer_id = $1 AND period = $2 \
                    AND ((SELECT monthly_budget_nanos FROM customers WHERE id = $1) IS NULL \
                    OR spent_nanos + held_nanos + $3 <= (SELECT monthly_budget_nanos FROM customers WHERE id = $1)) \
                    RETURNING spent_nanos
                    """, .int(request.customerId), .text(period.description), .int(request.amount.nanos))
            }
            var admitted = try reserve()
            if admitted.isEmpty {
                // No row for this month yet (its first hold), or no room. Create the row (a no-op
                // if it exists; on PostgreSQL it waits for a concurrent creator to commit) and try
                // once more with a fresh snapshot: a real refusal costs one more round trip, the
                // common path one fewer.
                try c.execute(
                    "INSERT INTO budget_periods (customer_id, period, spent_nanos, held_nanos) VALUES ($1, $2, 0, 0) ON CONFLICT (customer_id, period) DO NOTHING",
                    .int(request.customerId), .text(period.description))
                admitted = try reserve()
            }
            guard !admitted.isEmpty else {
                return .refused(try Self.budgetStatus(c, customerId: request.customerId, period: period)
                    ?? BudgetStatus(customerId: request.customerId, period: period, budget: .zero, spent: .zero, held: .zero))
            }
            try c.execute(
                """
                INSERT INTO holds (id, customer_id, key_id, period, amount_nanos, created_us, expires_us, endpoint, dialect, \
                provider, model) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                """,
                .text(request.holdId), .int(request.customerId), .optional(request.keyId), .text(period.description),
                .int(request.amount.nanos), .int(request.nowMicros), .int(request.expiresAtMicros),
                .text(request.endpoint), .text(request.dialect), .text(request.provider), .text(request.model))
            return .admitted(period: period)
        }
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
                    "DELETE FROM holds WHERE id = $1 RETURNING customer_id, period, amount_nanos", .text(holdId)).first {
                    let period = try hold.text(1), amount = try hold.int(2)
                    try c.execute(
                        "UPDATE budget_periods SET held_nanos = held_nanos - $3, spent_nanos = spent_nanos + $4 WHERE customer_id = $1 AND period = $2",
                        .int(try hold.int(0)), .text(period), .int(amount), .int(usage.cost.nanos))
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
        var row = usage
        row.held = .zero
        try insertUsage(c, row, period: period)
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
                    endpoint, dialect, provider, model, created_us
                    """, .text(id), .int(nowMicros)).first
                else { return false }
                let customerId = try h.int(0), period = try h.text(2), amount = try h.int(3)
                try c.execute(
                    "UPDATE budget_periods SET held_nanos = held_nanos - $3 WHERE customer_id = $1 AND period = $2",
                    .int(customerId), .text(period), .int(amount))
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
