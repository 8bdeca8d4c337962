import CLibPQ
import Core
import Foundation
import Logging
import SQLStore

/// Listens for change notices on a dedicated libpq connection and its own thread (never an
/// event loop), reconnecting with back-off when the connection dies. Each (re)connection is
/// reported as `.connected` so caches flush whatever they might have missed. A round trip
/// every 5 s finds a dead connection; the connection has the pool's TCP keepalives and user
/// timeout, so a half-open one fails within about half a minute.
///
/// That this connection hears what others commit is confirmed end to end elsewhere
/// (`ChangeConfirmer`): a round trip on it proves only that it answers, not that the session
/// answering is the one that ran `LISTEN`, or that it is in the database the writers use. And
/// only a session of the server's own counts (`hearsDirectly`): through a transaction-mode
/// pooler, notices reach whichever client holds the server connection at the time, so a marker
/// could come back while a revocation went to another client.
///
/// `@unchecked Sendable`: the connection is created, used and closed only by the listener's own
/// thread; the stop flag is guarded by a lock.
public final class PGListener: @unchecked Sendable {
    private let conninfo: String
    private let channel: String
    private let logger: Logger
    private let lock = NSLock()
    private var stopped = false
    private var direct = false
    private var thread: Thread?

    public init(conninfo: String, channel: String = ChangeNotice.channel, logger: Logger) {
        self.conninfo = conninfo
        self.channel = channel
        self.logger = logger
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    /// Whether the listening session is the server's own, not a connection pooler's: the
    /// backend pid the server reports equals the one in the connection's key data (a pooler
    /// sends its own). False while disconnected.
    public var hearsDirectly: Bool {
        lock.lock()
        defer { lock.unlock() }
        return direct
    }

    private func setDirect(_ value: Bool) {
        lock.lock()
        direct = value
        lock.unlock()
    }

    /// Starts the listening thread; `handle` is called on it for every event.
    public func start(_ handle: @escaping @Sendable (ChangeEvent) -> Void) {
        let thread = Thread { [self] in self.loop(handle) }
        thread.name = "lmsvr-listener"
        self.thread = thread
        thread.start()
    }

    /// Stops the thread within about half a second.
    public func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }

    private func loop(_ handle: @Sendable (ChangeEvent) -> Void) {
        var backoffMillis = 100
        var failing = false
        var warnedPooler = false
        while !isStopped {
            let connection: OpaquePointer, direct: Bool
            switch connect() {
            case .failure(let reason):
                // Once per run of failures: the caches stay off meanwhile, which operators should know.
                if !failing { logger.warning("change listener cannot listen; retrying", metadata: ["reason": "\(reason)"]) }
                failing = true
                Thread.sleep(forTimeInterval: Double(backoffMillis) / 1000)
                backoffMillis = min(backoffMillis * 2, 2000)
                continue
            case .success(let connected):
                (connection, direct) = connected
            }
            failing = false
            backoffMillis = 100
            if !direct && !warnedPooler {
                logger.warning("""
                    the change listener's session is not the server's own (a connection pooler or proxy answers for it): \
                    idle cached keys and prices are not renewed past CACHE_TTL_SECONDS, and through a transaction-mode \
                    pooler a revocation may take that long too; point DATABASE_DIRECT_URL at the server itself
                    """)
                warnedPooler = true
            }
            setDirect(direct)
            handle(.connected)
            // Notices read with the pid query were committed before `.connected` flushed the caches.
            handOver(connection, handle)
            listen(on: connection, handle, direct: direct)
            setDirect(false)
            PQfinish(connection)
            if !isStopped {
                handle(.disconnected)
                logger.warning("change listener lost its database connection; reconnecting")
            }
        }
    }

    /// Connects and LISTENs; then whether the session answering is the server process the
    /// connection started with (see `hearsDirectly`).
    private func connect() -> Result<(OpaquePointer, direct: Bool), ListenFailure> {
        guard let connection = PGConnection.connect(conninfo, connectTimeoutSeconds: 10) else {
            return .failure(ListenFailure(description: "out of memory"))
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            defer { PQfinish(connection) }
            return .failure(ListenFailure(description: PGConnection.connectFailure(connection, conninfo: conninfo)))
        }
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        let result = PQexec(connection, "LISTEN \(channel)")
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COMMAND_OK, let pid = Self.backendPID(connection) else {
            defer { PQfinish(connection) }
            return .failure(ListenFailure(description: PGConnection.connectFailure(connection, conninfo: conninfo)))
        }
        return .success((connection, direct: pid == PQbackendPID(connection)))
    }

    /// Why the listener could not listen, safe to log.
    struct ListenFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// The pid of the server process answering on `connection`, or nil if the query failed.
    private static func backendPID(_ connection: OpaquePointer) -> Int32? {
        let result = PQexec(connection, "SELECT pg_backend_pid()")
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_TUPLES_OK, PQntuples(result) == 1,
              let text = PQgetvalue(result, 0, 0) else { return nil }
        return Int32(String(cString: text))
    }

    /// Waits on the socket and hands every notification over, with a round trip every 5 s to
    /// find a dead connection (or, for a session of the server's own, one whose answering
    /// process changed), until the connection fails or the listener stops.
    private func listen(on connection: OpaquePointer, _ handle: @Sendable (ChangeEvent) -> Void, direct: Bool) {
        let socket = PQsocket(connection)
        var nextPing = ContinuousClock.now + .seconds(5)
        while !isStopped {
            let untilPing = max(.zero, min(.milliseconds(500), nextPing - .now))
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(untilPing / .milliseconds(1)))
            if ready < 0 && errno != EINTR { return }
            if ready > 0 {
                guard PQconsumeInput(connection) == 1 else { return }
                handOver(connection, handle)
            }
            if ContinuousClock.now >= nextPing {
                guard let pid = Self.backendPID(connection), !direct || pid == PQbackendPID(connection) else { return }
                handOver(connection, handle)
                nextPing = .now + .seconds(5)
            }
            if PQstatus(connection) != CONNECTION_OK { return }
        }
    }

    /// Hands over the notifications libpq has read, in the order they came.
    private func handOver(_ connection: OpaquePointer, _ handle: @Sendable (ChangeEvent) -> Void) {
        while let notify = PQnotifies(connection) {
            handle(.notice(String(cString: notify.pointee.extra)))
            PQfreemem(notify)
        }
    }
}
