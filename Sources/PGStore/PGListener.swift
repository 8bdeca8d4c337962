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
/// answering is the one that ran `LISTEN` (a transaction-mode pooler), or that it is in the
/// database the writers use.
///
/// `@unchecked Sendable`: the connection is created, used and closed only by the listener's own
/// thread; the stop flag is guarded by a lock.
public final class PGListener: @unchecked Sendable {
    private let conninfo: String
    private let channel: String
    private let logger: Logger
    private let lock = NSLock()
    private var stopped = false
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
        while !isStopped {
            guard let connection = connect() else {
                Thread.sleep(forTimeInterval: Double(backoffMillis) / 1000)
                backoffMillis = min(backoffMillis * 2, 2000)
                continue
            }
            backoffMillis = 100
            handle(.connected)
            listen(on: connection, handle)
            PQfinish(connection)
            if !isStopped {
                handle(.disconnected)
                logger.warning("change listener lost its database connection; reconnecting")
            }
        }
    }

    private func connect() -> OpaquePointer? {
        guard let connection = PGConnection.connect(conninfo, connectTimeoutSeconds: 10) else { return nil }
        guard PQstatus(connection) == CONNECTION_OK else {
            PQfinish(connection)
            return nil
        }
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        let result = PQexec(connection, "LISTEN \(channel)")
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COMMAND_OK else {
            PQfinish(connection)
            return nil
        }
        return connection
    }

    /// Waits on the socket and hands every notification over, with a round trip every 5 s to
    /// find a dead connection, until the connection fails or the listener stops.
    private func listen(on connection: OpaquePointer, _ handle: @Sendable (ChangeEvent) -> Void) {
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
                let result = PQexec(connection, "SELECT 1")
                let ok = PQresultStatus(result) == PGRES_TUPLES_OK
                PQclear(result)
                guard ok else { return }
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
