import NIOCore
import NIOHTTP1

/// One keep-alive connection to an upstream, carrying one exchange at a time. It reads from
/// its socket only when its exchange asks (`autoRead` is off): that is the backpressure.
final class HTTP1Connection: @unchecked Sendable {
    // @unchecked: `channel` is immutable and thread-safe; `handler` is touched on the
    // channel's event loop only.
    let channel: Channel
    private let handler: HTTP1ConnectionHandler

    init(channel: Channel, handler: HTTP1ConnectionHandler) {
        self.channel = channel
        self.handler = handler
    }

    var eventLoop: EventLoop { channel.eventLoop }

    /// Writes the request in one flush; the exchange's `head` succeeds when the response head
    /// arrives, or fails (`headTimeout` at `deadline`). `finished(reusable)` runs on the event
    /// loop when the exchange is over: true when the connection may carry another request.
    func send(_ head: HTTPRequestHead, body: ByteBuffer?, deadline: NIODeadline,
              finished: @escaping @Sendable (Bool) -> Void) -> HTTP1Exchange {
        let exchange = HTTP1Exchange(eventLoop: eventLoop)
        eventLoop.execute { [self] in
            handler.start(exchange, headDeadline: deadline, finished: finished)
            guard channel.isActive else {
                // Closed while idle, just before this request took it: nothing was sent.
                handler.failCurrent(.closedBeforeSending)
                return
            }
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
            let written = eventLoop.makePromise(of: Void.self)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: written)
            written.futureResult.whenComplete { [handler] result in handler.requestWritten(result) }
            handler.readIfWanted()
        }
        return exchange
    }

    func close() {
        channel.close(promise: nil)
    }

    /// Closes the connection if `exchange` has not ended: once it has, the connection may
    /// already carry another request, which must not be cut.
    func abandon(_ exchange: HTTP1Exchange) {
        eventLoop.execute { [self] in
            if !exchange.ended { close() }
        }
    }
}

/// Feeds the response parts of the current exchange, and asks for socket reads as it wants.
final class HTTP1ConnectionHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    // @unchecked: every member is touched on the channel's event loop only.
    typealias InboundIn = HTTPClientResponsePart

    private var context: ChannelHandlerContext?
    private var exchange: HTTP1Exchange?
    private var finished: (@Sendable (Bool) -> Void)?
    private var keepAlive = false
    private var written = false
    private var readPending = false
    /// When the current exchange's head is due (nil: no head awaited).
    private var headDeadline: NIODeadline?
    /// One head timer per connection, not one per exchange: it is left running when a head
    /// arrives, and when it fires it fails the exchange whose head is overdue, or sets itself for
    /// the current exchange's deadline, or lapses when no head is awaited (scheduling and
    /// cancelling a timer per request was ~1 % of a billed request's CPU).
    private var headTimer: Scheduled<Void>?
    private var headTimerDeadline = NIODeadline.distantFuture
    /// Called once when the channel closes.
    var onClose: () -> Void = {}

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Makes `exchange` the connection's current one; its head is due by `headDeadline`.
    func start(_ exchange: HTTP1Exchange, headDeadline: NIODeadline, finished: @escaping @Sendable (Bool) -> Void) {
        self.exchange = exchange
        self.finished = finished
        keepAlive = false
        written = false
        exchange.connection = self
        self.headDeadline = headDeadline
        // A timer set for a later moment (a longer timeout before) is set again.
        if headTimer == nil || headDeadline < headTimerDeadline, context?.channel.isActive == true {
            headTimer?.cancel()
            armHeadTimer(at: headDeadline, on: exchange.eventLoop)
        }
    }

    private func armHeadTimer(at deadline: NIODeadline, on eventLoop: EventLoop) {
        headTimerDeadline = deadline
        headTimer = eventLoop.scheduleTask(deadline: deadline) { [weak self] in self?.headTimerFired(on: eventLoop) }
    }

    private func headTimerFired(on eventLoop: EventLoop) {
        headTimer = nil
        guard let exchange, exchange.awaitingHead, let deadline = headDeadline else { return }
        if deadline <= .now() {
            exchange.fail(.headTimeout)
            closeChannel()
        } else {
            armHeadTimer(at: deadline, on: eventLoop)
        }
    }

    /// Closes the connection (a timeout, or a consumer that stopped).
    func closeChannel() {
        context?.close(promise: nil)
    }

    func requestWritten(_ result: Result<Void, Error>) {
        switch result {
        case .success:
            written = true
        case .failure:
            failCurrent(.closedBeforeSending)
            context?.close(promise: nil)
        }
    }

    /// What a connection lost now means for the exchange: before the head, whether the request
    /// was all sent (the upstream may be working on it) or not (it cannot have been).
    private var lostConnection: HTTP1ClientError {
        guard let exchange, exchange.awaitingHead else { return .closedMidBody }
        return written ? .closedBeforeHead : .closedBeforeSending
    }

    func failCurrent(_ error: HTTP1ClientError) {
        exchange?.fail(error)
    }

    /// Reads when the exchange wants bytes, and always while idle: an idle connection the
    /// upstream closes is then noticed (and dropped from the pool) at once.
    func readIfWanted() {
        guard let context, !readPending else { return }
        if let exchange, !exchange.wantsRead { return }
        readPending = true
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let exchange else { return } // bytes after a response: the decoder refuses them
        switch unwrapInboundIn(data) {
        case .head(let head):
            // NIO's decoder drops 100 Continue and 103 Early Hints; what else is below 200
            // (101 Switching Protocols) is no answer to a POST and ends the connection.
            guard head.status.code >= 200 else {
                exchange.fail(.invalidResponse("status \(head.status.code)"))
                context.close(promise: nil)
                return
            }
            keepAlive = head.isKeepAlive
            headDeadline = nil
            exchange.received(head: head)
        case .body(let chunk):
            exchange.received(body: chunk)
        case .end:
            exchange.receivedEnd()
            self.exchange = nil
            let finished = self.finished
            self.finished = nil
            finished?(keepAlive && written && context.channel.isActive)
        }
        // The next read is asked for in channelReadComplete, idle or not.
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readPending = false
        readIfWanted()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let reason: HTTP1ClientError = error is HTTPParserError || error is ByteToMessageDecoderError
            ? .invalidResponse(String(describing: error)) : lostConnection
        exchange?.fail(reason)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        headTimer?.cancel()
        headTimer = nil
        exchange?.fail(lostConnection)
        exchange = nil
        let finished = self.finished
        self.finished = nil
        finished?(false)
        onClose()
        onClose = {}
        context.fireChannelInactive()
    }
}
