import Core

extension SQLStore {
    static var usageColumns: String {
        """
        request_id, customer_id, key_id, endpoint, dialect, provider, model, http_status, outcome, prompt_tokens, \
        completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos, price_per_request_nanos, \
        price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos, price_cached_input_per_1m_nanos, \
        price_source, latency_us, ttfb_us, created_us
        """
    }

    static func insertUsage(_ c: any SQLConnection, _ u: UsageRecord, period: String) throws {
        try c.execute(
            """
            INSERT INTO usage (\(usageColumns), period) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
            $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)
            """,
            [.text(u.requestId), .int(u.customerId), .optional(u.keyId), .text(u.endpoint), .text(u.dialect),
             .text(u.provider), .text(u.model), .int(Int64(u.httpStatus)), .text(u.outcome.rawValue),
             .int(u.promptTokens), .int(u.completionTokens), .int(u.cachedTokens), .text(u.tokenSource.rawValue),
             .int(u.cost.nanos), .int(u.held.nanos), .int(u.price.perRequest.nanos), .int(u.price.perModel.nanos),
             .int(u.price.inputPer1M.nanos), .int(u.price.outputPer1M.nanos), .optional(u.price.cachedInputPer1M?.nanos),
             .text(u.priceSource.rawValue), .int(u.latencyMicros), .optional(u.timeToFirstByteMicros),
             .int(u.createdAtMicros), .text(period)])
    }

    static func usage(from r: SQLRow) throws -> UsageRecord {
        UsageRecord(
            requestId: try r.text(0), customerId: try r.int(1), keyId: try r.optionalInt(2), endpoint: try r.text(3),
            dialect: try r.text(4), provider: try r.text(5), model: try r.text(6), httpStatus: Int(try r.int(7)),
            outcome: Outcome(rawValue: try r.text(8)) ?? .gatewayError, promptTokens: try r.int(9),
            completionTokens: try r.int(10), cachedTokens: try r.int(11),
            tokenSource: TokenSource(rawValue: try r.text(12)) ?? .none, cost: Money(nanos: try r.int(13)),
            price: ModelPrice(perRequest: Money(nanos: try r.int(15)), perModel: Money(nanos: try r.int(16)),
                              inputPer1M: Money(nanos: try r.int(17)), outputPer1M: Money(nanos: try r.int(18)),
                              cachedInputPer1M: try r.optionalInt(19).map(Money.init(nanos:))),
            priceSource: PriceSource(rawValue: try r.text(20)) ?? .fallback, held: Money(nanos: try r.int(14)),
            latencyMicros: try r.int(21), timeToFirstByteMicros: try r.optionalInt(22), createdAtMicros: try r.int(23))
    }

    public func usageReport(customerId: Int64, range: DayRange) async throws -> UsageReport {
        let (from, until) = range.micros
        let lines = try await read { c in
            try c.execute(
                """
                SELECT model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), \
                COALESCE(SUM(cost_nanos), 0) FROM usage WHERE customer_id = $1 AND created_us >= $2 AND created_us < $3 \
                GROUP BY model ORDER BY model
                """, .int(customerId), .int(from), .int(until)
            ).map {
                UsageReport.Line(model: try $0.text(0), requests: try $0.int(1), promptTokens: try $0.int(2),
                                 completionTokens: try $0.int(3), cost: Money(nanos: try $0.int(4)))
            }
        }
        return UsageReport(customerId: customerId, range: range, byModel: lines)
    }

    public func exportUsage(customerId: Int64, range: DayRange,
                            _ body: @escaping @Sendable (UsageRecord) throws -> Void) async throws -> Int {
        let (from, until) = range.micros
        return try await read { c in
            var count = 0
            try c.forEachRow(
                "SELECT \(Self.usageColumns) FROM usage WHERE customer_id = $1 AND created_us >= $2 AND created_us < $3 ORDER BY created_us, id",
                [.int(customerId), .int(from), .int(until)]
            ) { row in
                try body(try Self.usage(from: row))
                count += 1
            }
            return count
        }
    }
}
