import Core
import JSONKit

/// PostgreSQL's fast path for the two statements every request makes. Holds that arrive together,
/// whatever their customers, become one call of `lmsvr_admit_many` (budgets and limits together) (one round trip; period rows
/// locked only while it runs; an asynchronous commit); settles that arrive together become one
/// call of `lmsvr_settle` (one round trip, one durable commit for all). Neither waits to gather a
/// batch: see `Coalescer`.
final class PostgresBatching<Database: SQLDatabase>: Sendable {
    private let holds: Coalescer<BudgetPeriod, HoldRequest, Result<HoldDecision, StoreError>>
    private let settles: Coalescer<Int, UsageRecord, Result<SettleResult, StoreError>>

    init(database: Database) {
        holds = Coalescer(maxBatch: 256) { period, requests in
            try await Self.hold(database, period, requests)
        }
        settles = Coalescer(maxBatch: 256) { _, rows in
            try await Self.settle(database, rows)
        }
    }

    func hold(_ request: HoldRequest) async throws -> HoldDecision {
        try await holds.submit(request, key: BudgetPeriod(containingMicros: request.nowMicros)).get()
    }

    func settle(_ usage: UsageRecord) async throws -> SettleResult {
        try await settles.submit(usage, key: 0).get()
    }

    // MARK: Batches

    /// Holds a batch of any customers' requests in one call; if the call fails for a reason other
    /// than an outage (a customer deleted meanwhile, say), each customer's requests are tried
    /// alone, so one cannot fail the others.
    static func hold(_ database: Database, _ period: BudgetPeriod,
                     _ requests: [HoldRequest]) async throws -> [Result<HoldDecision, StoreError>] {
        do {
            return try await holdBatch(database, period, requests).map { .success($0) }
        } catch let error as StoreError where !error.isOutage {
            var results = [Result<HoldDecision, StoreError>?](repeating: nil, count: requests.count)
            let byCustomer = Dictionary(grouping: requests.indices, by: { requests[$0].customerId })
            for indices in byCustomer.values {
                do {
                    let decisions = try await holdBatch(database, period, indices.map { requests[$0] })
                    for (index, decision) in zip(indices, decisions) { results[index] = .success(decision) }
                } catch let error as StoreError where !error.isOutage {
                    for index in indices { results[index] = .failure(error) }
                }
            }
            return results.map { $0! }
        }
    }

    static func holdBatch(_ database: Database, _ period: BudgetPeriod, _ requests: [HoldRequest]) async throws -> [HoldDecision] {
        let binds: [SQLValue] = [
            .text(period.description), .text(PGArray.int(requests.map(\.customerId))),
            .text(PGArray.int(requests.map(\.nowMicros))), .text(PGArray.int(requests.map(\.expiresAtMicros))),
            .text(PGArray.text(requests.map(\.holdId))), .text(PGArray.int(requests.map(\.amount.nanos))),
            .text(PGArray.int(requests.map(\.tokens))), .text(PGArray.int(requests.map(\.keyId))),
            .text(PGArray.text(requests.map(\.endpoint))), .text(PGArray.text(requests.map(\.dialect))),
            .text(PGArray.text(requests.map(\.provider))), .text(PGArray.text(requests.map(\.model))),
        ]
        let row = try await call(database, priority: .normal) { c in
            try c.execute("""
                SELECT array_to_string(outcomes, ','), array_to_string(budgets, ',', ''), array_to_string(spent, ','), \
                array_to_string(held, ','), array_to_string(limits, ',', ''), array_to_string(retry, ',') \
                FROM lmsvr_admit_many($1, $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], \
                $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[])
                """, binds)[0]
        }
        let columns = try (0..<6).map { try row.text($0).split(separator: ",", omittingEmptySubsequences: false) }
        guard columns.allSatisfy({ $0.count == requests.count }) else {
            throw StoreError.failed("lmsvr_admit_many answered \(columns[0].count) decisions for \(requests.count) holds")
        }
        let (outcomes, budgets, spent, held, limits, retry) = (columns[0], columns[1], columns[2], columns[3], columns[4], columns[5])
        return try requests.indices.map { i in
            let request = requests[i]
            switch outcomes[i] {
            case "ok":
                return .admitted(period: period)
            case "budget", "key_budget":
                return .refused(BudgetStatus(customerId: request.customerId, period: period,
                                             budget: Int64(budgets[i]).map(Money.init(nanos:)),
                                             spent: Money(nanos: Int64(spent[i]) ?? 0), held: Money(nanos: Int64(held[i]) ?? 0),
                                             keyId: outcomes[i] == "key_budget" ? request.keyId : nil))
            default:
                guard let refusal = LimitRefusal(code: String(outcomes[i]), customerId: request.customerId, keyId: request.keyId,
                                                 limit: Int64(limits[i]) ?? 0, retryAfterMicros: Int64(retry[i]) ?? 0,
                                                 requestedTokens: request.tokens)
                else { throw StoreError.failed("lmsvr_admit_many answered '\(outcomes[i])'") }
                return .limited(refusal)
            }
        }
    }

    static func settle(_ database: Database, _ rows: [UsageRecord]) async throws -> [Result<SettleResult, StoreError>] {
        do {
            return try await settleBatch(database, rows).map { .success($0) }
        } catch let error as StoreError where !error.isOutage {
            var results: [Result<SettleResult, StoreError>] = []
            for row in rows {
                do {
                    results.append(.success(try await settleBatch(database, [row])[0]))
                } catch StoreError.duplicate {
                    results.append(.success(.alreadySettled)) // a concurrent settle of the same request won
                } catch let error as StoreError where !error.isOutage {
                    results.append(.failure(error))
                }
            }
            return results
        }
    }

    private static func settleBatch(_ database: Database, _ rows: [UsageRecord]) async throws -> [SettleResult] {
        let json = JSON.array(rows.map(Self.json)).text
        let results = try await call(database, priority: .urgent) { c in
            try c.execute("SELECT request_id, result FROM lmsvr_settle($1::jsonb)", .text(json))
                .map { (try $0.text(0), try $0.text(1)) }
        }
        let byId = Dictionary(results, uniquingKeysWith: { first, _ in first })
        return rows.map { row in
            switch byId[row.requestId] {
            case "settled": .settled
            case "already_settled": .alreadySettled
            default: .settledWithoutHold
            }
        }
    }

    static func json(_ u: UsageRecord) -> JSON {
        let began = BudgetPeriod(containingMicros: u.createdAtMicros - u.latencyMicros)
        return [
            "request_id": .string(u.requestId), "customer_id": .int(u.customerId), "key_id": u.keyId.map(JSON.int) ?? .null,
            "endpoint": .string(u.endpoint), "dialect": .string(u.dialect), "provider": .string(u.provider),
            "model": .string(u.model), "http_status": .int(Int64(u.httpStatus)), "outcome": .string(u.outcome.rawValue),
            "prompt_tokens": .int(u.promptTokens), "completion_tokens": .int(u.completionTokens),
            "cached_tokens": .int(u.cachedTokens), "token_source": .string(u.tokenSource.rawValue),
            "cost_nanos": .int(u.cost.nanos), "price_per_request_nanos": .int(u.price.perRequest.nanos),
            "price_per_model_nanos": .int(u.price.perModel.nanos), "price_input_per_1m_nanos": .int(u.price.inputPer1M.nanos),
            "price_output_per_1m_nanos": .int(u.price.outputPer1M.nanos),
            "price_cached_input_per_1m_nanos": u.price.cachedInputPer1M.map { .int($0.nanos) } ?? .null,
            "price_source": .string(u.priceSource.rawValue), "latency_us": .int(u.latencyMicros),
            "ttfb_us": u.timeToFirstByteMicros.map(JSON.int) ?? .null, "created_us": .int(u.createdAtMicros),
            "server": u.server.map(JSON.string) ?? .null, "start_period": .string(began.description),
        ]
    }

    /// One statement in its own transaction (autocommit), retried after a deadlock.
    private static func call<T: Sendable>(_ database: Database, priority: SQLPriority,
                                          _ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        do {
            return try await retryingConflicts(maxAttempts: 5) { try await database.withConnection(priority: priority, body) }
        } catch let error as SQLError {
            throw error.storeError
        }
    }
}

/// PostgreSQL array literals for binding (`$1::text[]`): every element quoted and escaped, so no
/// value can end an element or the array early.
enum PGArray {
    static func text(_ values: [String]) -> String {
        var out = "{"
        for (i, value) in values.enumerated() {
            if i > 0 { out += "," }
            out += "\""
            for scalar in value.unicodeScalars {
                if scalar == "\\" || scalar == "\"" { out += "\\" }
                out.unicodeScalars.append(scalar)
            }
            out += "\""
        }
        return out + "}"
    }

    static func int(_ values: [Int64?]) -> String {
        "{" + values.map { $0.map(String.init) ?? "NULL" }.joined(separator: ",") + "}"
    }

    static func int(_ values: [Int64]) -> String {
        "{" + values.map(String.init).joined(separator: ",") + "}"
    }
}
