import Core
import NIOConcurrencyHelpers
import NIOPosix
import SQLStore

/// A bounded pool of libpq connections to one PostgreSQL database.
///
/// Each lent connection runs its closure on one of the pool's own threads (as many threads as
/// connections), so blocking libpq calls never touch an event loop. When every connection is
/// busy, callers queue for up to `waitMillis` and then fail with `StoreError.poolExhausted`
/// rather than hang. Broken connections are dropped and replaced on the next request.
public final class PGDatabase: SQLDatabase {
    public let dialect = SQLDialect.postgres
    public let conninfo: String
    public let size: Int
    public let waitMillis: Int
    private let threadPool: NIOThreadPool
    private let state = NIOLockedValueBox(PoolState())

    struct PoolState {
        var idle: [PGConnection] = []
        var open = 0
        var waiters: [(id: Int, continuation: CheckedContinuation<PGConnection?, Error>)] = []
        var nextWaiterId = 0
        var isShutDown = false
        /// How many callers are waiting, for metrics.
        var waiting: Int { waiters.count }
    }

    /// Creates the pool and checks that the database answers, so a bad URL fails at once.
    public static func connect(conninfo: String, size: Int = 10, waitMillis: Int = 2000) async throws -> PGDatabase {
        let database = PGDatabase(conninfo: conninfo, size: size, waitMillis: waitMillis)
        do {
            _ = try await database.withConnection { try $0.execute("SELECT 1") }
        } catch {
            await database.shutdown()
            if let error = error as? SQLError { throw error.storeError }
            throw error
        }
        return database
    }

    private init(conninfo: String, size: Int, waitMillis: Int) {
        self.conninfo = conninfo
        self.size = size
        self.waitMillis = waitMillis
        self.threadPool = NIOThreadPool(numberOfThreads: size)
        self.threadPool.start()
    }

    /// Connections open, idle, and callers waiting, for metrics.
    public var poolStatistics: PoolStatistics? {
        state.withLockedValue { PoolStatistics(open: $0.open, idle: $0.idle.count, waiting: $0.waiting) }
    }

    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        let connection = try await acquire()
        do {
            let result = try await threadPool.runIfActive { try body(connection) }
            release(connection)
            return result
        } catch {
            release(connection)
            throw error
        }
    }

    public func shutdown() async {
        let idle = state.withLockedValue { state -> [PGConnection] in
            state.isShutDown = true
            let idle = state.idle
            state.open -= idle.count
            state.idle = []
            for waiter in state.waiters { waiter.continuation.resume(throwing: SQLError.connectionFailed("pool shut down")) }
            state.waiters = []
            return idle
        }
        _ = idle // closed by deinit when released here
        try? await threadPool.shutdownGracefully()
    }

    // MARK: Lending

    private enum Acquisition {
        case ready(PGConnection)
        case create
        case wait(Int)
    }

    private func acquire() async throws -> PGConnection {
        while true {
            let step = try state.withLockedValue { state throws -> Acquisition in
                if state.isShutDown { throw SQLError.connectionFailed("pool shut down") }
                if let connection = state.idle.popLast() { return .ready(connection) }
                if state.open < size {
                    state.open += 1
                    return .create
                }
                state.nextWaiterId += 1
                return .wait(state.nextWaiterId)
            }
            switch step {
            case .ready(let connection):
                if connection.isHealthy { return connection }
                state.withLockedValue { $0.open -= 1 } // dropped; try again
            case .create:
                do {
                    let conninfo = self.conninfo
                    return try await threadPool.runIfActive { try PGConnection(conninfo: conninfo) }
                } catch {
                    state.withLockedValue { $0.open -= 1 }
                    throw error
                }
            case .wait(let id):
                if let connection = try await waitForConnection(id: id) { return connection }
            }
        }
    }

    /// Parks until a connection is released (or a slot frees: `nil`, try again) or time runs out.
    private func waitForConnection(id: Int) async throws -> PGConnection? {
        let timeout = Task { [waitMillis, state] in
            try await Task.sleep(nanoseconds: UInt64(waitMillis) * 1_000_000)
            let waiter = state.withLockedValue { state -> CheckedContinuation<PGConnection?, Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: SQLError.connectionFailed(
                "no database connection free within \(waitMillis) ms (pool of \(self.size))"))
        }
        defer { timeout.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            state.withLockedValue { $0.waiters.append((id, continuation)) }
        }
    }

    private func release(_ connection: PGConnection) {
        let healthy = connection.isHealthy && connection.isIdle
        let waiter = state.withLockedValue { state -> (CheckedContinuation<PGConnection?, Error>, PGConnection?)? in
            if !healthy || state.isShutDown {
                state.open -= 1
                // A slot is free: let the first waiter open a fresh connection.
                guard !state.waiters.isEmpty else { return nil }
                return (state.waiters.removeFirst().continuation, nil)
            }
            if !state.waiters.isEmpty { return (state.waiters.removeFirst().continuation, connection) }
            state.idle.append(connection)
            return nil
        }
        if let (continuation, handed) = waiter { continuation.resume(returning: handed) }
    }
}

/// The store on PostgreSQL.
public typealias PGStore = SQLStore<PGDatabase>
