import NIOCore
import NIOHTTP1

/// One request and its response on one connection. Everything here runs on the connection's
/// event loop; `HTTP1ResponseBody` hops there.
///
/// The body is read with backpressure: the connection reads from its socket only while the head
/// is awaited, a consumer is waiting, or less than `readAhead` bytes are buffered. The idle timer
/// runs only while a consumer waits and nothing is buffered, so a client that stops reading
/// pauses the upstream without ever counting as upstream silence.
final class HTTP1Exchange: @unchecked Sendable {
    // @unchecked: every member is touched on `eventLoop` only.
    /// Bytes read ahead of the consumer: enough for a socket read or two, little per open stream.
    static let readAhead = 16 << 10

    let eventLoop: EventLoop
    /// Succeeds with the response head; fails when the exchange fails before it.
    let headFuture: EventLoopFuture<HTTPResponseHead>
    private var head: EventLoopPromise<HTTPResponseHead>?
    private var parts = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    private var buffered = 0
    private(set) var ended = false
    private var failure: HTTP1ClientError?
    private var waiter: EventLoopPromise<ByteBuffer?>?
    /// Since when the waiting consumer has waited (nil: nobody waits).
    private var waitingSince: NIODeadline?
    private var idleTimeout = TimeAmount.zero
    /// One timer per exchange at most, not one per chunk: when it fires it checks how long the
    /// current wait has lasted and sets itself again for the rest (scheduling and cancelling a
    /// timer per chunk was half of a streamed chunk's cost in this client).
    private var idleTimer: Scheduled<Void>?
    private var idleTimerDeadline = NIODeadline.distantFuture
    /// The connection carrying the exchange: asked for socket reads, and closed on a timeout.
    /// A reference, not two closures made per exchange; weak, as the connection holds the
    /// exchange while it runs.
    weak var connection: HTTP1ConnectionHandler?

    /// Made on any thread; used on `eventLoop` from then on.
    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
        let head = eventLoop.makePromise(of: HTTPResponseHead.self)
        self.head = head
        self.headFuture = head.futureResult
    }

    /// Whether the connection should read from its socket now.
    var wantsRead: Bool {
        !ended && failure == nil && (head != nil || waiter != nil || buffered < Self.readAhead)
    }

    var awaitingHead: Bool { head != nil }

    func received(head response: HTTPResponseHead) {
        head?.succeed(response)
        head = nil
    }

    func received(body chunk: ByteBuffer) {
        if let waiter {
            self.waiter = nil
            waitingSince = nil
            waiter.succeed(chunk)
        } else {
            parts.append(chunk)
            buffered += chunk.readableBytes
        }
    }

    func receivedEnd() {
        ended = true
        idleTimer?.cancel()
        idleTimer = nil
        waitingSince = nil
        if let waiter, parts.isEmpty {
            self.waiter = nil
            waiter.succeed(nil)
        }
    }

    /// The exchange cannot go on: pending and future reads fail with `error`. A body already
    /// complete stays readable.
    func fail(_ error: HTTP1ClientError) {
        guard !ended, failure == nil else { return }
        failure = error
        idleTimer?.cancel()
        idleTimer = nil
        waitingSince = nil
        head?.fail(failure!)
        head = nil
        waiter?.fail(failure!)
        waiter = nil
    }

    /// The next chunk of the body, nil at its end.
    func next(idleTimeout: TimeAmount) -> EventLoopFuture<ByteBuffer?> {
        if let chunk = parts.popFirst() {
            buffered -= chunk.readableBytes
            if wantsRead { connection?.readIfWanted() }
            return eventLoop.makeSucceededFuture(chunk)
        }
        if ended { return eventLoop.makeSucceededFuture(nil) }
        if let failure { return eventLoop.makeFailedFuture(failure) }
        precondition(waiter == nil, "one consumer reads a body")
        let promise = eventLoop.makePromise(of: ByteBuffer?.self)
        let now = NIODeadline.now()
        waiter = promise
        waitingSince = now
        self.idleTimeout = idleTimeout
        // A pending timer set for a later moment (a longer timeout before) is set again.
        if idleTimer == nil || now + idleTimeout < idleTimerDeadline {
            idleTimer?.cancel()
            armIdleTimer(at: now + idleTimeout)
        }
        connection?.readIfWanted()
        return promise.futureResult
    }

    /// Fails the exchange when the current wait has lasted `idleTimeout`; otherwise sets itself
    /// for when it would, or lapses while nobody waits (the next wait sets it again).
    private func armIdleTimer(at deadline: NIODeadline) {
        idleTimerDeadline = deadline
        idleTimer = eventLoop.scheduleTask(deadline: deadline) { [self] in
            idleTimer = nil
            guard let since = waitingSince, waiter != nil else { return }
            let expiry = since + idleTimeout
            if expiry <= .now() {
                fail(.idleTimeout)
                connection?.closeChannel()
            } else {
                armIdleTimer(at: expiry)
            }
        }
    }
}
