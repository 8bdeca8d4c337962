import Core

extension SQLStore {
    static var usageColumns: String {
        """
        request_id, customer_id, key_id, endpoint, dialect, provider, model, http_status, outcome, prompt_tokens, \
        completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos, price_per_request_nanos, \
        price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos, price_cached_input_per_1m_nanos, \
        price_source, latency_us, ttfb_us, created_us, server
        """
    }

    static func insertUsage(_ c: any SQLConnection, _ u: UsageRecord, period: String) throws {
        try c.execute(
            """
            INSERT INTO usage (\(usageColumns), period) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
            $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)
            """,
            [.text(u.requestId), .int(u.customerId), .optional(u.keyId), .text(u.endpoint), .text(u.dialect),
             .text(u.provider), .text(u.model), .int(Int64(u.httpStatus)), .text(u.outcome.rawValue),
             .int(u.promptTokens), .int(u.completionTokens), .int(u.cachedTokens), .text(u.tokenSource.rawValue),
             .int(u.cost.nanos), .int(u.held.nanos), .int(u.price.perRequest.nanos), .int(u.price.perModel.nanos),
             .int(u.price.inputPer1M.nanos), .int(u.price.outputPer1M.nanos), .optional(u.price.cachedInputPer1M?.nanos),
             .text(u.priceSource.rawValue), .int(u.latencyMicros), .optional(u.timeToFirstByteMicros),
             .int(u.createdAtMicros), .optional(u.server), .text(period)])
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
            latencyMicros: try r.int(21), timeToFirstByteMicros: try r.optionalInt(22), createdAtMicros: try r.int(23),
            server: r.optionalText(24))
    }

    /// Reads the per-day rollups, never the ledger: a month of ten million requests is a few
    /// dozen rows per model.
    public func usageReport(customerId: Int64, range: DayRange) async throws -> UsageReport {
        UsageReport(customerId: customerId, range: range, daily: try await dailyUsage(customerId: customerId, range: range))
    }

    static var microsPerDay: Int64 { 86_400_000_000 }

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

    public func prepareLedger(nowMicros: Int64) async throws {
        guard database.dialect == .postgres else { return }
        let this = BudgetPeriod(containingMicros: nowMicros)
        let next = this.month == 12 ? BudgetPeriod(year: this.year + 1, month: 1) : BudgetPeriod(year: this.year, month: this.month + 1)
        for period in [this, next] {
            _ = try await write { c in try c.execute("SELECT lmsvr_usage_partition($1)", .text(period.description)) }
        }
    }

    public func archiveUsage(before period: BudgetPeriod, _ body: @escaping @Sendable (UsageRecord) throws -> Void,
                             keep: @escaping @Sendable () async throws -> Void) async throws -> Int {
        let months = try await read { c in
            try c.execute("SELECT DISTINCT period FROM usage WHERE period < $1 ORDER BY period", .text(period.description))
                .map { try $0.text(0) }
        }
        var written: [String: (rows: Int64, maxId: Int64)] = [:]
        for month in months {
            // Written first, kept, removed after: a failure before the removal leaves the month in
            // place, to be archived again.
            written[month] = try await read { c in
                // One snapshot for the rows and their fingerprint (count and highest id), which the
                // removal checks: a row that arrives or replaces another meanwhile stops it.
                try c.executeScript(c.dialect == .postgres ? "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY" : "BEGIN")
                do {
                    let fingerprint = try c.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM usage WHERE period = $1",
                                                    .text(month))[0]
                    var rows: Int64 = 0
                    // Customer by customer, each in time order: the (customer_id, created_us, id)
                    // index reads a month that way without sorting it.
                    try c.forEachRow("SELECT \(Self.usageColumns) FROM usage WHERE period = $1 ORDER BY customer_id, created_us, id",
                                     [.text(month)]) { row in
                        try body(try Self.usage(from: row))
                        rows += 1
                    }
                    try c.executeScript("COMMIT")
                    guard rows == (try fingerprint.int(0)) else { throw SQLError.decoding("archive of \(month) read \(rows) rows") }
                    return (rows, try fingerprint.int(1))
                } catch {
                    try? c.executeScript("ROLLBACK")
                    throw error
                }
            }
        }
        try await keep()
        let copied = written
        var removed: [String] = []
        for month in months {
            let (rows, maxId) = copied[month] ?? (0, 0)
            // A month per transaction, each short: on PostgreSQL dropping a partition takes the
            // ledger's strongest lock, which settles queue behind.
            do { try await write { c in
                switch c.dialect {
                case .postgres:
                    // Waits at most a second for that lock (behind a long export, say) rather than
                    // hold up every settle behind it.
                    try c.execute("SELECT set_config('lock_timeout', '1s', true)")
                    try c.execute("SELECT lmsvr_usage_archive($1, $2, $3)", .text(month), .int(rows), .int(maxId))
                case .sqlite:
                    // The write transaction holds the database: nothing arrives between check and delete.
                    let now = try c.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM usage WHERE period = $1", .text(month))[0]
                    guard try now.int(0) == rows, try now.int(1) == maxId else {
                        throw SQLError.other("the ledger of \(month) changed while it was archived (\(rows) rows written, "
                                             + "\(try now.int(0)) now): that month was left in place; run archive-usage again")
                    }
                    // The marker row tells the rollup trigger to keep the rollups.
                    try c.execute("INSERT INTO usage_archiving (active) VALUES (1)")
                    try c.execute("DELETE FROM usage WHERE period = $1", .text(month))
                    try c.execute("DELETE FROM usage_archiving")
                }
            } } catch {
                guard !removed.isEmpty else { throw error }
                throw StoreError.failed("\(error) (before it, \(removed.joined(separator: ", ")) were removed: their rows are in the file)")
            }
            removed.append(month)
        }
        let count = copied.values.reduce(0) { $0 + $1.rows }
        return Int(count)
    }
}
