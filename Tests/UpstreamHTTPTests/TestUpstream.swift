import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A loopback HTTP/1.1 server whose misbehaviour each test picks by path, counting what it saw:
///
/// - `/hello`: `hello`, keep-alive;
/// - `/chunks?n=N&ms=M[&silent=1]`: N chunks of `chunk-i;`, M ms apart (then silence instead of the end);
/// - `/silent-after-first`: one chunk, then silence;
/// - `/hang`: never answers;
/// - `/drop`: closes the connection without answering;
/// - `/close-soon`: `hello`, then closes the idle connection 50 ms later (an upstream's idle timeout);
/// - `/drop-second`: answers the first request of a connection, drops any later one unanswered;
/// - `/slow?ms=M`: answers after M ms;
/// - `/switch`: 101 Switching Protocols.
///
/// It records the `Host` header of the last request.
final class TestUpstream: Sendable {
    let port: Int
    private let channel: Channel
    private let counts = NIOLockedValueBox(Counts())

    struct Counts {
        var accepted = 0
        var closed = 0
        var open = 0
        var mostOpen = 0
        var requests = 0
        var host = ""
    }

    var snapshot: Counts { counts.withLockedValue { $0 } }

    init(group: EventLoopGroup) async throws {
        let counts = self.counts
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                counts.withLockedValue {
                    $0.accepted += 1
                    $0.open += 1
                    $0.mostOpen = max($0.mostOpen, $0.open)
                }
                channel.closeFuture.whenComplete { _ in
                    counts.withLockedValue {
                        $0.closed += 1
                        $0.open -= 1
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(counts: counts))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress!.port!
    }

    func stop() async {
        try? await channel.close()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let counts: NIOLockedValueBox<Counts>
        var served = 0
        var uri = ""

        init(counts: NIOLockedValueBox<Counts>) {
            self.counts = counts
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                uri = head.uri
                counts.withLockedValue { $0.host = head.headers.first(name: "host") ?? "" }
            case .body: break
            case .end:
                counts.withLockedValue { $0.requests += 1 }
                served += 1
                respond(context)
            }
        }

        func respond(_ context: ChannelHandlerContext) {
            let path = uri.split(separator: "?").first.map(String.init) ?? uri
            let query = Dictionary(uniqueKeysWithValues: uri.split(separator: "?").dropFirst().first?
                .split(separator: "&").compactMap { pair -> (String, Int)? in
                    let kv = pair.split(separator: "=")
                    return kv.count == 2 ? (String(kv[0]), Int(kv[1]) ?? 0) : nil
                } ?? [])
            let loop = context.eventLoop
            let bound = NIOLoopBound(context, eventLoop: loop)
            switch path {
            case "/hello":
                whole(context, "hello")
            case "/close-soon":
                whole(context, "hello")
                loop.scheduleTask(in: .milliseconds(50)) { bound.value.close(promise: nil) }
            case "/drop-second":
                if served == 1 { whole(context, "first") } else { context.close(promise: nil) }
            case "/drop":
                context.close(promise: nil)
            case "/hang":
                break
            case "/switch":
                context.writeAndFlush(wrapOutboundOut(.head(.init(version: .http1_1, status: .switchingProtocols,
                                                                  headers: ["upgrade": "websocket", "connection": "upgrade"]))),
                                      promise: nil)
            case "/slow":
                loop.scheduleTask(in: .milliseconds(Int64(query["ms"] ?? 100))) { self.whole(bound.value, "slow") }
            case "/chunks", "/silent-after-first":
                let n = path == "/chunks" ? query["n"] ?? 3 : 1
                let gap = Int64(query["ms"] ?? 10)
                context.write(wrapOutboundOut(.head(.init(version: .http1_1, status: .ok,
                                                          headers: ["transfer-encoding": "chunked"]))), promise: nil)
                send(bound, chunk: 0, of: n, gap: gap, end: path == "/chunks" && query["silent"] != 1)
            default:
                context.write(wrapOutboundOut(.head(.init(version: .http1_1, status: .notFound,
                                                          headers: ["content-length": "0"]))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }

        func send(_ bound: NIOLoopBound<ChannelHandlerContext>, chunk i: Int, of n: Int, gap: Int64, end: Bool) {
            let context = bound.value
            guard i < n else {
                if end { context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil) }
                return
            }
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "chunk-\(i);")))), promise: nil)
            context.eventLoop.scheduleTask(in: .milliseconds(gap)) { self.send(bound, chunk: i + 1, of: n, gap: gap, end: end) }
        }

        func whole(_ context: ChannelHandlerContext, _ text: String) {
            context.write(wrapOutboundOut(.head(.init(version: .http1_1, status: .ok,
                                                      headers: ["content-length": "\(text.utf8.count)"]))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
