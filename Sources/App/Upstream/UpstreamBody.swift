import AsyncAlgorithms
import AsyncHTTPClient
import EventLoopClock
import NIOConcurrencyHelpers
import NIOCore

/// Reads an upstream response body with an idle timeout that counts only the time the gateway
/// spends waiting for the upstream.
///
/// A reader task pulls chunks and hands each one over through a channel without a buffer, so
/// it asks for the next chunk only when the consumer has taken the last one: a client that does
/// not read pauses the upstream (backpressure) and stops the clock. A watchdog fails the read
/// when the reader has been waiting on the upstream itself for longer than the timeout.
enum UpstreamBody {
    /// Calls `consume` with each chunk, in order, until the body ends or `consume` returns false
    /// (which cancels the upstream request). Throws the upstream's failure, or
    /// `GatewayError.upstreamTimeout` after `idleTimeout` of upstream silence.
    static func forEach(_ body: UpstreamResponse.Body, idleTimeout: Duration,
                        _ consume: (ByteBuffer) async throws -> Bool) async throws {
        switch body {
        case .client(let body):
            try await forEach(body, idleTimeout: idleTimeout, consume)
        case .http1(let body):
            // The lean client reads only when asked and times only its own waits.
            while let chunk = try await body.next(idleTimeout: TimeAmount(idleTimeout)) {
                guard try await consume(chunk) else {
                    body.discard()
                    return
                }
            }
        }
    }

    static func forEach(_ body: HTTPClientResponse.Body, idleTimeout: Duration,
                        _ consume: (ByteBuffer) async throws -> Bool) async throws {
        let channel = AsyncThrowingChannel<ByteBuffer, Error>()
        let clock = IdleClock(timeout: idleTimeout)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    var iterator = body.makeAsyncIterator()
                    while true {
                        clock.waiting(true)
                        guard let chunk = try await iterator.next() else { break }
                        clock.waiting(false)
                        await channel.send(chunk)
                        if Task.isCancelled { return }
                    }
                    clock.waiting(false)
                    channel.finish()
                } catch {
                    channel.fail(error)
                }
            }
            group.addTask {
                while let wait = clock.untilExpiry() {
                    do {
                        try await EventLoopClock.sleep(for: wait)
                    } catch {
                        return // cancelled: the body ended or the consumer stopped
                    }
                }
                channel.fail(GatewayError.upstreamTimeout)
            }
            defer { group.cancelAll() }
            for try await chunk in channel {
                guard try await consume(chunk) else { break }
            }
        }
    }

    /// Reads a whole body, up to `limit` bytes.
    static func collect(_ body: UpstreamResponse.Body, idleTimeout: Duration, limit: Int) async throws -> ByteBuffer {
        var all = ByteBuffer()
        try await forEach(body, idleTimeout: idleTimeout) { chunk in
            guard all.readableBytes + chunk.readableBytes <= limit else { throw NIOTooManyBytesError(maxBytes: limit) }
            var chunk = chunk
            all.writeBuffer(&chunk)
            return true
        }
        return all
    }
}

/// When the reader started waiting on the upstream, if it is waiting.
final class IdleClock: Sendable {
    private let since = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
    let timeout: Duration

    init(timeout: Duration) {
        self.timeout = timeout
    }

    func waiting(_ isWaiting: Bool) {
        since.withLockedValue { $0 = isWaiting ? .now : nil }
    }

    /// How long until the timeout could fire (a whole timeout while nobody waits), or nil when
    /// the reader has been waiting too long.
    func untilExpiry() -> Duration? {
        guard let start = since.withLockedValue({ $0 }) else { return timeout }
        let left = timeout - (ContinuousClock.now - start)
        return left > .zero ? left : nil
    }
}
