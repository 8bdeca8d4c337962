import Core
import Foundation
import PGStore
import SQLStore
import Synchronization
import TestSupport
import Testing

/// A key's budget set on PostgreSQL while one of its requests is being admitted, in both orders
/// the two can take the customer's month row in. The interleaving is forced, not hoped for: a
/// third connection holds the row while the admission and the set-limits queue for it, in the
/// order the test chooses, and the test lets go only once both are seen waiting.
extension LimitsTests {
    enum AdmissionPath: String, CaseIterable, Sendable {
        /// A key without limits: 0009's single-request path.
        case lone
        /// A key with a request limit: the general function.
        case general
    }

    /// The raced request asks for 40 (fits the new budget beside the 5 spent) or 96 (does not).
    /// Admitted before the budget, it counts against it whatever it asked; admitted after, it
    /// must fit. Either way the customer's month and the key's agree with the holds.
    @Test(arguments: AdmissionPath.allCases, [(true, 40), (true, 96), (false, 40), (false, 96)] as [(Bool, Int64)])
    func aKeyBudgetSetWhileARequestQueuesForTheMonthCountsThatRequest(path: AdmissionPath, race: (admissionFirst: Bool, amount: Int64))
        async throws
    {
        let (store, database, url) = try await Backend.postgres.makeStore()
        defer { Task { await store.close() } }
        let ids = try await customerWithKey(store, budget: 1_000_000)
        if path == .general {
            _ = try await store.setLimits(keyId: ids.key, LimitChange(requestsPerMinute: .some(1000)))
        }
        let now = nowMicros()
        let month = BudgetPeriod(containingMicros: now)
        // The month's row exists, so the lone path can take the request.
        #expect(admitted(try await burst(store, [hold("first", ids, amount: 5, now: now)])) == 1)
        var first = usage("first", customer: ids.customer, cost: 5, at: now)
        first.keyId = ids.key
        _ = try await store.settle(holdId: "first", usage: first)

        // Lock waiters in this test's own database (each test gets a fresh one).
        func waiting() async throws -> Int64 {
            try await database.withConnection {
                try $0.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")[0].int(0)
            }
        }
        func untilWaiting(_ count: Int64) async throws {
            for _ in 0..<1000 where try await waiting() < count { try await Task.sleep(for: .milliseconds(10)) }
            #expect(try await waiting() == count)
        }
        let admit = { try await store.hold(self.hold("raced", ids, amount: race.amount, now: now)) }
        let setBudget = { _ = try await store.setLimits(keyId: ids.key, LimitChange(monthlyBudget: .some(Money(nanos: 100)))) }
        let gate = try await MonthRowGate.close(url: url, customerId: ids.customer, period: month)
        let admission: Task<HoldDecision, Error>
        let setting: Task<Void, Error>
        do {
            if race.admissionFirst {
                admission = Task { try await admit() }
                try await untilWaiting(1)
                setting = Task { try await setBudget() }
            } else {
                setting = Task { try await setBudget() }
                try await untilWaiting(1)
                admission = Task { try await admit() }
            }
            try await untilWaiting(2)
        } catch {
            try await gate.open()
            throw error
        }
        try await gate.open()
        let fits = race.admissionFirst || 5 + race.amount <= 100
        #expect(admitted([try await admission.value]) == (fits ? 1 : 0))
        try await setting.value

        // Admitted, the request is the key's: its hold carries its share, and both months hold it.
        let held = fits ? race.amount : 0
        let shares = try await database.withConnection {
            try $0.execute("SELECT key_nanos FROM holds WHERE id = 'raced'").map { try $0.int(0) }
        }
        #expect(shares == (fits ? [race.amount] : []))
        var standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.spent == Money(nanos: 5))
        #expect(standing.held == Money(nanos: held))
        var customer = try #require(try await store.budgetStatus(customerId: ids.customer, period: month))
        #expect(customer.spent == Money(nanos: 5))
        #expect(customer.held == Money(nanos: held))
        guard fits else { return }
        // What is left of the key's 100 is all another request can have.
        let left = 100 - 5 - race.amount
        #expect(admitted(try await burst(store, [hold("over", ids, amount: max(left, 0) + 1, now: now)])) == 0)
        var raced = usage("raced", customer: ids.customer, cost: 30, at: now)
        raced.keyId = ids.key
        _ = try await store.settle(holdId: "raced", usage: raced)
        standing = try #require(try await store.keyStanding(keyId: ids.key, nowMicros: now))
        #expect(standing.spent == Money(nanos: 35))
        #expect(standing.held == Money(nanos: 0))
        customer = try #require(try await store.budgetStatus(customerId: ids.customer, period: month))
        #expect(customer.spent == Money(nanos: 35))
        #expect(customer.held == Money(nanos: 0))
    }
}

/// A customer's month row held locked by a connection of its own, until `open`.
private struct MonthRowGate {
    private final class Flags: Sendable {
        let locked = Mutex(false)
        let open = Mutex(false)
    }

    private let pool: PGDatabase
    private let flags: Flags
    private let holding: Task<Void, Error>

    /// Returns once the row is locked.
    static func close(url: String, customerId: Int64, period: BudgetPeriod) async throws -> MonthRowGate {
        let pool = try await PGDatabase.connect(conninfo: url, size: 1)
        let flags = Flags()
        let holding = Task {
            try await pool.withConnection { c in
                try c.inTransaction { c in
                    _ = try c.execute("SELECT held_nanos FROM budget_periods WHERE customer_id = $1 AND period = $2 FOR UPDATE",
                                      .int(customerId), .text(period.description))
                    flags.locked.withLock { $0 = true }
                    // A thread of the gate's own pool: waiting here blocks nothing else. A minute
                    // at most, so that a test that never opens it fails instead of hanging.
                    for _ in 0..<12_000 where !flags.open.withLock({ $0 }) { usleep(5_000) }
                }
            }
        }
        for _ in 0..<2000 where !flags.locked.withLock({ $0 }) {
            try await Task.sleep(for: .milliseconds(5))
        }
        guard flags.locked.withLock({ $0 }) else {
            flags.open.withLock { $0 = true }
            try await holding.value // its error, if it failed
            throw SQLError.other("the gate could not lock the month row within 10 s")
        }
        return MonthRowGate(pool: pool, flags: flags, holding: holding)
    }

    /// Commits the gate's transaction, letting the row go to the first in line.
    func open() async throws {
        flags.open.withLock { $0 = true }
        try await holding.value
        await pool.shutdown()
    }
}
