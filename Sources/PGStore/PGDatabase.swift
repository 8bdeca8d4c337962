import Core
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SQLStore

/// A bounded pool of libpq connections to one PostgreSQL database.
///
/// Each lent connection runs its closure on one of the pool's own threads (as many threads as
/// connections), so blocking libpq calls never touch an event loop. When every connection is
/// busy, callers queue for up to `waitMillis` (settles, `.urgent`, ahead of the rest) and then
/// fail with `SQLError.poolExhausted` rather than hang. Broken connections are dropped and
/// replaced on the next request.
public final class PGDatabase: SQLDatabase {
    public let dialect = SQLDialect.postgres
    public let conninfo: String
    public let size: Int
    public let waitMillis: Int
    /// Whether statements are prepared once per connection (see `connect`).
    public let preparesStatements: Bool
    private let threadPool: NIOThreadPool
    private let state = NIOLockedValueBox(PoolState())

    struct PoolState {
        var idle: [PGConnection] = []
        var open = 0
        /// Callers waiting for a connection: settles (urgent) are served before anything else.
        var urgent: [Waiter] = []
        var normal: [Waiter] = []
        var nextWaiterId = 0
        var isShutDown = false
        /// How many callers are waiting, for metrics.
        var waiting: Int { urgent.count + normal.count }

        mutating func nextWaiter() -> Waiter? {
            if !urgent.isEmpty { return urgent.removeFirst() }
            if !normal.isEmpty { return normal.removeFirst() }
            return nil
        }

        mutating func removeWaiter(id: Int) -> Waiter? {
            if let index = urgent.firstIndex(where: { $0.id == id }) { return urgent.remove(at: index) }
            if let index = normal.firstIndex(where: { $0.id == id }) { return normal.remove(at: index) }
            return nil
        }
    }

    /// A parked caller: resumed with a connection, with `.create` (a slot freed up), or an error
    /// when its wait (a timer on an event loop, cancelled when it is served) runs out.
    struct Waiter {
        let id: Int
        let continuation: CheckedContinuation<Lend, Error>
        var timeout: Scheduled<Void>?

        func resume(_ lend: Lend) {
            timeout?.cancel()
            continuation.resume(returning: lend)
        }

        func fail(_ error: Error) {
            timeout?.cancel()
            continuation.resume(throwing: error)
        }
    }

    enum Lend {
        case ready(PGConnection)
        case create
    }

    /// Creates the pool and checks that the database answers, so a bad URL fails at once.
    /// `preparesStatements: false` is for a transaction-mode pooler: every statement is sent
    /// unnamed, so none depends on a server session outliving its transaction.
    public static func connect(conninfo: String, size: Int = 10, waitMillis: Int = 2000,
                               preparesStatements: Bool = true) async throws -> PGDatabase {
        let database = PGDatabase(conninfo: conninfo, size: size, waitMillis: waitMillis, preparesStatements: preparesStatements)
        do {
            _ = try await database.withConnection { try $0.execute("SELECT 1") }
        } catch {
            await database.shutdown()
            if let error = error as? SQLError { throw error.storeError }
            throw error
        }
        return database
    }

    private init(conninfo: String, size: Int, waitMillis: Int, preparesStatements: Bool) {
        self.conninfo = conninfo
        self.preparesStatements = preparesStatements
        self.size = size
        self.waitMillis = waitMillis
        self.threadPool = NIOThreadPool(numberOfThreads: size)
        self.threadPool.start()
    }

    /// Connections open, idle, and callers waiting, for metrics.
    public var poolStatistics: PoolStatistics? {
        state.withLockedValue { PoolStatistics(open: $0.open, idle: $0.idle.count, waiting: $0.waiting) }
    }

    public func withConnection<T: Sendable>(priority: SQLPriority,
                                           _ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        let connection = try await acquire(priority: priority)
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
            while let waiter = state.nextWaiter() { waiter.fail(SQLError.connectionFailed("pool shut down")) }
            return idle
        }
        _ = idle // closed by deinit when released here
        try? await threadPool.shutdownGracefully()
    }

    // MARK: Lending

    private func acquire(priority: SQLPriority) async throws -> PGConnection {
        while true {
            switch try await lend(priority: priority) {
            case .ready(let connection):
                if connection.isHealthy { return connection }
                state.withLockedValue { $0.open -= 1 } // dropped; try again
            case .create:
                do {
                    let conninfo = self.conninfo, prepares = self.preparesStatements
                    return try await threadPool.runIfActive { try PGConnection(conninfo: conninfo, preparesStatements: prepares) }
                } catch {
                    state.withLockedValue { $0.open -= 1 }
                    // A slot is free again: a parked caller may open one.
                    wakeOneForSlot()
                    throw error
                }
            }
        }
    }

    /// An idle connection, a free slot to open one in, or a place in line (urgent callers ahead
    /// of normal ones) until one of those comes up or the wait runs out. The decision and the
    /// parking happen under one lock, so a release cannot slip in between and leave the caller
    /// waiting beside an idle connection.
    private func lend(priority: SQLPriority) async throws -> Lend {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lend, Error>) in
            state.withLockedValue { state in
                if state.isShutDown {
                    continuation.resume(throwing: SQLError.connectionFailed("pool shut down"))
                } else if let connection = state.idle.popLast() {
                    continuation.resume(returning: .ready(connection))
                } else if state.open < size {
                    state.open += 1
                    continuation.resume(returning: .create)
                } else {
                    state.nextWaiterId += 1
                    var waiter = Waiter(id: state.nextWaiterId, continuation: continuation)
                    // An event-loop timer, not a task: it fires on time however busy the
                    // cooperative thread pool is.
                    let id = waiter.id, box = self.state, waitMillis = self.waitMillis, size = self.size
                    waiter.timeout = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .milliseconds(Int64(waitMillis))) {
                        box.withLockedValue { $0.removeWaiter(id: id) }?.fail(SQLError.poolExhausted(
                            "no database connection free within \(waitMillis) ms (pool of \(size))"))
                    }
                    if priority == .urgent { state.urgent.append(waiter) } else { state.normal.append(waiter) }
                }
            }
        }
    }

    private func release(_ connection: PGConnection) {
        let healthy = connection.isHealthy && connection.isIdle
        let handOff = state.withLockedValue { state -> (Waiter, Lend)? in
            if !healthy || state.isShutDown {
                state.open -= 1
                // A slot is free: let the first waiter open a fresh connection.
                guard !state.isShutDown, let waiter = state.nextWaiter() else { return nil }
                state.open += 1
                return (waiter, .create)
            }
            if let waiter = state.nextWaiter() { return (waiter, .ready(connection)) }
            state.idle.append(connection)
            return nil
        }
        if let (waiter, lend) = handOff { waiter.resume(lend) }
    }

    private func wakeOneForSlot() {
        let waiter = state.withLockedValue { state -> Waiter? in
            guard !state.isShutDown, state.open < size, let waiter = state.nextWaiter() else { return nil }
            state.open += 1
            return waiter
        }
        waiter?.resume(.create)
    }
}

/// The store on PostgreSQL.
public typealias PGStore = SQLStore<PGDatabase>
