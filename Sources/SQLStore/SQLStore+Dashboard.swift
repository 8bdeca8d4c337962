import Core

/// What the dashboard reads: rollups, budget rows and the newest ledger rows by index. Nothing
/// here scans the ledger.
extension SQLStore {
    public func dailyUsage(customerId: Int64?, range: DayRange) async throws -> [DailyModelUsage] {
        let (from, until) = range.micros
        let firstDay = from == .min ? Int64.min : from / Self.microsPerDay
        let lastDay = until == .max ? Int64.max : (until - 1) / Self.microsPerDay
        // Two statements, so each can use its index: the customer's (primary key) or the day's.
        let filter = customerId == nil ? "" : "customer_id = $3 AND "
        let values: [SQLValue] = [.int(firstDay), .int(lastDay)] + (customerId.map { [SQLValue.int($0)] } ?? [])
        return try await read { c in
            try c.execute(
                """
                SELECT day, model, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_nanos) FROM usage_daily \
                WHERE \(filter)day >= $1 AND day <= $2 GROUP BY day, model HAVING SUM(requests) > 0 ORDER BY day, model
                """, values
            ).map {
                DailyModelUsage(day: UTCDay(containingMicros: try $0.int(0) * Self.microsPerDay), model: try $0.text(1),
                                requests: try $0.int(2), promptTokens: try $0.int(3), completionTokens: try $0.int(4),
                                cost: Money(nanos: try $0.int(5)))
            }
        }
    }

    public func customerMonths(period: BudgetPeriod) async throws -> [CustomerMonth] {
        try await read { c in
            try c.execute(
                """
                SELECT \(Self.customerColumns.split(separator: ", ").map { "c.\($0)" }.joined(separator: ", ")), \
                COALESCE(b.spent_nanos, 0), COALESCE(b.held_nanos, 0) FROM customers c \
                LEFT JOIN budget_periods b ON b.customer_id = c.id AND b.period = $1 ORDER BY c.id
                """, .text(period.description)
            ).map { row in
                let customer = try Self.customer(from: row)
                return CustomerMonth(customer: customer, status: BudgetStatus(
                    customerId: customer.id, period: period, budget: customer.monthlyBudget,
                    spent: Money(nanos: try row.int(8)), held: Money(nanos: try row.int(9))))
            }
        }
    }

    public func latestUsage(customerId: Int64, limit: Int) async throws -> [UsageRecord] {
        try await read { c in
            try c.execute(
                "SELECT \(Self.usageColumns) FROM usage WHERE customer_id = $1 ORDER BY created_us DESC, id DESC LIMIT $2",
                .int(customerId), .int(Int64(max(0, limit)))
            ).map(Self.usage(from:))
        }
    }

    public func priceHistory() async throws -> [PriceRecord] {
        try await read { c in
            try c.execute("SELECT \(Self.priceColumns) FROM model_prices ORDER BY model, effective_from_us, id").map(Self.priceRecord)
        }
    }
}
