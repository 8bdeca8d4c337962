import Core
import Foundation
import PGStore
import SQLStore
import TestSupport
import Testing

/// Records the order in which pooled closures ran.
final class OrderLog: @unchecked Sendable {
    private let lock = NSLock()
    private var log: [String] = []
    func append(_ entry: String) { lock.withLock { log.append(entry) } }
    var entries: [String] { lock.withLock { log } }
}

@Suite("PostgreSQL pool")
struct PoolTests {
    @Test func anExhaustedPoolFailsAfterItsWaitInsteadOfHanging() async throws {
        let url = try await TestDatabases.freshPostgresURL()
        let pool = try await PGDatabase.connect(conninfo: url, size: 1, waitMillis: 100)
        // The query holds the only connection for 3 s; the waiter's limit is 100 ms. The bound
        // below sits between the two with room for a loaded machine (a CI run once took 1.04 s
        // to fail the waiter while every core was busy with other suites).
        let busy = Task { try await pool.withConnection { try $0.execute("SELECT pg_sleep(3)") } }
        try await Task.sleep(for: .milliseconds(200))
        #expect(pool.poolStatistics == PoolStatistics(open: 1, idle: 0, waiting: 0))
        let started = ContinuousClock.now
        do {
            _ = try await pool.withConnection { try $0.execute("SELECT 1") }
            Issue.record("the waiter got a connection")
        } catch SQLError.poolExhausted {
            // The pool says it is busy, not that the database is unreachable.
        }
        #expect(ContinuousClock.now - started < .milliseconds(2500), "the waiter should give up after its wait, not the query")
        _ = try await busy.value
        // Once the connection is back, it is lent again.
        #expect(try await pool.withConnection { try $0.execute("SELECT 2")[0].int(0) } == 2)
        await pool.shutdown()
    }

    @Test func aBurstOnOneConnectionIsServedWithoutWaitingOutTheLimit() async throws {
        let url = try await TestDatabases.freshPostgresURL()
        // A release that lands while a caller is deciding to wait must reach it: with the wait
        // at 30 s, any lost wake-up would fail the burst's time budget below many times over.
        let pool = try await PGDatabase.connect(conninfo: url, size: 1, waitMillis: 30_000)
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Int64.self) { group in
            for i in 0..<300 { group.addTask { try await pool.withConnection { try $0.execute("SELECT $1::bigint", .int(Int64(i)))[0].int(0) } } }
            let sum = try await group.reduce(0, +)
            #expect(sum == (0..<300).reduce(0, +))
        }
        #expect(ContinuousClock.now - started < .seconds(25))
        await pool.shutdown()
    }

    @Test func urgentCallersAreServedBeforeNormalOnes() async throws {
        let url = try await TestDatabases.freshPostgresURL()
        let pool = try await PGDatabase.connect(conninfo: url, size: 1, waitMillis: 60_000)
        let order = OrderLog()
        // The pool's only connection waits on an advisory lock another session holds, so it is
        // busy exactly until that session lets go.
        let gate = try await PGDatabase.connect(conninfo: url, size: 1)
        _ = try await gate.withConnection { try $0.execute("SELECT pg_advisory_lock(42)") }
        let busy = Task { try await pool.withConnection { try $0.execute("SELECT pg_advisory_lock(42); ") } }
        func waiting(_ n: Int) async throws {
            while pool.poolStatistics?.idle != 0 || pool.poolStatistics?.waiting != n { try await Task.sleep(for: .milliseconds(5)) }
        }
        try await waiting(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<5 {
                group.addTask { _ = try await pool.withConnection { c in order.append("normal\(i)"); return try c.execute("SELECT 1") } }
            }
            try await waiting(5) // the normal ones are parked first
            group.addTask { _ = try await pool.withConnection(priority: .urgent) { c in order.append("urgent"); return try c.execute("SELECT 1") } }
            try await waiting(6)
            _ = try await gate.withConnection { try $0.execute("SELECT pg_advisory_unlock(42)") }
            try await group.waitForAll()
        }
        _ = try await busy.value
        #expect(order.entries.first == "urgent")
        await gate.shutdown()
        await pool.shutdown()
    }

    @Test func brokenConnectionsAreReplaced() async throws {
        let url = try await TestDatabases.freshPostgresURL()
        let pool = try await PGDatabase.connect(conninfo: url, size: 2, waitMillis: 1000)
        let name = String(url.split(separator: "/").last!)
        let admin = try await PGDatabase.connect(conninfo: try TestDatabases.postgresAdminURL(), size: 1)
        _ = try await admin.withConnection {
            try $0.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", .text(name))
        }
        await admin.shutdown()
        // The first use finds the connection dead and drops it; the next gets a fresh one.
        _ = try? await pool.withConnection { try $0.execute("SELECT 1") }
        #expect(try await pool.withConnection { try $0.execute("SELECT 3")[0].int(0) } == 3)
        await pool.shutdown()
    }
}

@Suite("PostgreSQL: connection failures say why without the password")
struct ConnectFailureTests {
    /// An unparsable string (libpq quotes it, password included, in a message nothing marks as
    /// holding one), and a refused connection (whose message names the host).
    @Test(arguments: [("postgresql://app:s3%cret@127.0.0.1:1/lmsvr", "cret", "percent-encoded"),
                      ("postgresql://app:s3cret-pw@127.0.0.1:1/lmsvr", "s3cret-pw", "127.0.0.1")])
    func theMessageSaysWhyWithoutThePassword(conninfo: String, secret: String, reason: String) async throws {
        do {
            _ = try await PGDatabase.connect(conninfo: conninfo, size: 1)
            Issue.record("connected to \(conninfo)")
        } catch {
            let text = "\(error)"
            #expect(!text.contains(secret) && text.contains(reason), "\(text)")
        }
    }
}
