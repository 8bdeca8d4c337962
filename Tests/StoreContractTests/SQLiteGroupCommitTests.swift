import CSQLite
import Foundation
import SQLStore
import SQLiteStore
import TestSupport
import Testing

/// SQLite's group commit: concurrent write transactions share one COMMIT, yet each keeps its
/// own result and its own failure.
@Suite("SQLite group commit")
struct SQLiteGroupCommitTests {
    func openTable() async throws -> SQLiteDatabase {
        let database = try await SQLiteDatabase.open(path: TestDatabases.freshSQLitePath())
        _ = try await database.withConnection { try $0.executeScript("CREATE TABLE t (n INTEGER PRIMARY KEY)") }
        return database
    }

    @Test func concurrentTransactionsAllCommitWithTheirOwnResults() async throws {
        let database = try await openTable()
        let results = try await withThrowingTaskGroup(of: (Int64, Int64).self) { group in
            for n in 1...200 {
                group.addTask {
                    let echoed = try await database.transaction(maxAttempts: 10, durable: n % 2 == 0) { c in
                        try c.execute("INSERT INTO t (n) VALUES ($1) RETURNING n", .int(Int64(n))).first!.int(0)
                    }
                    return (Int64(n), echoed)
                }
            }
            return try await group.reduce(into: [(Int64, Int64)]()) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0.0 == $0.1 })
        let count = try await database.withConnection { try $0.execute("SELECT count(*) FROM t").first!.int(0) }
        #expect(count == 200)
        await database.shutdown()
    }

    @Test func aFailingMemberRollsBackAloneAndGetsItsOwnError() async throws {
        let database = try await openTable()
        let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
            for n in 1...100 {
                group.addTask {
                    do {
                        try await database.transaction(maxAttempts: 10, durable: true) { c in
                            try c.execute("INSERT INTO t (n) VALUES ($1)", .int(Int64(n)))
                            // Every tenth member fails after writing: its row must not survive.
                            if n % 10 == 0 { try c.execute("INSERT INTO t (n) VALUES ($1)", .int(Int64(n))) }
                        }
                        return (n, true)
                    } catch {
                        return (n, false)
                    }
                }
            }
            return await group.reduce(into: [(Int, Bool)]()) { $0.append($1) }
        }
        #expect(outcomes.filter { !$0.1 }.map(\.0).sorted() == Array(stride(from: 10, through: 100, by: 10)))
        let rows = try await database.withConnection { try $0.execute("SELECT n FROM t ORDER BY n").map { try $0.int(0) } }
        #expect(rows == (1...100).filter { $0 % 10 != 0 }.map(Int64.init))
        await database.shutdown()
    }

    /// On a full disk, an I/O error or no memory, SQLite ends the whole transaction by itself.
    /// Every member is then told what became of it: those undone with the transaction fail
    /// (and may retry), none is committed behind the group's back, and no caller that was told
    /// it failed finds its write committed.
    @Test func membersOfATransactionSQLiteEndedAreToldTheTruth() async throws {
        let database = try await openTable()
        let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
            for n in 1...200 {
                group.addTask {
                    do {
                        try await database.transaction(maxAttempts: 1, durable: true) { c in
                            try c.execute("INSERT INTO t (n) VALUES ($1)", .int(Int64(n)))
                            if n % 25 == 0 {
                                // What SQLite does by itself on SQLITE_FULL or SQLITE_IOERR.
                                try c.executeScript("ROLLBACK")
                                throw SQLError.other("simulated I/O error")
                            }
                        }
                        return (n, true)
                    } catch {
                        return (n, false)
                    }
                }
            }
            return await group.reduce(into: [(Int, Bool)]()) { $0.append($1) }
        }
        let rows = Set(try await database.withConnection { try $0.execute("SELECT n FROM t").map { try $0.int(0) } })
        for (n, succeeded) in outcomes {
            #expect(rows.contains(Int64(n)) == succeeded, "member \(n): told \(succeeded ? "committed" : "failed")")
        }
        #expect(outcomes.filter { $0.0 % 25 == 0 }.allSatisfy { !$0.1 })
        // The connection is in autocommit again: a transaction of its own begins and commits.
        _ = try await database.transaction(maxAttempts: 1, durable: true) { try $0.execute("INSERT INTO t (n) VALUES (1000)") }
        await database.shutdown()
    }

    /// One at a time, each transaction is a group of one and runs without a savepoint: a failure
    /// after a write must still undo that write and leave the connection ready for the next.
    @Test func aLoneFailingTransactionRollsBackEntirely() async throws {
        let database = try await openTable()
        for n in 1...6 {
            do {
                try await database.transaction(maxAttempts: 1, durable: n % 2 == 0) { c in
                    try c.execute("INSERT INTO t (n) VALUES ($1)", .int(Int64(n)))
                    if n % 3 == 0 { try c.execute("INSERT INTO t (n) VALUES ($1)", .int(Int64(n))) }
                }
                #expect(n % 3 != 0)
            } catch {
                #expect(n % 3 == 0)
            }
        }
        let rows = try await database.withConnection { try $0.execute("SELECT n FROM t ORDER BY n").map { try $0.int(0) } }
        #expect(rows == [1, 2, 4, 5])
        let open = try await database.withConnection { try $0.execute("SELECT 1").count }
        #expect(open == 1)
        // Still in autocommit: a transaction of its own begins and commits.
        _ = try await database.transaction(maxAttempts: 1, durable: true) { try $0.execute("INSERT INTO t (n) VALUES (7)") }
        await database.shutdown()
    }

    @Test func aNonDurableCommitDoesNotLeaveTheConnectionUnsynced() async throws {
        let database = try await openTable()
        func synchronous() async throws -> Int64 {
            try await database.withConnection { try $0.execute("PRAGMA synchronous").first!.int(0) }
        }
        _ = try await database.transaction(maxAttempts: 1, durable: false) { try $0.execute("INSERT INTO t (n) VALUES (1)") }
        #expect(try await synchronous() == 1) // NORMAL for the hold-like commit
        _ = try await database.transaction(maxAttempts: 1, durable: true) { try $0.execute("INSERT INTO t (n) VALUES (2)") }
        #expect(try await synchronous() == 2) // FULL again for the next durable one
        await database.shutdown()
    }

    /// SQLite's memory statistics take a process-wide mutex around every allocation; lmsvr turns
    /// them off before the first open, so SQLite has counted nothing after real work.
    @Test func sqliteKeepsNoMemoryStatistics() async throws {
        let database = try await openTable()
        _ = try await database.transaction(maxAttempts: 1, durable: true) { try $0.execute("INSERT INTO t (n) VALUES (1)") }
        #expect(sqlite3_memory_used() == 0)
        await database.shutdown()
    }

    @Test func transactionsAfterShutdownFailInsteadOfHanging() async throws {
        let database = try await openTable()
        await database.shutdown()
        await #expect(throws: (any Error).self) {
            try await database.transaction(maxAttempts: 1, durable: true) { try $0.execute("INSERT INTO t (n) VALUES (1)") }
        }
    }
}
