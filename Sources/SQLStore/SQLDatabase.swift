import Core
import EventLoopClock

/// Who gets the database first when callers queue: a settle frees budget and must never wait
/// behind new holds, which ask for it.
public enum SQLPriority: Sendable, Equatable {
    case normal
    case urgent
}

/// A pool of connections to one database, lending a connection to a closure that runs on one of
/// the pool's own threads (never on the caller's event loop).
public protocol SQLDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// Runs `body` with a connection, off the event loop. Errors thrown by `body` pass through.
    func withConnection<T: Sendable>(priority: SQLPriority,
                                     _ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T
    /// Closes every connection and stops the pool's threads.
    func shutdown() async
    /// The pool's use, where there is a pool.
    var poolStatistics: PoolStatistics? { get }
    /// Runs `body` in a write transaction, retrying it from the start after a deadlock or
    /// serialization failure (with jittered back-off); such failures never reach the caller.
    /// `durable: false` lets SQLite skip the fsync of this commit (see `SQLStore.hold`).
    func transaction<T: Sendable>(maxAttempts: Int, durable: Bool, priority: SQLPriority,
                                  _ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T
}

extension SQLDatabase {
    /// `withConnection` at normal priority.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        try await withConnection(priority: .normal, body)
    }
}

extension SQLDatabase {
    public var poolStatistics: PoolStatistics? { nil }
}

extension SQLDatabase {
    /// One transaction per call, on a connection from `withConnection`. Every commit is durable
    /// (`durable` only matters to SQLite's group commit).
    public func transaction<T: Sendable>(
        maxAttempts: Int = 10, durable: Bool = true, priority: SQLPriority = .normal,
        _ body: @escaping @Sendable (any SQLConnection) throws -> T
    ) async throws -> T {
        try await retryingConflicts(maxAttempts: maxAttempts) {
            try await withConnection(priority: priority) { connection in
                try connection.inTransaction { try body($0) }
            }
        }
    }
}

/// Runs `attempt` again after a deadlock or serialization failure (with jittered back-off), up
/// to `maxAttempts` times; other errors pass through at once.
public func retryingConflicts<T>(maxAttempts: Int, _ attempt: () async throws -> T) async throws -> T {
    var tries = 1
    while true {
        do {
            return try await attempt()
        } catch SQLError.retryable(let reason) {
            guard tries < maxAttempts else { throw SQLError.retryable(reason) }
            tries += 1
            try await EventLoopClock.sleep(for: .nanoseconds(Int64.random(in: 200_000...(2_000_000 * Int64(tries)))))
        }
    }
}
