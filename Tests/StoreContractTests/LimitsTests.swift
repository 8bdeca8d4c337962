import Core
import Foundation
import SQLStore
import TestSupport
import Testing

/// Scoped keys and limits, held to the same results on both backends: SQLite runs the admission
/// rules in Swift, PostgreSQL in `lmsvr_admit_many`.
@Suite("Keys and limits")
struct LimitsTests {
    /// A customer with one key; returns their ids.
    func customerWithKey(_ store: any Store, budget: Int64? = nil) async throws -> (customer: Int64, key: Int64) {
        let customer = try await store.createCustomer(name: "Limited", email: "limited-\(UUID().uuidString)@example.com",
                                                      monthlyBudget: budget.map(Money.init(nanos:)), nowMicros: nowMicros())
        let key = try #require(try await store.createKey(customerId: customer.id, name: "k", nowMicros: nowMicros()))
        return (customer.id, key.record.id)
    }

    func hold(_ id: String, _ ids: (customer: Int64, key: Int64), amount: Int64 = 1, tokens: Int64 = 0, now: Int64) -> HoldRequest {
        HoldRequest(holdId: id, customerId: ids.customer, keyId: ids.key, amount: Money(nanos: amount), tokens: tokens,
                    nowMicros: now, expiresAtMicros: now + 600_000_000, endpoint: "/api/chat", dialect: "ollama",
                    provider: "ollama", model: "llama3")
    }

    /// Runs the holds at once; returns the decisions in order.
    func burst(_ store: any Store, _ requests: [HoldRequest]) async throws -> [HoldDecision] {
        try await withThrowingTaskGroup(of: (Int, HoldDecision).self) { group in
            for (i, request) in requests.enumerated() { group.addTask { (i, try await store.hold(request)) } }
            var out = [HoldDecision?](repeating: nil, count: requests.count)
            for try await (i, decision) in group { out[i] = decision }
            return out.map { $0! }
        }
    }

    func admitted(_ decisions: [HoldDecision]) -> Int {
        decisions.filter { if case .admitted = $0 { true } else { false } }.count
    }

    func refusals(_ decisions: [HoldDecision]) -> [LimitRefusal] {
        decisions.compactMap { if case .limited(let r) = $0 { r } else { nil } }
    }

    @Test(arguments: Backend.allCases)
    func aBurstAgainstARequestLimitAdmitsExactlyThatMany(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(requestsPerMinute: .some(7)))
        let now = nowMicros()
        let decisions = try await burst(store, (0..<40).map { hold("r\($0)", ids, now: now) })
        #expect(admitted(decisions) == 7)
        let refused = refusals(decisions)
        #expect(refused.count == 33)
        #expect(refused.allSatisfy { $0.subject == .key(ids.key) && $0.kind == .requestsPerMinute && $0.limit == 7 })
        // The bucket refills one request every 60/7 s: the wait named is exactly that.
        #expect(refused.allSatisfy { $0.retryAfterMicros == (60_000_000 + 6) / 7 })
        let refill = now + (60_000_000 + 6) / 7
        #expect(admitted(try await burst(store, [hold("late1", ids, now: refill - 1)])) == 0)
        #expect(admitted(try await burst(store, [hold("late2", ids, now: refill), hold("late3", ids, now: refill)])) == 1)
        // The customer's own limit applies over all its keys, beside the key's.
        _ = try await store.setLimits(keyId: ids.key, LimitChange(requestsPerMinute: .some(nil)))
        _ = try await store.setLimits(customerId: ids.customer, LimitChange(requestsPerMinute: .some(2)))
        let later = refill + 120_000_000
        let second = try await burst(store, (0..<5).map { hold("c\($0)", ids, now: later) })
        #expect(admitted(second) == 2)
        #expect(refusals(second).allSatisfy { $0.subject == .customer(ids.customer) })
    }

    /// One hold at a time, after the month's row exists: on PostgreSQL a lone hold of a customer
    /// and key without limits takes `lmsvr_admit_many`'s single-request path (0009). Each limit,
    /// and a key's budget, must still send it through the general path that enforces them.
    @Test(arguments: Backend.allCases)
    func loneHoldsStillMeetEveryLimitAndTheKeysBudget(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store)
        let now = nowMicros()
        func lone(_ id: String, amount: Int64 = 1) async throws -> HoldDecision {
            try await store.hold(hold(id, ids, amount: amount, now: now))
        }
        #expect(admitted([try await lone("first")]) == 1) // creates the month's row; no limits yet
        #expect(admitted([try await lone("free")]) == 1) // no budget, no limits: the single-request path admits
        _ = try await store.setLimits(customerId: ids.customer, LimitChange(tokensPerMinute: .some(10)))
        guard case .limited(let tooLarge) = try await store.hold(hold("t1", ids, tokens: 11, now: now)) else {
            Issue.record("a lone hold over the customer's tokens per minute was admitted"); return
        }
        #expect(tooLarge.subject == .customer(ids.customer) && tooLarge.kind == .tokensPerMinute)
        _ = try await store.setLimits(customerId: ids.customer, LimitChange(requestsPerMinute: .some(2), tokensPerMinute: .some(nil)))
        let customerRPM = [try await lone("c1"), try await lone("c2"), try await lone("c3")]
        #expect(admitted(customerRPM) == 2)
        #expect(refusals(customerRPM).map(\.kind) == [.requestsPerMinute])
        _ = try await store.setLimits(customerId: ids.customer, LimitChange(requestsPerMinute: .some(nil), concurrency: .some(2)))
        let customerConcurrency = [try await lone("n1"), try await lone("n2")] // 4 holds open, against 2
        #expect(refusals(customerConcurrency).map(\.kind) == [.concurrency, .concurrency])
        _ = try await store.setLimits(customerId: ids.customer, LimitChange(concurrency: .some(nil)))
        _ = try await store.setLimits(keyId: ids.key, LimitChange(requestsPerMinute: .some(1)))
        let keyRPM = [try await lone("k1"), try await lone("k2")]
        #expect(admitted(keyRPM) == 1 && refusals(keyRPM).map(\.subject) == [.key(ids.key)])
        _ = try await store.setLimits(keyId: ids.key, LimitChange(requestsPerMinute: .some(nil), monthlyBudget: .some(Money(nanos: 50))))
        let keyBudget = [try await lone("b1", amount: 30), try await lone("b2", amount: 30)]
        #expect(admitted(keyBudget) == 1)
        guard case .refused(let status) = keyBudget[1] else { Issue.record("the key's budget let a second hold through"); return }
        // The key's five holds of 1 still open when it got its budget count against it too.
        #expect(status.keyId == ids.key && status.held == Money(nanos: 35))
        _ = try await store.setLimits(keyId: ids.key, LimitChange(concurrency: .some(1), monthlyBudget: .some(nil)))
        let keyConcurrency = try await lone("q1") // the key already has holds open
        #expect(refusals([keyConcurrency]).map(\.subject) == [.key(ids.key)] && refusals([keyConcurrency]).map(\.kind) == [.concurrency])
    }

    @Test(arguments: Backend.allCases)
    func tokensPerMinuteTakeTheBoundAndGiveBackWhatWasNotUsed(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(tokensPerMinute: .some(1000)))
        let now = nowMicros()
        let decisions = try await burst(store, (0..<10).map { hold("t\($0)", ids, tokens: 300, now: now) })
        #expect(admitted(decisions) == 3)
        #expect(refusals(decisions).allSatisfy { $0.kind == .tokensPerMinute && $0.retryAfterMicros > 0 })
        // One of them used 100 of its 300: 200 come back, and a 300 fits again (900 - 200 + 300).
        let settledId = decisions.indices.first { if case .admitted = decisions[$0] { true } else { false } }!
        var row = usage("t\(settledId)", customer: ids.customer, cost: 1, at: now, prompt: 60, completion: 40)
        row.keyId = ids.key
        _ = try await store.settle(holdId: row.requestId, usage: row)
        #expect(admitted(try await burst(store, [hold("again", ids, tokens: 300, now: now)])) == 1)
        #expect(admitted(try await burst(store, [hold("full", ids, tokens: 1, now: now)])) == 0)
        // A request over the limit on its own can never fit.
        let tooLarge = refusals(try await burst(store, [hold("huge", ids, tokens: 1001, now: now + 120_000_000)]))
        #expect(tooLarge.first?.retryAfterMicros == -1)
        let standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.use.tokens == 1000)
        #expect(standing.use.inFlight == 3)
    }

    @Test(arguments: Backend.allCases)
    func concurrencyLimitsCountRequestsInFlight(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(concurrency: .some(3)))
        let now = nowMicros()
        let decisions = try await burst(store, (0..<12).map { hold("f\($0)", ids, now: now) })
        #expect(admitted(decisions) == 3)
        #expect(refusals(decisions).allSatisfy { $0.kind == .concurrency && $0.limit == 3 })
        let first = decisions.indices.first { if case .admitted = decisions[$0] { true } else { false } }!
        var row = usage("f\(first)", customer: ids.customer, cost: 1, at: now)
        row.keyId = ids.key
        _ = try await store.settle(holdId: row.requestId, usage: row)
        #expect(admitted(try await burst(store, (0..<4).map { hold("g\($0)", ids, now: now) })) == 1)
        // An expired hold that is released frees its place too.
        _ = try await store.releaseExpiredHolds(nowMicros: now + 700_000_000, limit: 100)
        #expect(admitted(try await burst(store, (0..<5).map { hold("h\($0)", ids, now: now + 700_000_000) })) == 3)
    }

    @Test(arguments: Backend.allCases)
    func aKeyBudgetSitsInsideItsCustomersBudget(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 1000)
        let other = try #require(try await store.createKey(customerId: ids.customer, name: "other", nowMicros: nowMicros()))
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 100))))
        let now = nowMicros()
        let decisions = try await burst(store, (0..<6).map { hold("b\($0)", ids, amount: 40, now: now) })
        #expect(admitted(decisions) == 2)
        for decision in decisions {
            if case .refused(let status) = decision {
                #expect(status.keyId == ids.key)
                #expect(status.budget == Money(nanos: 100))
                #expect(status.remaining == Money(nanos: 20))
            }
        }
        // The customer's other key still has the customer's room: 1000 - 80.
        let otherIds = (customer: ids.customer, key: other.record.id)
        #expect(admitted(try await burst(store, (0..<30).map { hold("o\($0)", otherIds, amount: 40, now: now) })) == 23)
        // A settle charges the key: 10 spent, 40 held, so one more 40 fits (10 + 40 + 40 ≤ 100).
        let first = decisions.indices.first { if case .admitted = decisions[$0] { true } else { false } }!
        var row = usage("b\(first)", customer: ids.customer, cost: 10, at: now)
        row.keyId = ids.key
        _ = try await store.settle(holdId: row.requestId, usage: row)
        let standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.spent == Money(nanos: 10))
        #expect(standing.held == Money(nanos: 40))
        // The customer's budget now has 1000 - 10 - 40 - 920 = 30 left: the key's room (50) is not enough.
        let last = try await burst(store, [hold("b-last", ids, amount: 40, now: now)])
        guard case .refused(let status) = last[0] else { Issue.record("expected a refusal"); return }
        #expect(status.keyId == nil)
    }

    /// A key given a budget mid-month starts from what it already spent this month: its own
    /// rows of this month's ledger, not last month's, not another key's.
    @Test(arguments: Backend.allCases)
    func aKeyBudgetSetMidMonthStartsFromWhatTheKeySpentThisMonth(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 1_000_000)
        let other = try #require(try await store.createKey(customerId: ids.customer, name: "other", nowMicros: nowMicros()))
        let now = nowMicros()
        let month = BudgetPeriod(containingMicros: now)
        let monthStart = try #require(UTCDay(year: month.year, month: month.month, day: 1)).startMicros
        func charge(_ id: String, key: Int64, cost: Int64, at micros: Int64) async throws {
            var row = usage(id, customer: ids.customer, cost: cost, at: micros)
            row.keyId = key
            _ = try await store.settle(holdId: id, usage: row)
        }
        try await charge("this-1", key: ids.key, cost: 7, at: now)
        try await charge("this-2", key: ids.key, cost: 11, at: max(monthStart, now - 1_000_000))
        try await charge("last-month", key: ids.key, cost: 1000, at: monthStart - 2 * 86_400_000_000)
        try await charge("other-key", key: other.record.id, cost: 500, at: now)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 100))))
        let standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.spent == Money(nanos: 18))
    }

    /// A key given a budget while its requests are in flight: their holds count against the new
    /// budget at once, and their settles are charged to the key's month, each settled alone (a
    /// batch of one on PostgreSQL, where no other hold in the batch took a key share).
    @Test(arguments: Backend.allCases)
    func aKeyBudgetSetWhileItsRequestsAreInFlightCountsThemAndChargesTheirSettles(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 1000)
        let now = nowMicros()
        #expect(admitted(try await burst(store, [hold("f1", ids, amount: 40, now: now)])) == 1)
        #expect(admitted(try await burst(store, [hold("f2", ids, amount: 40, now: now)])) == 1)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 100))))
        var standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.spent == Money(nanos: 0))
        #expect(standing.held == Money(nanos: 80))
        // 80 held: 21 more is over the key's 100, 20 is not.
        #expect(admitted(try await burst(store, [hold("over", ids, amount: 21, now: now)])) == 0)
        #expect(admitted(try await burst(store, [hold("fits", ids, amount: 20, now: now)])) == 1)
        for id in ["f1", "f2"] {
            var row = usage(id, customer: ids.customer, cost: 10, at: now)
            row.keyId = ids.key
            _ = try await store.settle(holdId: id, usage: row)
        }
        standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.spent == Money(nanos: 20))
        #expect(standing.held == Money(nanos: 20))
        // A hold that expires gives its share back too.
        _ = try await store.releaseExpiredHolds(nowMicros: now + 700_000_000, limit: 100)
        #expect(try await store.keyStanding(keyId: ids.key, nowMicros: now)?.held == Money(nanos: 0))
    }

    /// Requests of last month that took no share of the key's month (admitted before the key had
    /// a budget; set-limits marks only this month's) are still charged to last month's row once a
    /// hold of that month has started it, and give back no share they never took: settled alone
    /// and at once (batches, on PostgreSQL).
    @Test(arguments: Backend.allCases)
    func settlesChargeAKeptMonthForHoldsThatTookNoShare(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 1000)
        let month = BudgetPeriod(containingMicros: nowMicros())
        let monthStart = try #require(UTCDay(year: month.year, month: month.month, day: 1)).startMicros
        let previous = monthStart - 86_400_000_000
        let unshared = (0..<8).map { "x\($0)" }
        for id in unshared {
            #expect(admitted(try await burst(store, [hold(id, ids, amount: 20, now: previous)])) == 1)
        }
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 500))))
        #expect(admitted(try await burst(store, [hold("y", ids, amount: 30, now: previous)])) == 1)
        func settle(_ id: String) async throws {
            var row = usage(id, customer: ids.customer, cost: 5, at: previous)
            row.keyId = ids.key
            _ = try await store.settle(holdId: id, usage: row)
        }
        try await settle(unshared[0])
        var standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: previous))
        #expect(standing.spent == Money(nanos: 5))
        #expect(standing.held == Money(nanos: 30))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in unshared.dropFirst() { group.addTask { try await settle(id) } }
            try await group.waitForAll()
        }
        standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: previous))
        #expect(standing.spent == Money(nanos: 40))
        #expect(standing.held == Money(nanos: 30))
    }

    /// Budgets set, changed and taken off a key while its requests are held and settled, alone
    /// and in bursts: the key's month stays what the ledger and the open holds say, exactly.
    @Test(arguments: Backend.allCases)
    func aKeyMonthStaysItsLedgerAndItsHoldsWhileItsBudgetChangesUnderLoad(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 100_000_000)
        let now = nowMicros()
        @Sendable func request(_ id: String, settle: Bool) async throws {
            guard case .admitted = try await store.hold(hold(id, ids, amount: 50, now: now)), settle else { return }
            var row = usage(id, customer: ids.customer, cost: Int64(id.utf8.count), at: now)
            row.keyId = ids.key
            _ = try await store.settle(holdId: id, usage: row)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for i in 0..<12 {
                    let budget: Money? = i % 3 == 2 ? nil : Money(nanos: 1_000_000 + Int64(i))
                    _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(budget)))
                }
            }
            for lane in 0..<3 {
                group.addTask {
                    for i in 0..<30 { try await request("lane\(lane)-\(i)", settle: i % 5 != 0) }
                }
            }
            group.addTask {
                for burst in 0..<6 {
                    try await withThrowingTaskGroup(of: Void.self) { inner in
                        for i in 0..<8 { inner.addTask { try await request("burst\(burst)-\(i)", settle: i != 0) } }
                        try await inner.waitForAll()
                    }
                }
            }
            try await group.waitForAll()
        }
        let period = BudgetPeriod(containingMicros: now).description
        let (month, holds, ledger) = try await database.withConnection { c in
            (try c.execute("SELECT spent_nanos, held_nanos FROM key_periods WHERE key_id = $1 AND period = $2",
                           .int(ids.key), .text(period)).first.map { (try $0.int(0), try $0.int(1)) },
             try c.execute("SELECT COALESCE(SUM(key_nanos), 0) FROM holds WHERE key_id = $1 AND period = $2",
                           .int(ids.key), .text(period))[0].int(0),
             try c.execute("SELECT COALESCE(SUM(cost_nanos), 0) FROM usage WHERE key_id = $1 AND period = $2",
                           .int(ids.key), .text(period))[0].int(0))
        }
        let kept = try #require(month)
        #expect(ledger > 0)
        #expect(kept.0 == ledger)
        #expect(kept.1 == holds)
    }

    /// A budget taken off a key and set again counts what the key spent while it had none, and
    /// what its requests admitted meanwhile still hold.
    @Test(arguments: Backend.allCases)
    func aKeyBudgetSetAgainCountsWhatTheKeySpentWithoutOne(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 1000)
        let now = nowMicros()
        func spend(_ id: String, cost: Int64) async throws {
            #expect(admitted(try await burst(store, [hold(id, ids, amount: 20, now: now)])) == 1)
            var row = usage(id, customer: ids.customer, cost: cost, at: now)
            row.keyId = ids.key
            _ = try await store.settle(holdId: id, usage: row)
        }
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 100))))
        try await spend("with", cost: 10)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(nil)))
        try await spend("without", cost: 5)
        #expect(admitted(try await burst(store, [hold("open", ids, amount: 30, now: now)])) == 1)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 100))))
        let standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.spent == Money(nanos: 15))
        #expect(standing.held == Money(nanos: 30))
    }

    @Test(arguments: Backend.allCases)
    func rotationExpiryAndScopes(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "R", email: "r@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        let now = nowMicros()
        let created = try #require(try await store.createKey(
            customerId: customer.id,
            options: KeyOptions(name: "ci", expiresAtMicros: now + 3_600_000_000,
                                scope: KeyScope(apis: [.openai, .anthropic], models: ["llama3*", "gpt-4o-mini"])),
            nowMicros: now))
        let first = try #require(try await store.principal(forKeyHash: APIKey.hash(created.plaintext)))
        #expect(first.expiresAtMicros == now + 3_600_000_000)
        #expect(first.scope.allows(.openai) && !first.scope.allows(.ollama))
        #expect(first.scope.allows(model: "llama3.2") && first.scope.allows(model: "gpt-4o-mini") && !first.scope.allows(model: "gpt-4o"))

        let rotated = try #require(try await store.rotateKey(id: created.record.id, graceMicros: 60_000_000, nowMicros: now))
        #expect(rotated.record.id == created.record.id)
        #expect(rotated.record.scope == created.record.scope)
        let old = try #require(try await store.principal(forKeyHash: APIKey.hash(created.plaintext)))
        #expect(old.expiresAtMicros == now + 60_000_000)
        #expect(old.keyId == created.record.id)
        let new = try #require(try await store.principal(forKeyHash: APIKey.hash(rotated.plaintext)))
        #expect(new.expiresAtMicros == now + 3_600_000_000)
        // A second rotation drops the first secret at once.
        let again = try #require(try await store.rotateKey(id: created.record.id, graceMicros: 0, nowMicros: now))
        #expect(try await store.principal(forKeyHash: APIKey.hash(created.plaintext)) == nil)
        #expect(try await store.principal(forKeyHash: APIKey.hash(rotated.plaintext))?.expiresAtMicros == now)
        #expect(try await store.principal(forKeyHash: APIKey.hash(again.plaintext)) != nil)

        let cleared = try #require(try await store.setKeyScope(id: created.record.id, apis: .some(nil), models: nil))
        #expect(cleared.scope.apis == nil)
        #expect(cleared.scope.models == ["llama3*", "gpt-4o-mini"])
        _ = try await store.revokeKey(id: created.record.id, nowMicros: now)
        #expect(try await store.rotateKey(id: created.record.id, graceMicros: 0, nowMicros: now) == nil)

        try await store.recordKeyUse([created.record.id: now + 5])
        try await store.recordKeyUse([created.record.id: now + 1]) // never moves back
        #expect(try await store.key(id: created.record.id)?.lastUsedAtMicros == now + 5)
    }

    @Test(arguments: Backend.allCases)
    func aLoweredLimitOrAnOversizedRequestNeverLocksASubjectOut(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(requestsPerMinute: .some(1000), tokensPerMinute: .some(1000)))
        let now = nowMicros()
        #expect(admitted(try await burst(store, (0..<50).map { hold("l\($0)", ids, now: now) })) == 50)
        // Lowered far below what the bucket holds: the wait is at most a minute, and a minute
        // later the key is served again.
        _ = try await store.setLimits(keyId: ids.key, LimitChange(requestsPerMinute: .some(10)))
        let refused = refusals(try await burst(store, [hold("low", ids, now: now + 1)]))
        #expect(refused.count == 1 && refused[0].retryAfterMicros <= 60_000_000)
        #expect(admitted(try await burst(store, [hold("later", ids, now: now + 60_000_001)])) == 1)
        // A bound far past every limit (an image-heavy prompt, say) is refused for good, and
        // the arithmetic does not overflow.
        let huge = refusals(try await burst(store, [hold("huge", ids, tokens: Int64.max / 2, now: now + 120_000_000)]))
        #expect(huge.first?.kind == .tokensPerMinute && huge.first?.retryAfterMicros == -1)
    }

    @Test(arguments: Backend.allCases)
    func aSettleGivesBackOnlyWhatIsStillInTheBucket(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(tokensPerMinute: .some(1000)))
        let now = nowMicros()
        #expect(admitted(try await burst(store, [hold("old", ids, tokens: 1000, now: now)])) == 1)
        // A minute later the bucket has drained that hold's share: a burst of 1000 fits, and the
        // old request settling unused must not give its 1000 back a second time.
        let later = now + 60_000_000
        #expect(admitted(try await burst(store, [hold("new", ids, tokens: 1000, now: later)])) == 1)
        var row = usage("old", customer: ids.customer, cost: 1, at: later, prompt: 0, completion: 0)
        row.keyId = ids.key
        _ = try await store.settle(holdId: row.requestId, usage: row)
        #expect(admitted(try await burst(store, [hold("extra", ids, tokens: 1, now: later)])) == 0)
    }

    @Test(arguments: Backend.allCases)
    func aKeyBudgetSetMidMonthStartsFromWhatTheKeySpent(backend: Backend) async throws {
        let (store, _, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 1000)
        let now = nowMicros()
        for i in 0..<3 {
            #expect(admitted(try await burst(store, [hold("m\(i)", ids, amount: 20, now: now)])) == 1)
            var row = usage("m\(i)", customer: ids.customer, cost: 10, at: now)
            row.keyId = ids.key
            _ = try await store.settle(holdId: row.requestId, usage: row)
        }
        // Without a budget the key's month is not kept; with one, it starts from the ledger.
        #expect(try await store.keyStanding(keyId: ids.key, nowMicros: now)?.spent == nil)
        _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 50))))
        #expect(try await store.keyStanding(keyId: ids.key, nowMicros: now)?.spent == Money(nanos: 30))
        #expect(admitted(try await burst(store, [hold("over", ids, amount: 21, now: now)])) == 0)
        #expect(admitted(try await burst(store, [hold("fits", ids, amount: 20, now: now)])) == 1)
    }
}
