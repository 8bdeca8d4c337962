import Core
import Foundation
import JSONKit
@testable import SQLStore
import PGStore
import TestSupport
import Testing

/// The ledger's rollups summed per customer, to compare with the ledger itself.
func rollupSums(_ database: any SQLDatabase, customer: Int64) async throws -> [Int64] {
    try await database.withConnection { c in
        let row = try c.execute("""
            SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), \
            COALESCE(SUM(cost_nanos), 0) FROM usage_daily WHERE customer_id = $1
            """, .int(customer))[0]
        return [try row.int(0), try row.int(1), try row.int(2), try row.int(3)]
    }
}

func ledgerSums(_ database: any SQLDatabase, customer: Int64) async throws -> [Int64] {
    try await database.withConnection { c in
        let row = try c.execute("""
            SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_nanos), 0) \
            FROM usage WHERE customer_id = $1
            """, .int(customer))[0]
        return [try row.int(0), try row.int(1), try row.int(2), try row.int(3)]
    }
}

// MARK: Tests

@Suite("Ledger at scale")
struct LedgerAtScaleTests {
    @Test func aBatchOfHoldsAdmitsExactlyThoseThatFitInOrder() async throws {
        let (store, anyDatabase, _) = try await Backend.postgres.makeStore()
        let database = try #require(anyDatabase as? PGDatabase)
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "B", email: "b@example.com", monthlyBudget: Money(nanos: 100),
                                                      nowMicros: nowMicros())
        let other = try await store.createCustomer(name: "C", email: "c@example.com", monthlyBudget: Money(nanos: 40),
                                                   nowMicros: nowMicros())
        let now = nowMicros()
        let period = BudgetPeriod(containingMicros: now)
        // B: 60 fits; 50 more would not; 30 still does; then nothing else. C, interleaved in the
        // same batch, is admitted against its own budget: 25 fits, 20 more would not, 15 does.
        let requests = [(customer.id, 60), (other.id, 25), (customer.id, 50), (other.id, 20), (customer.id, 30),
                        (other.id, 15), (customer.id, 20)].enumerated().map {
            holdRequest("b\($0.offset)", customer: $0.element.0, amount: Int64($0.element.1), now: now)
        }
        let decisions = try await PostgresBatching.holdBatch(database, period, requests)
        #expect(decisions.map { if case .admitted = $0 { true } else { false } } == [true, true, false, false, true, true, false])
        if case .refused(let status) = decisions[3] {
            #expect(status.customerId == other.id && status.budget == Money(nanos: 40) && status.held == Money(nanos: 40))
        } else {
            Issue.record("the fourth hold should be refused")
        }
        #expect(try #require(try await store.budgetStatus(customerId: customer.id, period: period)).held == Money(nanos: 90))
        #expect(try #require(try await store.budgetStatus(customerId: other.id, period: period)).held == Money(nanos: 40))
        let holds = try await database.withConnection { try $0.execute("SELECT id FROM holds ORDER BY id").map { try $0.text(0) } }
        #expect(holds == ["b0", "b1", "b4", "b5"])
        // A customer that cannot be held for (gone) fails alone; the others in its batch are held.
        let mixed = try await PostgresBatching.hold(database, period, [
            holdRequest("m1", customer: 999_999, amount: 1, now: now), holdRequest("m2", customer: other.id, amount: 0, now: now),
        ])
        #expect((try? mixed[0].get()) == nil)
        #expect(try mixed[1].get() == .admitted(period: period))
    }

    /// Four replicas' stores, each sending its holds one at a time (so every call is a batch of
    /// one, decided by 0009's single-request path), and a fifth sending bursts (the general path),
    /// all against one customer's budget: exactly what fits is admitted, and every admitted amount
    /// is held once (a lost update would hold less than was admitted).
    @Test func loneHoldsFromSeveralReplicasNeverOverspend() async throws {
        let (store, _, url) = try await Backend.postgres.makeStore()
        let amount: Int64 = 10
        let customer = try await store.createCustomer(name: "Race", email: "race@example.com",
                                                      monthlyBudget: Money(nanos: 50 * amount), nowMicros: nowMicros())
        guard case .admitted = try await store.hold(holdRequest("seed", customer: customer.id, amount: amount)) else {
            Issue.record("the first hold was refused"); return
        }
        var replicas: [any Store] = []
        for _ in 0..<5 { replicas.append(PGStore(database: try await PGDatabase.connect(conninfo: url, size: 4, waitMillis: 30_000))) }
        let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
            for (r, replica) in replicas.enumerated() {
                group.addTask {
                    var count = 0
                    if r == 4 {
                        for burst in 0..<8 {
                            count += try await withThrowingTaskGroup(of: Bool.self) { inner in
                                for i in 0..<5 {
                                    inner.addTask {
                                        if case .admitted = try await replica.hold(holdRequest("b\(burst)-\(i)", customer: customer.id, amount: amount)) { return true }
                                        return false
                                    }
                                }
                                return try await inner.reduce(0) { $0 + ($1 ? 1 : 0) }
                            }
                        }
                    } else {
                        for i in 0..<40 {
                            if case .admitted = try await replica.hold(holdRequest("r\(r)-\(i)", customer: customer.id, amount: amount)) { count += 1 }
                        }
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(admitted == 49) // the seed took the 50th
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: BudgetPeriod(containingMicros: nowMicros())))
        #expect(status.held == Money(nanos: 50 * amount) && status.remaining == .zero)
        for replica in replicas { await replica.close() }
        await store.close()
    }

    /// The batch functions reach holds through their indexes (migration 0012): a sequential scan
    /// of the table, every request's insert and delete, reads all its dead rows under sustained
    /// load. Counted inside one transaction (`pg_stat_xact_user_tables`), on a table small enough
    /// that the planner would pick a sequential scan if it were allowed to.
    @Test func theBatchFunctionsNeverScanTheHoldsTableWhole() async throws {
        let (store, anyDatabase, _) = try await Backend.postgres.makeStore()
        let database = try #require(anyDatabase as? PGDatabase)
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "I", email: "i@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        _ = try await store.setLimits(customerId: customer.id, LimitChange(concurrency: .some(50)))
        for id in ["i1", "i2"] { _ = try await store.hold(holdRequest(id, customer: customer.id, amount: 10)) }
        // Other requests in flight: a scan of the whole table or index would read them too.
        let other = try await store.createCustomer(name: "O", email: "o@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        for i in 0..<20 { _ = try await store.hold(holdRequest("o\(i)", customer: other.id, amount: 1)) }
        let now = nowMicros()
        let rows = JSON.array([usage("i1", customer: customer.id, cost: 4), usage("i2", customer: customer.id, cost: 6)]
            .map(PostgresBatching<PGDatabase>.json)).text
        // The view also counts this connection's earlier transactions whose counts are not yet
        // flushed (the pool's migrations among them): only the difference is this transaction's.
        @Sendable func holdsScans(_ c: any SQLConnection) throws -> (Int64, Int64) {
            let row = try c.execute("SELECT seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'holds'").first
            return (try row?.int(0) ?? 0, try row?.int(1) ?? 0)
        }
        let scans = try await database.withConnection { c in
            try c.inTransaction { c in
                let before = try holdsScans(c)
                _ = try c.execute(
                    """
                    SELECT * FROM lmsvr_admit_many($1, ARRAY[$2, $2]::bigint[], ARRAY[$3, $3]::bigint[], ARRAY[$4, $4]::bigint[], \
                    ARRAY['i3', 'i4'], ARRAY[1, 1]::bigint[], ARRAY[0, 0]::bigint[], ARRAY[NULL, NULL]::bigint[], \
                    ARRAY['/api/chat', '/api/chat'], ARRAY['ollama', 'ollama'], ARRAY['ollama', 'ollama'], ARRAY['m', 'm'])
                    """, .text(BudgetPeriod(containingMicros: now).description), .int(customer.id), .int(now),
                    .int(now + 600_000_000))
                let admitted = try holdsScans(c)
                _ = try c.execute("SELECT * FROM lmsvr_settle($1::jsonb)", .text(rows))
                let settled = try holdsScans(c)
                return (settled.0 - before.0, settled.1 - admitted.1)
            }
        }
        let (sequential, fetchedBySettle) = scans
        #expect(sequential == 0)
        #expect(fetchedBySettle == 2) // its two holds, looked up by id, and none of the 22 others
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: BudgetPeriod(containingMicros: now)))
        #expect(status.spent == Money(nanos: 10) && status.held == Money(nanos: 2))
    }

    @Test func aBatchOfSettlesLosesNoGoodMemberToABadOne() async throws {
        let (store, anyDatabase, _) = try await Backend.postgres.makeStore()
        let database = try #require(anyDatabase as? PGDatabase)
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "S", email: "s@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        for id in ["g1", "g2"] { _ = try await store.hold(holdRequest(id, customer: customer.id, amount: 10)) }
        // A customer that does not exist: its period row cannot be written.
        let results = try await PostgresBatching.settle(database, [
            usage("g1", customer: customer.id, cost: 4), usage("bad", customer: 999_999, cost: 4),
            usage("g2", customer: customer.id, cost: 6),
        ])
        #expect(try results[0].get() == .settled && (try results[2].get()) == .settled)
        #expect((try? results[1].get()) == nil)
        let status = try #require(try await store.budgetStatus(customerId: customer.id, period: BudgetPeriod(containingMicros: nowMicros())))
        #expect(status.spent == Money(nanos: 10) && status.held == .zero)
    }

    @Test(arguments: Backend.allCases)
    func rollupsEqualTheLedgerAfterConcurrentSettles(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "R", email: "r@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<300 {
                group.addTask {
                    let id = "r\(i)"
                    _ = try await store.hold(holdRequest(id, customer: customer.id, amount: 1_000))
                    _ = try await store.settle(holdId: id, usage: usage(id, customer: customer.id, model: i % 3 == 0 ? "a" : "b",
                                                                        cost: Int64(i), prompt: Int64(i % 7), completion: 2))
                    if i % 10 == 0 { // a second settle of the same request changes nothing
                        _ = try await store.settle(holdId: id, usage: usage(id, customer: customer.id, cost: 999_999))
                    }
                }
            }
            try await group.waitForAll()
        }
        // A hold released as expired and then settled replaces its row: the rollups follow.
        _ = try await store.hold(holdRequest("late", customer: customer.id, amount: 5, now: nowMicros() - 2_000_000, expiresIn: 1))
        _ = try await store.releaseExpiredHolds(nowMicros: nowMicros(), limit: 10)
        #expect(try await store.settle(holdId: "late", usage: usage("late", customer: customer.id, cost: 5)) == .settledWithoutHold)
        let ledger = try await ledgerSums(database, customer: customer.id)
        #expect(ledger[0] == 301)
        #expect(try await rollupSums(database, customer: customer.id) == ledger)
        let report = try await store.usageReport(customerId: customer.id, range: DayRange(start: nil, end: nil))
        #expect(report.totalRequests == 301 && report.totalCost.nanos == ledger[3])
    }

    @Test(arguments: Backend.allCases)
    func archivingAMonthKeepsItsRowsInTheFileAndItsSumsInTheRollups(backend: Backend) async throws {
        let (store, database, _) = try await backend.makeStore()
        defer { Task { await store.close() } }
        let customer = try await store.createCustomer(name: "A", email: "a@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        let march = try #require(UTCDay(parsing: "2026-03-15")).startMicros
        for i in 0..<20 { try await store.recordUnheld(usage("m\(i)", customer: customer.id, cost: 3, at: march)) }
        for i in 0..<5 { try await store.recordUnheld(usage("n\(i)", customer: customer.id, cost: 7)) }
        try await store.prepareLedger(nowMicros: nowMicros())
        let before = try await store.usageReport(customerId: customer.id, range: DayRange(start: nil, end: nil))
        let archived = Collected()
        let count = try await store.archiveUsage(before: BudgetPeriod(year: 2026, month: 4), { archived.append($0.requestId) },
                                                 keep: {})
        #expect(count == 20 && archived.values.count == 20 && archived.values.allSatisfy { $0.hasPrefix("m") })
        #expect(try await ledgerSums(database, customer: customer.id)[0] == 5)
        let after = try await store.usageReport(customerId: customer.id, range: DayRange(start: nil, end: nil))
        #expect(after.totalRequests == before.totalRequests && after.totalCost == before.totalCost)
        #expect(try await store.archiveUsage(before: BudgetPeriod(year: 2026, month: 4), { _ in }, keep: {}) == 0)
        // A failure to keep the file leaves the ledger as it was.
        struct DiskFull: Error {}
        try await store.recordUnheld(usage("o", customer: customer.id, cost: 1, at: march))
        await #expect(throws: DiskFull.self) {
            _ = try await store.archiveUsage(before: BudgetPeriod(year: 2026, month: 4), { _ in }, keep: { throw DiskFull() })
        }
        #expect(try await ledgerSums(database, customer: customer.id)[0] == 6)
        // A row of the month arriving after it was read (a late settle) stops the removal.
        await #expect(throws: (any Error).self) {
            _ = try await store.archiveUsage(before: BudgetPeriod(year: 2026, month: 4), { _ in }, keep: {
                try await store.recordUnheld(usage("late-arrival", customer: customer.id, cost: 1, at: march))
            })
        }
        #expect(try await ledgerSums(database, customer: customer.id)[0] == 7)
        // So does a late settle that replaces its hold_expired row: the count stays, the row changes.
        _ = try await store.hold(holdRequest("expired", customer: customer.id, amount: 9, now: march, expiresIn: 1))
        #expect(try await store.releaseExpiredHolds(nowMicros: nowMicros(), limit: 10) == 1)
        await #expect(throws: (any Error).self) {
            _ = try await store.archiveUsage(before: BudgetPeriod(year: 2026, month: 4), { _ in }, keep: {
                _ = try await store.settle(holdId: "expired", usage: usage("expired", customer: customer.id, cost: 9, at: march))
            })
        }
        let charged = try await database.withConnection { c in
            try c.execute("SELECT cost_nanos, outcome FROM usage WHERE request_id = 'expired'").map { "\(try $0.int(0)) \(try $0.text(1))" }
        }
        #expect(charged == ["9 ok"])
        // With nothing arriving, the month goes whole.
        #expect(try await store.archiveUsage(before: BudgetPeriod(year: 2026, month: 4), { _ in }, keep: {}) == 3)
        #expect(try await ledgerSums(database, customer: customer.id)[0] == 5)
        // Months go one by one: when a later one changed, the error names those already removed.
        let february = try #require(UTCDay(parsing: "2026-02-10")).startMicros
        try await store.recordUnheld(usage("feb", customer: customer.id, cost: 1, at: february))
        try await store.recordUnheld(usage("mar", customer: customer.id, cost: 1, at: march))
        do {
            _ = try await store.archiveUsage(before: BudgetPeriod(year: 2026, month: 4), { _ in }, keep: {
                try await store.recordUnheld(usage("mar-late", customer: customer.id, cost: 1, at: march))
            })
            Issue.record("a month that changed must stop the archive")
        } catch {
            #expect("\(error)".contains("2026-03") && "\(error)".contains("2026-02 were removed"))
        }
        #expect(try await ledgerSums(database, customer: customer.id)[0] == 7) // 5 + mar + mar-late
    }
}
