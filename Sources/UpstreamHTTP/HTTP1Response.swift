import NIOCore
import NIOHTTP1

/// An upstream's answer: its head, and its body still arriving.
public struct HTTP1Response: Sendable {
    public let status: HTTPResponseStatus
    public let headers: HTTPHeaders
    public let body: HTTP1ResponseBody
}

/// A response body, read by one consumer with `next`. Reading it to its end gives its
/// connection back to the pool; `discard` (or dropping the body) before then closes the
/// connection, which is how the upstream learns to stop (Ollama stops generating).
public final class HTTP1ResponseBody: @unchecked Sendable {
    // @unchecked: the exchange is touched on its event loop only.
    private let exchange: HTTP1Exchange
    private let connection: HTTP1Connection

    init(exchange: HTTP1Exchange, connection: HTTP1Connection) {
        self.exchange = exchange
        self.connection = connection
    }

    /// The next chunk, or nil at the end. Fails with `HTTP1ClientError.idleTimeout` when the
    /// upstream stays silent for `idleTimeout` while this call waits, and with
    /// `CancellationError` when the task is cancelled (the connection is closed).
    public func next(idleTimeout: TimeAmount) async throws -> ByteBuffer? {
        let exchange = self.exchange, connection = self.connection
        let future = exchange.eventLoop.inEventLoop
            ? exchange.next(idleTimeout: idleTimeout)
            : exchange.eventLoop.flatSubmit { exchange.next(idleTimeout: idleTimeout) }
        do {
            return try await withTaskCancellationHandler {
                try await future.get()
            } onCancel: {
                connection.abandon(exchange)
            }
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw error
        }
    }

    /// Stops reading: closes the connection unless the body has already ended.
    public func discard() {
        connection.abandon(exchange)
    }

    deinit {
        // Every response ends here; one read to its end needs no hop to its loop to say so.
        if exchange.eventLoop.inEventLoop, exchange.ended { return }
        discard()
    }
}
