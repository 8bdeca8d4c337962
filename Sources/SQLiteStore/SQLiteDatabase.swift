import Core
import NIOPosix
import SQLStore

/// A SQLite database file behind one connection and one dedicated thread.
///
/// SQLite allows one writer at a time anyway; funnelling this process's statements through one
/// thread serialises them without busy-waiting, while other processes (the CLI) coordinate with
/// us through SQLite's file locks and the busy timeout.
public final class SQLiteDatabase: SQLDatabase {
    public let dialect = SQLDialect.sqlite
    public let path: String
    private let threadPool: NIOThreadPool
    private let connection: SQLiteConnection
    private let groupCommit: SQLiteGroupCommit

    private init(path: String, threadPool: NIOThreadPool, connection: SQLiteConnection) {
        self.path = path
        self.threadPool = threadPool
        self.connection = connection
        self.groupCommit = SQLiteGroupCommit(threadPool: threadPool, connection: connection)
    }

    /// Opens (creating the file and its directory if needed) the database at `path`. `fullSync`:
    /// fsync every commit (`SQLITE_SYNCHRONOUS=FULL`); `busyTimeoutMillis`: how long a write
    /// waits for another process's lock.
    public static func open(path: String, fullSync: Bool = true, busyTimeoutMillis: Int = 10_000) async throws -> SQLiteDatabase {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        do {
            let connection = try await pool.runIfActive {
                try SQLiteConnection(path: path, fullSync: fullSync, busyTimeoutMillis: busyTimeoutMillis)
            }
            return SQLiteDatabase(path: path, threadPool: pool, connection: connection)
        } catch let error as SQLError {
            try? await pool.shutdownGracefully()
            throw error.storeError
        }
    }

    public func withConnection<T: Sendable>(priority: SQLPriority,
                                           _ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        let connection = self.connection
        return try await threadPool.runIfActive { try body(connection) }
    }

    /// Write transactions go through group commit: those that queue up share one fsync, and
    /// urgent ones (settles) join the next group ahead of the others.
    public func transaction<T: Sendable>(
        maxAttempts: Int = 10, durable: Bool = true, priority: SQLPriority = .normal,
        _ body: @escaping @Sendable (any SQLConnection) throws -> T
    ) async throws -> T {
        try await retryingConflicts(maxAttempts: maxAttempts) {
            try await groupCommit.run(durable: durable, urgent: priority == .urgent, body)
        }
    }

    /// `PRAGMA data_version` of this process's connection: it changes when another process
    /// commits to the file, never for this process's own commits.
    public func dataVersion() async throws -> Int64 {
        let connection = self.connection
        return try await threadPool.runIfActive { try connection.dataVersion() }
    }

    public func shutdown() async {
        try? await threadPool.shutdownGracefully()
    }
}

/// The store on SQLite.
public typealias SQLiteStore = SQLStore<SQLiteDatabase>
