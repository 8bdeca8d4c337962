import Core

/// A pool of connections to one database, lending a connection to a closure that runs on one of
/// the pool's own threads (never on the caller's event loop).
public protocol SQLDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// Runs `body` with a connection, off the event loop. Errors thrown by `body` pass through.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T
    /// Closes every connection and stops the pool's threads.
    func shutdown() async
    /// The pool's use, where there is a pool.
    var poolStatistics: PoolStatistics? { get }
}

extension SQLDatabase {
    public var poolStatistics: PoolStatistics? { nil }
}

extension SQLDatabase {
    /// Runs `body` in a write transaction, retrying it from the start after a deadlock or
    /// serialization failure (with jittered back-off); such failures never reach the caller.
    public func transaction<T: Sendable>(
        maxAttempts: Int = 10,
        _ body: @escaping @Sendable (any SQLConnection) throws -> T
    ) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await withConnection { connection in
                    try connection.inTransaction { try body($0) }
                }
            } catch SQLError.retryable(let reason) {
                guard attempt < maxAttempts else { throw SQLError.retryable(reason) }
                attempt += 1
                try await Task.sleep(nanoseconds: UInt64.random(in: 200_000...(2_000_000 * UInt64(attempt))))
            }
        }
    }
}
