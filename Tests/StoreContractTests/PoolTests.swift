import Core
import Foundation
import PGStore
import SQLStore
import TestSupport
import Testing

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
        await #expect(throws: SQLError.self) { _ = try await pool.withConnection { try $0.execute("SELECT 1") } }
        #expect(ContinuousClock.now - started < .milliseconds(2500), "the waiter should give up after its wait, not the query")
        _ = try await busy.value
        // Once the connection is back, it is lent again.
        #expect(try await pool.withConnection { try $0.execute("SELECT 2")[0].int(0) } == 2)
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
