import DequeModule
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A lean HTTP/1.1 client for one plain-HTTP upstream (an Ollama server): keep-alive
/// connections made on NIO's event loops, one exchange each at a time, the request written in
/// one flush, the response body read with backpressure and an idle timeout that counts only
/// upstream silence.
///
/// It does what a gateway's hot path to Ollama needs and nothing else: no TLS, redirects,
/// proxies, cookies or decompression (those upstreams use AsyncHTTPClient).
public final class HTTP1Pool: Sendable {
    /// Where connections go.
    public let host: String
    public let port: Int
    /// Sent as `Host`.
    private let authority: String
    private let group: EventLoopGroup
    private let maxConnections: Int
    private let connectTimeout: TimeAmount
    private let idleConnectionTimeout: TimeAmount
    private let state = NIOLockedValueBox(State())

    private struct State {
        var idle: [Idle] = []
        var open = 0
        var waiters = Deque<Waiter>()
        var nextWaiterId = 0
        var shutDown = false
        /// The one timer that closes idle connections past `idleConnectionTimeout`, set while
        /// any connection idles (a timer per release, cancelled by the next lease, was ~1 % of
        /// a billed request's CPU).
        var sweep: Scheduled<Void>?
    }

    private struct Idle {
        let connection: HTTP1Connection
        let since: NIODeadline
    }

    private struct Waiter {
        let id: Int
        /// Resumed with `.idle` (a connection handed over) or `.connect` (a slot reserved).
        let continuation: CheckedContinuation<Lease, Error>
        /// Fails the wait at the request's deadline.
        let timeout: Scheduled<Void>
    }

    /// - Parameters:
    ///   - maxConnections: connections open at most; requests past it wait for one.
    ///   - idleConnectionTimeout: an unused connection is closed after this long.
    public init(host: String, port: Int, group: EventLoopGroup, maxConnections: Int,
                connectTimeout: TimeAmount, idleConnectionTimeout: TimeAmount = .seconds(60)) {
        self.host = host
        self.port = port
        self.authority = Self.authority(host: host, port: port)
        self.group = group
        self.maxConnections = max(1, maxConnections)
        self.connectTimeout = connectTimeout
        self.idleConnectionTimeout = idleConnectionTimeout
    }

    /// Sends a request and returns once the response head has arrived, with the body still to
    /// read. `headTimeout` bounds everything before the head: waiting for a free connection
    /// (`noConnection`), connecting, sending, the upstream's answer (`headTimeout`).
    ///
    /// `beyondLimit`: open a connection past `maxConnections` rather than wait (health checks
    /// and listings, which must not queue behind the streams that fill the pool).
    ///
    /// A request that finds its reused connection closed before it could be sent is sent once
    /// more on a new connection (the upstream closed an idle connection; it never saw the
    /// request). A request that was sent is never sent again here: the upstream may be working
    /// on it.
    public func execute(method: HTTPMethod, path: String, headers: HTTPHeaders = [:], body: ByteBuffer? = nil,
                        headTimeout: TimeAmount, beyondLimit: Bool = false) async throws -> HTTP1Response {
        let deadline = NIODeadline.now() + headTimeout
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        head.headers.replaceOrAdd(name: "host", value: authority)
        if let body {
            head.headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        } else if method == .POST || method == .PUT {
            head.headers.replaceOrAdd(name: "content-length", value: "0")
        }
        var fresh = false
        while true {
            let (connection, reused) = try await lease(fresh: fresh, beyondLimit: beyondLimit, deadline: deadline)
            let exchange = connection.send(head, body: body, deadline: deadline) { [self] reusable in
                release(connection, reusable: reusable)
            }
            do {
                let responseHead = try await withTaskCancellationHandler {
                    try await exchange.headFuture.get()
                } onCancel: {
                    connection.abandon(exchange)
                }
                return HTTP1Response(status: responseHead.status, headers: responseHead.headers,
                                     body: HTTP1ResponseBody(exchange: exchange, connection: connection))
            } catch HTTP1ClientError.closedBeforeSending where reused && !fresh && !Task.isCancelled {
                fresh = true
            } catch {
                if Task.isCancelled { throw CancellationError() }
                throw error
            }
        }
    }

    /// Connections kept alive, unused.
    var idleConnections: Int { state.withLockedValue { $0.idle.count } }

    /// Closes idle connections and refuses new requests; requests under way finish.
    public func shutdown() {
        let (idle, waiters, sweep) = state.withLockedValue { state in
            state.shutDown = true
            defer { state.idle = []; state.waiters = []; state.sweep = nil }
            return (state.idle, state.waiters, state.sweep)
        }
        sweep?.cancel()
        for entry in idle {
            entry.connection.close()
        }
        for waiter in waiters {
            waiter.timeout.cancel()
            waiter.continuation.resume(throwing: HTTP1ClientError.shutDown)
        }
    }

    // MARK: - Connections

    /// What a request gets: an idle connection, a slot to connect in, or a place in line.
    private enum Lease: Sendable {
        case idle(HTTP1Connection)
        case connect
        case wait
    }

    /// Under the lock: an idle connection (one on `current` first), else a slot, else nothing.
    private func take(_ state: inout State, current: EventLoop?, fresh: Bool, beyondLimit: Bool) -> Lease {
        if !fresh, !state.idle.isEmpty {
            let index = state.idle.lastIndex { $0.connection.eventLoop === current } ?? state.idle.count - 1
            return .idle(state.idle.remove(at: index).connection)
        }
        if state.open < maxConnections || fresh || beyondLimit {
            state.open += 1
            return .connect
        }
        return .wait
    }

    /// A connection and whether it carried requests before: an idle one, a new one, or the next
    /// one given back while `maxConnections` are open, by `deadline`.
    private func lease(fresh: Bool, beyondLimit: Bool, deadline: NIODeadline) async throws -> (HTTP1Connection, Bool) {
        let current = MultiThreadedEventLoopGroup.currentEventLoop
        let decision: Lease = try state.withLockedValue { state in
            guard !state.shutDown else { throw HTTP1ClientError.shutDown }
            return take(&state, current: current, fresh: fresh, beyondLimit: beyondLimit)
        }
        switch decision {
        case .idle(let connection):
            return (connection, true)
        case .connect:
            return (try await connect(on: current, deadline: deadline), false)
        case .wait:
            switch try await waitForConnection(current: current, deadline: deadline) {
            case .idle(let connection):
                return (connection, true)
            case .connect, .wait:
                return (try await connect(on: current, deadline: deadline), false)
            }
        }
    }

    /// Takes a place in line, unless a connection or a slot came free since `lease` looked
    /// (the check and the place are taken under one lock, so nothing given back is missed).
    /// Resumed with a connection handed over, or `.connect` with a slot reserved.
    private func waitForConnection(current: EventLoop?, deadline: NIODeadline) async throws -> Lease {
        let id = state.withLockedValue { state in
            defer { state.nextWaiterId += 1 }
            return state.nextWaiterId
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lease, Error>) in
                let timeout = group.next().scheduleTask(deadline: deadline) { [self] () -> Void in
                    removeWaiter(id)?.continuation.resume(throwing: HTTP1ClientError.noConnection)
                }
                let outcome: Result<Lease, Error>? = state.withLockedValue { state in
                    if state.shutDown { return .failure(HTTP1ClientError.shutDown) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    let now = take(&state, current: current, fresh: false, beyondLimit: false)
                    if case .wait = now {
                        if deadline <= .now() { return .failure(HTTP1ClientError.noConnection) }
                        state.waiters.append(Waiter(id: id, continuation: continuation, timeout: timeout))
                        return nil
                    }
                    return .success(now)
                }
                if let outcome {
                    timeout.cancel()
                    continuation.resume(with: outcome)
                }
            }
        } onCancel: {
            removeWaiter(id)?.continuation.resume(throwing: CancellationError())
        }
    }

    private func removeWaiter(_ id: Int) -> Waiter? {
        let waiter = state.withLockedValue { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.timeout.cancel()
        return waiter
    }

    /// Opens a connection, within the connect timeout and the request's deadline; its slot is
    /// already counted in `open`.
    private func connect(on preferred: EventLoop?, deadline: NIODeadline) async throws -> HTTP1Connection {
        let eventLoop = preferred ?? group.next()
        let handler = HTTP1ConnectionHandler()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(max(.milliseconds(1), min(connectTimeout, deadline - .now())))
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // Reads start at 512 bytes (NIO's default is 2,048) and adapt per connection: a
            // streamed delta is ~150 bytes, and an open stream keeps its read buffer.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 256, initial: 512, maximum: 65536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            closed()
            if case ChannelError.connectTimeout = error { throw HTTP1ClientError.connectTimeout }
            throw HTTP1ClientError.connectFailed(Self.reason(error))
        }
        let connection = HTTP1Connection(channel: channel, handler: handler)
        try await eventLoop.submit { [self] in
            if channel.isActive {
                handler.onClose = { self.closed() }
            } else {
                self.closed()
            }
        }.get()
        return connection
    }

    /// An exchange is over: the connection goes to the first waiter, or idles until it expires.
    private func release(_ connection: HTTP1Connection, reusable: Bool) {
        guard reusable else {
            connection.close() // counted out by `closed` when it is
            return
        }
        let now = NIODeadline.now()
        let (waiter, shutDown): (Waiter?, Bool) = state.withLockedValue { state in
            if state.shutDown { return (nil, true) }
            if let waiter = state.waiters.popFirst() { return (waiter, false) }
            state.idle.append(Idle(connection: connection, since: now))
            if state.sweep == nil { state.sweep = scheduleSweep(at: now + idleConnectionTimeout) }
            return (nil, false)
        }
        if let waiter {
            waiter.timeout.cancel()
            waiter.continuation.resume(returning: .idle(connection))
        } else if shutDown {
            connection.close()
        }
    }

    private func scheduleSweep(at deadline: NIODeadline) -> Scheduled<Void> {
        group.next().scheduleTask(deadline: deadline) { [self] in sweepIdle() }
    }

    /// Closes the connections idle for `idleConnectionTimeout`, and sets the sweep again for
    /// the longest-idle of the rest.
    private func sweepIdle() {
        let now = NIODeadline.now()
        let expired: [HTTP1Connection] = state.withLockedValue { state in
            state.sweep = nil
            guard !state.shutDown else { return [] }
            var expired: [HTTP1Connection] = []
            state.idle.removeAll { entry in
                guard entry.since + idleConnectionTimeout <= now else { return false }
                expired.append(entry.connection)
                return true
            }
            if let oldest = state.idle.lazy.map(\.since).min() {
                state.sweep = scheduleSweep(at: oldest + idleConnectionTimeout)
            }
            return expired
        }
        for connection in expired { connection.close() } // counted out by `closed` when it is
    }

    /// A connection closed (or failed to open): its slot goes to the first waiter, who opens one.
    private func closed() {
        let waiter: Waiter? = state.withLockedValue { state in
            state.idle.removeAll { !$0.connection.channel.isActive }
            if let waiter = state.waiters.popFirst() { return waiter } // the slot passes on
            state.open -= 1
            return nil
        }
        if let waiter {
            waiter.timeout.cancel()
            waiter.continuation.resume(returning: .connect)
        }
    }

    /// `Host` for a server: an IPv6 literal in brackets, port 80 implied.
    static func authority(host: String, port: Int) -> String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? bracketed : "\(bracketed):\(port)"
    }

    /// A connection failure said without the address (which logs already show by name).
    private static func reason(_ error: Error) -> String {
        if let error = error as? NIOConnectionError, !error.connectionErrors.isEmpty { return "connection refused" }
        if let error = error as? IOError { return error.errnoCode == ECONNREFUSED ? "connection refused" : "\(error)" }
        return "\(error)"
    }
}
