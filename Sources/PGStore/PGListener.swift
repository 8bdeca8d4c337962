import CLibPQ
import Core
import Foundation
import Logging
import SQLStore

/// Listens for change notices on a dedicated libpq connection and its own thread (never an
/// event loop), reconnecting with back-off when the connection dies. Each (re)connection is
/// reported as `.connected` so caches flush whatever they might have missed.
///
/// With `confirmEvery`, a round trip (`SELECT 1`) on the listening connection at that interval
/// is reported as `.unchanged(asOf:)` the moment it was sent: a committing transaction signals
/// every listening backend before its client learns of the commit, and a backend sends the
/// notices it was signalled for before it answers its next query, so every notice committed
/// before the round trip was sent has been handed over before its answer. (Migration 0008's
/// triggers make every change a cache depends on notify, whoever commits it.) Without it, the
/// same round trip runs every 5 s only to find a dead connection.
///
/// `@unchecked Sendable`: the connection is created, used and closed only by the listener's own
/// thread; the stop flag is guarded by a lock.
public final class PGListener: @unchecked Sendable {
    private let conninfo: String
    private let channel: String
    private let confirmEvery: Duration?
    private let logger: Logger
    private let lock = NSLock()
    private var stopped = false
    private var thread: Thread?

    public init(conninfo: String, channel: String = ChangeNotice.channel, confirmEvery: Duration? = nil, logger: Logger) {
        self.conninfo = conninfo
        self.channel = channel
        self.confirmEvery = confirmEvery
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
        guard let connection = PQconnectdb(conninfo) else { return nil }
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

    /// Waits on the socket and hands every notification over, with a round trip every
    /// `confirmEvery` (or 5 s), until the connection fails or the listener stops.
    private func listen(on connection: OpaquePointer, _ handle: @Sendable (ChangeEvent) -> Void) {
        let socket = PQsocket(connection)
        let roundTripEvery = confirmEvery ?? .seconds(5)
        var nextRoundTrip = ContinuousClock.now + roundTripEvery
        while !isStopped {
            let untilRoundTrip = max(.zero, min(.milliseconds(500), nextRoundTrip - .now))
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(untilRoundTrip / .milliseconds(1)))
            if ready < 0 && errno != EINTR { return }
            if ready > 0 {
                guard PQconsumeInput(connection) == 1 else { return }
                handOver(connection, handle)
            }
            if ContinuousClock.now >= nextRoundTrip {
                // Taken before the query is sent: what was committed before this instant is
                // among the notices read with the answer (see the type's comment).
                let sent = ContinuousClock.now
                let result = PQexec(connection, "SELECT 1")
                let ok = PQresultStatus(result) == PGRES_TUPLES_OK
                PQclear(result)
                guard ok else { return }
                handOver(connection, handle)
                if confirmEvery != nil { handle(.unchanged(asOf: sent)) }
                nextRoundTrip = sent + roundTripEvery
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
