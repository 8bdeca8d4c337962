import HummingbirdCore
import Logging
import NIOCore

/// Hummingbird's HTTP/1.1 connection, reading into small buffers first.
///
/// NIO keeps a connection's last receive buffer for its next read, sized by the adaptive
/// allocator from 2,048 bytes, so every kept-alive or streaming client connection holds one
/// while it waits. Requests here are a few hundred bytes: starting at 512 and growing when a
/// read fills the buffer (as `HTTP1Pool` does upstream) costs a large body one read more at
/// most and an open stream ~1.5 KiB less.
struct SmallReadsHTTP1Channel: ServerChildChannel {
    /// Hummingbird's channel, with its own configuration (header limits, idle timeout).
    let http1: HTTP1Channel

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
        channel.setOption(ChannelOptions.recvAllocator,
                          value: AdaptiveRecvByteBufferAllocator(minimum: 256, initial: 512, maximum: 65_536))
            .flatMap { http1.setup(channel: channel, logger: logger) }
    }

    func handle(value: HTTP1Channel.Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}
