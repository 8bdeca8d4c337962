import Core
import Foundation
import SQLStore
import TestSupport
import Testing

// Helpers

func usage(_ requestId: String, customer: Int64, model: String = "llama3", cost: Int64, at micros: Int64 = nowMicros(),
           prompt: Int64 = 10, completion: Int64 = 5) -> UsageRecord {
    UsageRecord(requestId: requestId, customerId: customer, keyId: nil, endpoint: "/api/chat", dialect: "ollama",
                provider: "ollama", model: model, httpStatus: 200, outcome: .ok, promptTokens: prompt,
                completionTokens: completion, tokenSource: .provider, cost: Money(nanos: cost),
                price: ModelPrice(perRequest: Money(nanos: cost)), priceSource: .configured, createdAtMicros: micros)
}

func holdRequest(_ id: String, customer: Int64, amount: Int64, now: Int64 = nowMicros(), expiresIn: Int64 = 600_000_000) -> HoldRequest {
    HoldRequest(holdId: id, customerId: customer, keyId: nil, amount: Money(nanos: amount), nowMicros: now,
                expiresAtMicros: now + expiresIn, endpoint: "/api/chat", dialect: "ollama", provider: "ollama", model: "llama3")
}

/// Sums the period's usage costs straight from the ledger table.
func ledgerSum(_ database: any SQLDatabase, customer: Int64, period: BudgetPeriod) async throws -> Int64 {
    try await database.withConnection { c in
        try c.execute("SELECT COALESCE(SUM(cost_nanos), 0), COUNT(*) FROM usage WHERE customer_id = $1 AND period = $2",
                      .int(customer), .text(period.description))[0].int(0)
    }
}

// MARK: Tests

@Suite("Store contract")
struct StoreContractTests {
    @Test(arguments: Backend.allCases)
    func customersAndKeys(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let now = nowMicros()
        let john = try await store.createCustomer(name: "John Doe", email: "john@example.com",
                                                  monthlyBudget: Money(nanos: 100_000_000_000), nowMicros: now)
        #expect(john.id == 1)
        await #expect(throws: StoreError.self) {
            _ = try await store.createCustomer(name: "Other", email: "JOHN@example.com", monthlyBudget: nil, nowMicros: now)
        }
        #expect(try await store.listCustomers().map(\.email) == ["john@example.com"])
        #expect(try await store.customer(id: 99) == nil)

        let key = try #require(try await store.createKey(customerId: john.id, name: "laptop", nowMicros: now))
        #expect(key.plaintext.hasPrefix("sk_"))
        #expect(key.record.displayPrefix == String(key.plaintext.prefix(11)))
        #expect(try await store.createKey(customerId: 42, name: nil, nowMicros: now) == nil)
        let principal = try #require(try await store.principal(forKeyHash: APIKey.hash(key.plaintext)))
        #expect(principal == Principal(keyId: key.record.id, customerId: john.id, revoked: false))
        #expect(try await store.principal(forKeyHash: APIKey.hash("sk_unknown")) == nil)

        let revoked = try #require(try await store.revokeKey(id: key.record.id, nowMicros: now + 5))
        #expect(revoked.revokedAtMicros == now + 5)
        // Revoking again keeps the first revocation time.
        #expect(try await store.revokeKey(id: key.record.id, nowMicros: now + 99)?.revokedAtMicros == now + 5)
        #expect(try await store.revokeKey(id: 12345, nowMicros: now) == nil)
        #expect(try await store.principal(forKeyHash: APIKey.hash(key.plaintext))?.revoked == true)
        #expect(try await store.listKeys(customerId: john.id).count == 1)

        let unlimited = try #require(try await store.setBudget(customerId: john.id, monthlyBudget: nil))
        #expect(unlimited.monthlyBudget == nil)
    }

    @Test(arguments: Backend.allCases)
    func pricesAreEffectiveDated(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let t0: Int64 = 1_000_000
        _ = try await store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 1)), effectiveFromMicros: t0)
        _ = try await store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 2)), effectiveFromMicros: t0 + 10)
        _ = try await store.setPrice(model: "mistral", price: ModelPrice(perRequest: Money(nanos: 7), perModel: Money(nanos: 3),
            inputPer1M: Money(nanos: 5), outputPer1M: Money(nanos: 6), cachedInputPer1M: Money(nanos: 4)), effectiveFromMicros: t0)
        #expect(try await store.priceInForce(models: ["llama3"], atMicros: t0 - 1).record == nil)
        #expect(try await store.priceInForce(models: ["llama3"], atMicros: t0 + 5).record?.price.perRequest == Money(nanos: 1))
        #expect(try await store.priceInForce(models: ["llama3"], atMicros: t0 + 10).record?.price.perRequest == Money(nanos: 2))
        let current = try await store.currentPrices(atMicros: t0 + 100)
        #expect(current.map(\.model) == ["llama3", "mistral"])
        #expect(current[0].price.perRequest == Money(nanos: 2))
        #expect(current[1].price == ModelPrice(perRequest: Money(nanos: 7), perModel: Money(nanos: 3),
            inputPer1M: Money(nanos: 5), outputPer1M: Money(nanos: 6), cachedInputPer1M: Money(nanos: 4)))
    }

    @Test(arguments: Backend.allCases)
    func thePriceInForceSaysWhenItNextChanges(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let t0: Int64 = 1_000_000
        _ = try await store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 1)), effectiveFromMicros: t0)
        _ = try await store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 2)), effectiveFromMicros: t0 + 10)
        _ = try await store.setPrice(model: "llama3:latest", price: ModelPrice(perRequest: Money(nanos: 3)), effectiveFromMicros: t0 + 5)
        let names = ["llama3", "llama3:latest"]
        // Before any row: nothing in force, and the earliest row of either name is the next change.
        #expect(try await store.priceInForce(models: names, atMicros: t0 - 1) == PriceInForce(record: nil, nextChangeMicros: t0))
        // The first name's row wins; the second name's scheduled row still changes nothing it
        // returns, but is when the answer must be asked again.
        let early = try await store.priceInForce(models: names, atMicros: t0)
        #expect(early.record?.price.perRequest == Money(nanos: 1) && early.nextChangeMicros == t0 + 5)
        let middle = try await store.priceInForce(models: names, atMicros: t0 + 5)
        #expect(middle.record?.price.perRequest == Money(nanos: 1) && middle.nextChangeMicros == t0 + 10)
        let late = try await store.priceInForce(models: names, atMicros: t0 + 10)
        #expect(late.record?.price.perRequest == Money(nanos: 2) && late.nextChangeMicros == nil)
        // The second name alone.
        let tagged = try await store.priceInForce(models: ["mistral", "llama3:latest"], atMicros: t0 + 5)
        #expect(tagged.record?.model == "llama3:latest" && tagged.nextChangeMicros == nil)
    }

    @Test(arguments: Backend.allCases)
    func modelMetadataUpserts(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        try await store.upsertModelMetadata([ModelMetadata(name: "llama3:8b", family: "llama", parameterSize: "8.0B",
                                                           quantization: "Q4_0", contextLength: 8192, syncedAtMicros: 1)])
        try await store.upsertModelMetadata([ModelMetadata(name: "llama3:8b", family: "llama", parameterSize: "8.0B",
                                                           quantization: "Q8_0", contextLength: 8192, syncedAtMicros: 2)])
        let models = try await store.modelMetadata()
        #expect(models.count == 1)
        #expect(models[0].quantization == "Q8_0")
        #expect(models[0].contextLength == 8192)
    }

    @Test(arguments: Backend.allCases)
    func twoHundredConcurrentHoldsAdmitExactlyTheFiftyThatFit(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let amount: Int64 = 20_000_000 // $0.02
        let customer = try await store.createCustomer(name: "Burst", email: "burst@example.com",
                                                      monthlyBudget: Money(nanos: amount * 50), nowMicros: nowMicros())
        let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<200 {
                group.addTask {
                    if case .admitted = try await store.hold(holdRequest("h\(i)", customer: customer.id, amount: amount)) {
                        return true
                    }
                    return false
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == 50)
        let period = BudgetPeriod(containingMicros: nowMicros())
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: period))
        #expect(status.held == Money(nanos: amount * 50))
        #expect(status.remaining == .zero)
        let holdRows = try await database.withConnection { try $0.execute("SELECT COUNT(*) FROM holds")[0].int(0) }
        #expect(holdRows == 50)
    }

    @Test(arguments: Backend.allCases)
    func settlingIsIdempotentAndTheLedgerSumsToSpent(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "Settle", email: "s@example.com",
                                                      monthlyBudget: Money(nanos: 1_000_000_000), nowMicros: nowMicros())
        let period = BudgetPeriod(containingMicros: nowMicros())
        for i in 0..<20 {
            guard case .admitted = try await store.hold(holdRequest("r\(i)", customer: customer.id, amount: 30_000_000)) else {
                Issue.record("hold \(i) refused"); return
            }
        }
        // Settle concurrently, each one twice; costs below, at and above the hold.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<20 {
                let cost: Int64 = [10_000_000, 30_000_000, 31_000_000][i % 3]
                for _ in 0..<2 {
                    group.addTask { _ = try await store.settle(holdId: "r\(i)", usage: usage("r\(i)", customer: customer.id, cost: cost)) }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await store.settle(holdId: "r0", usage: usage("r0", customer: customer.id, cost: 999)) == .alreadySettled)
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: period))
        #expect(status.held == .zero)
        let expected: Int64 = (0..<20).reduce(0) { $0 + [10_000_000, 30_000_000, 31_000_000][$1 % 3] }
        #expect(status.spent == Money(nanos: expected))
        #expect(try await ledgerSum(database, customer: customer.id, period: period) == expected)
        let rows = try await database.withConnection { try $0.execute("SELECT COUNT(*) FROM usage")[0].int(0) }
        #expect(rows == 20)
    }

    @Test(arguments: Backend.allCases)
    func refusedHoldChangesNothingAndUnlimitedAlwaysFits(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let capped = try await store.createCustomer(name: "Cap", email: "cap@example.com",
                                                    monthlyBudget: Money(nanos: 100), nowMicros: nowMicros())
        let free = try await store.createCustomer(name: "Free", email: "free@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        guard case .refused(let status) = try await store.hold(holdRequest("x", customer: capped.id, amount: 101)) else {
            Issue.record("over-budget hold admitted"); return
        }
        #expect(status.budget == Money(nanos: 100))
        #expect(status.held == .zero)
        guard case .admitted = try await store.hold(holdRequest("y", customer: capped.id, amount: 100)) else {
            Issue.record("exact-fit hold refused"); return
        }
        guard case .admitted = try await store.hold(holdRequest("z", customer: free.id, amount: 1_000_000_000_000)) else {
            Issue.record("unlimited customer refused"); return
        }
        let zeroBudget = try await store.createCustomer(name: "Zero", email: "zero@example.com",
                                                        monthlyBudget: .zero, nowMicros: nowMicros())
        guard case .refused = try await store.hold(holdRequest("w", customer: zeroBudget.id, amount: 1)) else {
            Issue.record("zero budget admitted a paid request"); return
        }
    }

    /// Lone holds once the month's row exists: on PostgreSQL these take `lmsvr_admit_many`'s
    /// single-request path (0009), which must draw the line at the same nano as the general path.
    @Test(arguments: Backend.allCases)
    func loneHoldsFitToTheLastNanoAndNoFurther(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "Lone", email: "lone@example.com",
                                                      monthlyBudget: Money(nanos: 1_000), nowMicros: nowMicros())
        let period = BudgetPeriod(containingMicros: nowMicros())
        func admitted(_ id: String, _ amount: Int64) async throws -> Bool {
            if case .admitted = try await store.hold(holdRequest(id, customer: customer.id, amount: amount)) { return true }
            return false
        }
        #expect(try await admitted("a", 400)) // the month's first hold creates its row
        #expect(try await admitted("b", 600)) // exactly the rest
        guard case .refused(let full) = try await store.hold(holdRequest("c", customer: customer.id, amount: 1)) else {
            Issue.record("a hold one nano over the budget was admitted"); return
        }
        #expect(full.held == Money(nanos: 1_000) && full.spent == .zero && full.budget == Money(nanos: 1_000))
        // Settling "a" for less than it held frees the difference, and no more.
        #expect(try await store.settle(holdId: "a", usage: usage("a", customer: customer.id, cost: 300)) == .settled)
        #expect(!(try await admitted("d", 101)))
        #expect(try await admitted("e", 100))
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: period))
        #expect(status.held == Money(nanos: 700) && status.spent == Money(nanos: 300) && status.remaining == .zero)
        let holdRows = try await database.withConnection { try $0.execute("SELECT COUNT(*) FROM holds")[0].int(0) }
        #expect(holdRows == 2)
    }

    @Test(arguments: Backend.allCases)
    func anExpiredHoldIsReleasedOnceWhenTwoReleasersRace(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "Crash", email: "c@example.com",
                                                      monthlyBudget: Money(nanos: 1_000), nowMicros: nowMicros())
        let now = nowMicros()
        for i in 0..<5 {
            _ = try await store.hold(holdRequest("dead\(i)", customer: customer.id, amount: 100, now: now - 2_000_000, expiresIn: 1_000_000))
        }
        _ = try await store.hold(holdRequest("alive", customer: customer.id, amount: 100, now: now))
        async let a = store.releaseExpiredHolds(nowMicros: now, limit: 100)
        async let b = store.releaseExpiredHolds(nowMicros: now, limit: 100)
        let released = try await a + b
        #expect(released == 5)
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: BudgetPeriod(containingMicros: now)))
        #expect(status.held == Money(nanos: 100))
        #expect(status.spent == .zero)
        let outcomes = try await database.withConnection {
            try $0.execute("SELECT outcome, COUNT(*) FROM usage GROUP BY outcome").map { "\(try $0.text(0))=\(try $0.int(1))" }
        }
        #expect(outcomes == ["hold_expired=5"])
        // A settle arriving after the release still charges, replacing the hold_expired row;
        // settling again changes nothing.
        #expect(try await store.settle(holdId: "dead0", usage: usage("dead0", customer: customer.id, cost: 50)) == .settledWithoutHold)
        #expect(try await store.settle(holdId: "dead0", usage: usage("dead0", customer: customer.id, cost: 50)) == .alreadySettled)
        let after = try #require(try await store.budgetStatus(customerId: customer.id, period: BudgetPeriod(containingMicros: now)))
        #expect(after.spent == Money(nanos: 50) && after.held == Money(nanos: 100))
        let rows = try await database.withConnection {
            try $0.execute("SELECT outcome, cost_nanos FROM usage WHERE request_id = 'dead0'").map { "\(try $0.text(0))=\(try $0.int(1))" }
        }
        #expect(rows == ["ok=50"])
    }

    @Test(arguments: Backend.allCases)
    func aSettleWithoutAnyHoldStillChargesOnce(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "Lost", email: "l@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        let results = try await withThrowingTaskGroup(of: SettleResult.self) { group in
            for _ in 0..<4 { group.addTask { try await store.settle(holdId: "nohold", usage: usage("nohold", customer: customer.id, cost: 70)) } }
            return try await group.reduce(into: [SettleResult]()) { $0.append($1) }
        }
        #expect(results.filter { $0 == .settledWithoutHold }.count == 1)
        #expect(results.filter { $0 == .alreadySettled }.count == 3)
        let period = BudgetPeriod(containingMicros: nowMicros())
        #expect(try await store.budgetStatus(customerId: customer.id, period: period)?.spent == Money(nanos: 70))
        #expect(try await ledgerSum(database, customer: customer.id, period: period) == 70)
    }

    @Test(arguments: Backend.allCases)
    func extendedHoldsOutliveTheirFirstExpiry(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "Live", email: "v@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        let now = nowMicros()
        for i in 0..<250 {
            _ = try await store.hold(holdRequest("live\(i)", customer: customer.id, amount: 1, now: now - 2_000_000, expiresIn: 1_000_000))
        }
        _ = try await store.hold(holdRequest("dead", customer: customer.id, amount: 1, now: now - 2_000_000, expiresIn: 1_000_000))
        // 250 ids: more than one batch of the IN list.
        #expect(try await store.extendHolds(ids: (0..<250).map { "live\($0)" } + ["unknown"], untilMicros: now + 60_000_000) == 250)
        #expect(try await store.releaseExpiredHolds(nowMicros: now, limit: 1000) == 1)
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: BudgetPeriod(containingMicros: now)))
        #expect(status.held == Money(nanos: 250))
    }

    @Test(arguments: Backend.allCases)
    func unheldRowsAndReports(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "Rep", email: "r@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        let day1 = try #require(UTCDay(parsing: "2026-03-01")), day2 = try #require(UTCDay(parsing: "2026-03-02"))
        try await store.recordUnheld(usage("a", customer: customer.id, model: "llama3", cost: 0, at: day1.startMicros))
        try await store.recordUnheld(usage("b", customer: customer.id, model: "llama3", cost: 5, at: day1.endMicros - 1))
        try await store.recordUnheld(usage("c", customer: customer.id, model: "mistral", cost: 7, at: day2.startMicros,
                                           prompt: 100, completion: 50))
        let all = try await store.usageReport(customerId: customer.id, range: DayRange(start: nil, end: nil))
        #expect(all.totalRequests == 3)
        #expect(all.totalCost == Money(nanos: 12))
        #expect(all.byModel.map(\.model) == ["llama3", "mistral"])
        #expect(all.byModel[1].promptTokens == 100)
        let first = try await store.usageReport(customerId: customer.id, range: DayRange(start: day1, end: day1))
        #expect(first.totalRequests == 2)
        #expect(first.byModel.map(\.model) == ["llama3"])
        let period = BudgetPeriod(containingMicros: day1.startMicros)
        #expect(try await store.budgetStatus(customerId: customer.id, period: period)?.spent == Money(nanos: 12))
        #expect(try await ledgerSum(database, customer: customer.id, period: period) == 12)

        let collected = Collected()
        let count = try await store.exportUsage(customerId: customer.id, range: DayRange(start: day2, end: nil)) {
            collected.append($0.requestId)
        }
        #expect(count == 1)
        #expect(collected.values == ["c"])
    }

    /// Every way a row reaches the ledger keeps the server that answered: a settle (batched on
    /// PostgreSQL), a settle whose hold was gone, and a row with no hold at all.
    @Test(arguments: Backend.allCases)
    func ledgerRowsNameTheServerThatAnswered(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "S", email: "s@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        func answered(_ id: String, by server: String?) -> UsageRecord {
            var row = usage(id, customer: customer.id, cost: 30)
            row.server = server
            return row
        }
        _ = try await store.hold(holdRequest("held", customer: customer.id, amount: 50))
        #expect(try await store.settle(holdId: "held", usage: answered("held", by: "http://gpu2:11434")) == .settled)
        #expect(try await store.settle(holdId: "gone", usage: answered("gone", by: "https://gpu3.example:443")) == .settledWithoutHold)
        try await store.recordUnheld(answered("refused", by: nil))
        let rows = Collected()
        _ = try await store.exportUsage(customerId: customer.id, range: DayRange(start: nil, end: nil)) {
            rows.append("\($0.requestId)=\($0.server ?? "-")")
        }
        #expect(rows.values.sorted() == ["gone=https://gpu3.example:443", "held=http://gpu2:11434", "refused=-"])
    }

    /// What the dashboard reads: rollups per day and model (one customer or everyone), every
    /// customer's month in one query, a customer's newest rows, every price ever set.
    @Test(arguments: Backend.allCases)
    func dashboardReads(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let now = nowMicros()
        let a = try await store.createCustomer(name: "A", email: "a@example.com", monthlyBudget: Money(nanos: 1_000), nowMicros: now)
        let b = try await store.createCustomer(name: "B", email: "b@example.com", monthlyBudget: nil, nowMicros: now)
        let day1 = try #require(UTCDay(parsing: "2026-03-01")), day2 = try #require(UTCDay(parsing: "2026-03-02"))
        try await store.recordUnheld(usage("a1", customer: a.id, model: "llama3", cost: 5, at: day1.startMicros + 1))
        try await store.recordUnheld(usage("a2", customer: a.id, model: "llama3", cost: 7, at: day1.startMicros + 2))
        try await store.recordUnheld(usage("a3", customer: a.id, model: "mistral", cost: 11, at: day2.startMicros))
        try await store.recordUnheld(usage("b1", customer: b.id, model: "llama3", cost: 13, at: day1.startMicros + 3))
        let march = DayRange(start: day1, end: day2)
        let mine = try await store.dailyUsage(customerId: a.id, range: march)
        #expect(mine.map { "\($0.day) \($0.model) \($0.requests) \($0.cost.nanos)" }
                == ["2026-03-01 llama3 2 12", "2026-03-02 mistral 1 11"])
        let everyone = try await store.dailyUsage(customerId: nil, range: march)
        #expect(everyone.map { "\($0.day) \($0.model) \($0.requests) \($0.cost.nanos) \($0.promptTokens)" }
                == ["2026-03-01 llama3 3 25 30", "2026-03-02 mistral 1 11 10"])
        #expect(try await store.dailyUsage(customerId: nil, range: DayRange(start: day2, end: day2)).count == 1)

        let months = try await store.customerMonths(period: BudgetPeriod(containingMicros: day1.startMicros))
        #expect(months.map(\.customer.id) == [a.id, b.id])
        #expect(months[0].status.spent == Money(nanos: 23) && months[0].remaining == Money(nanos: 977) && months[0].usedPPM == 23_000)
        #expect(months[1].status.budget == nil && months[1].remaining == nil && months[1].status.spent == Money(nanos: 13))
        let empty = try await store.customerMonths(period: BudgetPeriod(year: 2026, month: 4))
        #expect(empty.allSatisfy { $0.status.spent == .zero && $0.status.held == .zero })

        #expect(try await store.latestUsage(customerId: a.id, limit: 2).map(\.requestId) == ["a3", "a2"])
        #expect(try await store.latestUsage(customerId: b.id, limit: 50).map(\.requestId) == ["b1"])

        _ = try await store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 1)), effectiveFromMicros: 100)
        _ = try await store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 2)), effectiveFromMicros: 200)
        _ = try await store.setPrice(model: "aya", price: ModelPrice(perRequest: Money(nanos: 3)), effectiveFromMicros: 300)
        #expect(try await store.priceHistory().map { "\($0.model) \($0.price.perRequest.nanos)" } == ["aya 3", "llama3 1", "llama3 2"])
    }

    @Test(arguments: Backend.allCases)
    func exportStopsWhenTheWriterFails(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "E", email: "e@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        for i in 0..<50 { try await store.recordUnheld(usage("e\(i)", customer: customer.id, cost: 1)) }
        struct WriterFailed: Error {}
        let seen = Collected()
        await #expect(throws: WriterFailed.self) {
            _ = try await store.exportUsage(customerId: customer.id, range: DayRange(start: nil, end: nil)) { row in
                seen.append(row.requestId)
                if seen.values.count == 3 { throw WriterFailed() }
            }
        }
        // The connection is usable afterwards.
        #expect(try await store.usageReport(customerId: customer.id, range: DayRange(start: nil, end: nil)).totalRequests == 50)
    }

    @Test(arguments: Backend.allCases)
    func deadlocksAndLockConflictsAreRetriedNotSurfaced(backend: Backend) async throws {
        let (store, database, url) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let a = try await store.createCustomer(name: "A", email: "a@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        let b = try await store.createCustomer(name: "B", email: "b@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        switch backend {
        case .postgres:
            // Two transactions lock the same two rows in opposite orders: PostgreSQL aborts one
            // with 40P01, and `transaction` must run it again so both increments land.
            func crossing(_ first: Int64, _ second: Int64) async throws {
                try await database.transaction { c in
                    try c.execute("UPDATE customers SET monthly_budget_nanos = COALESCE(monthly_budget_nanos, 0) + 1 WHERE id = $1", .int(first))
                    try c.execute("SELECT pg_sleep(0.2)")
                    try c.execute("UPDATE customers SET monthly_budget_nanos = COALESCE(monthly_budget_nanos, 0) + 1 WHERE id = $1", .int(second))
                }
            }
            async let x: Void = crossing(a.id, b.id)
            async let y: Void = crossing(b.id, a.id)
            _ = try await (x, y)
            #expect(try await store.customer(id: a.id)?.monthlyBudget == Money(nanos: 2))
            #expect(try await store.customer(id: b.id)?.monthlyBudget == Money(nanos: 2))
        case .sqlite:
            // Another connection (as another process would) holds the write lock for a while;
            // the store's write waits for it instead of failing.
            let other = try await SQLiteTestConnection.open(url: url)
            try await other.holdWriteLock(seconds: 0.5)
            guard case .admitted = try await store.hold(holdRequest("busy", customer: a.id, amount: 1)) else {
                Issue.record("hold refused"); return
            }
            try await other.release()
        }
    }
}

/// Collects values from the store's export thread.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [String] = []
    func append(_ value: String) { lock.lock(); storage.append(value); lock.unlock() }
    var values: [String] { lock.lock(); defer { lock.unlock() }; return storage }
}
