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
    }

    private struct Idle {
        let connection: HTTP1Connection
        let expiry: Scheduled<Void>
    }

    private struct Waiter {
        let id: Int
        /// Resumed with a connection handed over, or nil: connect one (a slot is reserved).
        let continuation: CheckedContinuation<HTTP1Connection?, Error>
    }

    /// - Parameters:
    ///   - maxConnections: connections open at most; requests past it wait for one.
    ///   - idleConnectionTimeout: an unused connection is closed after this long.
    public init(host: String, port: Int, group: EventLoopGroup, maxConnections: Int,
                connectTimeout: TimeAmount, idleConnectionTimeout: TimeAmount = .seconds(60)) {
        self.host = host
        self.port = port
        self.authority = port == 80 ? host : "\(host):\(port)"
        self.group = group
        self.maxConnections = max(1, maxConnections)
        self.connectTimeout = connectTimeout
        self.idleConnectionTimeout = idleConnectionTimeout
    }

    /// Sends a request and returns once the response head has arrived (within `headTimeout`,
    /// connection included), with the body still to read. A request that finds its reused
    /// connection closed by the upstream before any answer is sent again on a new connection,
    /// once: the upstream closed an idle connection, it did not refuse the request.
    public func execute(method: HTTPMethod, path: String, headers: HTTPHeaders = [:], body: ByteBuffer? = nil,
                        headTimeout: TimeAmount) async throws -> HTTP1Response {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        head.headers.replaceOrAdd(name: "host", value: authority)
        if let body {
            head.headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        } else if method == .POST || method == .PUT {
            head.headers.replaceOrAdd(name: "content-length", value: "0")
        }
        var fresh = false
        while true {
            let connection = try await lease(fresh: fresh)
            let reused = connection.reused
            let answer = connection.send(head, body: body, headTimeout: headTimeout) { [self] reusable in
                release(connection, reusable: reusable)
            }
            do {
                let (responseHead, exchange) = try await withTaskCancellationHandler {
                    try await answer.get()
                } onCancel: {
                    connection.close()
                }
                return HTTP1Response(status: responseHead.status, headers: responseHead.headers,
                                     body: HTTP1ResponseBody(exchange: exchange, connection: connection))
            } catch HTTP1ClientError.closedBeforeHead where reused && !fresh {
                fresh = true
            } catch {
                if Task.isCancelled { throw CancellationError() }
                throw error
            }
        }
    }

    /// Closes idle connections and refuses new requests; requests under way finish.
    public func shutdown() {
        let (idle, waiters) = state.withLockedValue { state in
            state.shutDown = true
            defer { state.idle = []; state.waiters = [] }
            return (state.idle, state.waiters)
        }
        for entry in idle {
            entry.expiry.cancel()
            entry.connection.close()
        }
        for waiter in waiters { waiter.continuation.resume(throwing: HTTP1ClientError.shutDown) }
    }

    // MARK: - Connections

    private enum Lease {
        case idle(HTTP1Connection, Scheduled<Void>)
        case connect
        case wait
    }

    /// An idle connection (one on the caller's event loop first), a new one, or the next one
    /// given back once `maxConnections` are open.
    private func lease(fresh: Bool) async throws -> HTTP1Connection {
        let current = MultiThreadedEventLoopGroup.currentEventLoop
        let decision: Lease = try state.withLockedValue { state in
            guard !state.shutDown else { throw HTTP1ClientError.shutDown }
            if !fresh, !state.idle.isEmpty {
                let index = state.idle.lastIndex { $0.connection.eventLoop === current } ?? state.idle.count - 1
                let entry = state.idle.remove(at: index)
                return .idle(entry.connection, entry.expiry)
            }
            if state.open < maxConnections || fresh {
                state.open += 1
                return .connect
            }
            return .wait
        }
        switch decision {
        case .idle(let connection, let expiry):
            expiry.cancel()
            return connection
        case .connect:
            return try await connect(on: current)
        case .wait:
            let handed = try await waitForConnection()
            if let handed { return handed }
            return try await connect(on: current)
        }
    }

    private func waitForConnection() async throws -> HTTP1Connection? {
        let id = state.withLockedValue { state in
            defer { state.nextWaiterId += 1 }
            return state.nextWaiterId
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let accepted = state.withLockedValue { state in
                    guard !state.shutDown, !Task.isCancelled else { return false }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return true
                }
                if !accepted { continuation.resume(throwing: Task.isCancelled ? CancellationError() : HTTP1ClientError.shutDown) }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Opens a connection; its slot is already counted in `open`.
    private func connect(on preferred: EventLoop?) async throws -> HTTP1Connection {
        let eventLoop = preferred ?? group.next()
        let handler = HTTP1ConnectionHandler()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
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
        let expiry = connection.eventLoop.scheduleTask(in: idleConnectionTimeout) { connection.close() }
        let waiter: Waiter? = state.withLockedValue { state in
            if state.shutDown { return nil }
            if let waiter = state.waiters.popFirst() { return waiter }
            state.idle.append(Idle(connection: connection, expiry: expiry))
            return nil
        }
        if let waiter {
            expiry.cancel()
            waiter.continuation.resume(returning: connection)
        } else if state.withLockedValue({ $0.shutDown }) {
            expiry.cancel()
            connection.close()
        }
    }

    /// A connection closed (or failed to open): its slot goes to the first waiter, who opens one.
    private func closed() {
        let waiter: Waiter? = state.withLockedValue { state in
            state.idle.removeAll { !$0.connection.channel.isActive }
            if let waiter = state.waiters.popFirst() { return waiter } // the slot passes on
            state.open -= 1
            return nil
        }
        waiter?.continuation.resume(returning: nil)
    }

    /// A connection failure said without the address (which logs already show by name).
    private static func reason(_ error: Error) -> String {
        if let error = error as? NIOConnectionError, !error.connectionErrors.isEmpty { return "connection refused" }
        if let error = error as? IOError { return error.errnoCode == ECONNREFUSED ? "connection refused" : "\(error)" }
        return "\(error)"
    }
}
