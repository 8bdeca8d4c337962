import AsyncHTTPClient
import Core
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix

/// The gateway's HTTP client to its upstreams, with a connection pool sized for a gateway (the
/// shared client allows only 8 connections per host) and the configured timeouts.
///
/// The read timeout is the gateway's own, not AsyncHTTPClient's: that one fires when no bytes
/// arrive for a while, even when the gateway stopped asking for them because its client is not
/// reading. Here the response head must arrive within the timeout (`send`), and a body may be
/// silent that long only while the gateway is waiting for it (`UpstreamBody`).
public final class UpstreamClient: Sendable {
    public let http: HTTPClient
    /// How long the upstream may stay silent while the gateway waits for it.
    public let readTimeout: Duration

    public init(configuration: Configuration) {
        var config = HTTPClient.Configuration(
            timeout: .init(connect: .seconds(Int64(configuration.upstreamConnectTimeoutSeconds)), read: nil))
        config.connectionPool = .init(idleTimeout: .seconds(60),
                                      concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.upstreamMaxConnections)
        // A refused connection means the upstream is down: answer 502 at once rather than retry
        // until the connect timeout (clients and their SDKs retry on their own terms).
        config.connectionPool.retryConnectionEstablishment = false
        config.decompression = .disabled
        config.httpVersion = .http1Only
        // No distributed tracing here: without a tracer the client skips a span per request and
        // the Foundation URL parse that fills its attributes (~1 % of the gateway's CPU).
        config.tracing.tracer = nil
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
        self.readTimeout = .seconds(configuration.upstreamReadTimeoutSeconds)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// Sends a request and returns the response head, with the body still streaming. The head
    /// must arrive within the read timeout.
    /// Sends a request; `timeout` (default: the read timeout) bounds the wait for the answer's head.
    func send(method: HTTPMethod, url: String, headers: [(String, String)] = [], body: ByteBuffer? = nil,
              timeout: Duration? = nil) async throws(GatewayError) -> HTTPClientResponse
    {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.replaceOrAdd(name: "content-type", value: "application/json")
            request.body = .bytes(body)
        }
        let (seconds, attoseconds) = (timeout ?? readTimeout).components
        let timeout = TimeAmount.nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        do {
            return try await http.execute(request, deadline: .now() + timeout)
        } catch {
            throw Self.classify(error)
        }
    }

    /// Reads a whole (non-streaming) body, refusing more than `limit` bytes.
    func collect(_ response: HTTPClientResponse, limit: Int = 64 << 20, idleTimeout: Duration? = nil)
        async throws(GatewayError) -> ByteBuffer
    {
        do {
            return try await UpstreamBody.collect(response.body, idleTimeout: idleTimeout ?? readTimeout, limit: limit)
        } catch {
            throw Self.classify(error)
        }
    }

    /// Maps client failures to gateway errors: silence is a timeout (504), everything else that
    /// stops us from getting an answer is an unreachable or invalid upstream (502).
    static func classify(_ error: Error) -> GatewayError {
        switch error {
        case let error as GatewayError: return error
        case let error as HTTPClientError:
            switch error {
            case .readTimeout, .deadlineExceeded: return .upstreamTimeout
            case .connectTimeout: return .upstreamUnreachable("connection timed out")
            case .remoteConnectionClosed: return .upstreamInvalid("the upstream closed the connection")
            default: return .upstreamUnreachable(String(describing: error))
            }
        case is NIOTooManyBytesError: return .upstreamInvalid("response too large")
        case let error as NIOConnectionError:
            return .upstreamUnreachable(error.connectionErrors.isEmpty ? "connection failed" : "connection refused")
        case let error as IOError where error.errnoCode == ECONNREFUSED: return .upstreamUnreachable("connection refused")
        case ChannelError.connectTimeout: return .upstreamUnreachable("connection timed out")
        default: return .upstreamUnreachable(String(describing: error))
        }
    }
}

extension HTTPClientResponse {
    /// The response's content type, or JSON.
    var contentType: String { headers.first(name: "content-type") ?? "application/json; charset=utf-8" }
}
