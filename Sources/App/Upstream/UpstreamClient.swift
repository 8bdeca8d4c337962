import AsyncHTTPClient
import Core
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix
import UpstreamHTTP

/// The gateway's HTTP client to its upstreams, with a connection pool sized for a gateway (the
/// shared client allows only 8 connections per host) and the configured timeouts.
///
/// Requests to a plain-HTTP Ollama server (the hot path: URLs that start with its base URL) go
/// through `HTTP1Pool`, a lean keep-alive client on NIO's event loops that reads a body without
/// a task per response: a billed request costs a quarter less CPU than through AsyncHTTPClient
/// (docs/benchmarks.md, "The lean upstream client"). Everything else (TLS to OpenAI and
/// Anthropic, an Ollama behind https or with credentials in its URL) goes through AsyncHTTPClient.
///
/// The read timeout is the gateway's own, not AsyncHTTPClient's: that one fires when no bytes
/// arrive for a while, even when the gateway stopped asking for them because its client is not
/// reading. Here the response head must arrive within the timeout (`send`), and a body may be
/// silent that long only while the gateway is waiting for it (`UpstreamBody`).
public final class UpstreamClient: Sendable {
    public let http: HTTPClient
    /// How long the upstream may stay silent while the gateway waits for it.
    public let readTimeout: Duration
    /// The lean client's pools, one per plain-HTTP Ollama server.
    private let lean: [LeanRoute]

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
        self.lean = configuration.ollamaServers.compactMap { server in
            LeanRoute(baseURL: server.url, maxConnections: configuration.upstreamMaxConnections,
                      connectTimeout: .seconds(Int64(configuration.upstreamConnectTimeoutSeconds)))
        }
    }

    public func shutdown() async {
        for route in lean { route.pool.shutdown() }
        try? await http.shutdown()
    }

    /// Sends a request and returns the response head, with the body still streaming; `timeout`
    /// (default: the read timeout) bounds the wait for the head.
    func send(method: HTTPMethod, url: String, headers: [(String, String)] = [], body: ByteBuffer? = nil,
              timeout: Duration? = nil) async throws(GatewayError) -> UpstreamResponse
    {
        let timeout = TimeAmount(timeout ?? readTimeout)
        for route in lean {
            guard let path = route.path(for: url) else { continue }
            return try await sendLean(route.pool, method: method, path: path, headers: headers, body: body, timeout: timeout)
        }
        return try await sendThroughAsyncHTTPClient(method: method, url: url, headers: headers, body: body, timeout: timeout)
    }

    private func sendLean(_ pool: HTTP1Pool, method: HTTPMethod, path: String, headers: [(String, String)],
                          body: ByteBuffer?, timeout: TimeAmount) async throws(GatewayError) -> UpstreamResponse
    {
        var fields = HTTPHeaders()
        for (name, value) in headers { fields.add(name: name, value: value) }
        if body != nil { fields.replaceOrAdd(name: "content-type", value: "application/json") }
        do {
            // GETs are checks and listings: they must not queue behind streams that fill the pool.
            let response = try await pool.execute(method: method, path: path, headers: fields, body: body,
                                                  headTimeout: timeout, beyondLimit: method == .GET)
            return UpstreamResponse(status: response.status, headers: response.headers, body: .http1(response.body))
        } catch {
            throw Self.classify(error)
        }
    }

    private func sendThroughAsyncHTTPClient(method: HTTPMethod, url: String, headers: [(String, String)],
                                            body: ByteBuffer?, timeout: TimeAmount) async throws(GatewayError)
        -> UpstreamResponse
    {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.replaceOrAdd(name: "content-type", value: "application/json")
            request.body = .bytes(body)
        }
        do {
            let response = try await http.execute(request, deadline: .now() + timeout)
            return UpstreamResponse(status: response.status, headers: response.headers, body: .client(response.body))
        } catch {
            throw Self.classify(error)
        }
    }

    /// Reads a whole (non-streaming) body, refusing more than `limit` bytes.
    func collect(_ response: UpstreamResponse, limit: Int = 64 << 20, idleTimeout: Duration? = nil)
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
        case let error as HTTP1ClientError:
            switch error {
            case .headTimeout, .idleTimeout: return .upstreamTimeout
            case .connectTimeout: return .upstreamUnreachable("connection timed out")
            case .connectFailed(let reason): return .upstreamUnreachable(reason)
            case .closedBeforeSending: return .upstreamUnreachable("the connection closed before the request was sent")
            case .closedBeforeHead, .closedMidBody: return .upstreamInvalid("the upstream closed the connection")
            case .invalidResponse(let reason): return .upstreamInvalid("the upstream's answer is not HTTP/1.1 (\(reason))")
            // The wait lasted the whole timeout; the server is busy, not down (no failover, no mark).
            case .noConnection: return .upstreamTimeout
            case .shutDown: return .internalError("the gateway is shutting down")
            }
        case is CancellationError: return .internalError("the request was cancelled")
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

/// An upstream's answer, whichever client carried it: its head, and its body still arriving.
struct UpstreamResponse: Sendable {
    let status: HTTPResponseStatus
    let headers: HTTPHeaders
    let body: Body

    enum Body: Sendable {
        case client(HTTPClientResponse.Body)
        case http1(HTTP1ResponseBody)
    }

    /// The response's content type, or JSON.
    var contentType: String { headers.first(name: "content-type") ?? "application/json; charset=utf-8" }
}

/// A plain-HTTP Ollama server reached with the lean client: requests whose URL starts with its
/// base URL go to its pool.
struct LeanRoute: Sendable {
    let baseURL: String
    /// The base URL's own path (a reverse proxy's prefix), put before each request's path.
    let pathPrefix: String
    let pool: HTTP1Pool

    /// nil for URLs the lean client does not take: https, credentials in the URL (AsyncHTTPClient
    /// turns those into basic authentication), or no host.
    init?(baseURL: String, maxConnections: Int, connectTimeout: TimeAmount) {
        guard baseURL.hasPrefix("http://") else { return nil }
        let rest = baseURL.dropFirst("http://".count)
        let authority = OllamaServer.authority(of: baseURL)
        guard !authority.isEmpty, !authority.contains("@"), !rest.contains("?"), !rest.contains("#") else { return nil }
        var host = Substring(authority), port = 80
        if let bracket = authority.lastIndex(of: "]") { // [::1]:11434
            host = authority[authority.index(after: authority.startIndex)..<bracket]
            let after = authority[authority.index(after: bracket)...]
            if after.hasPrefix(":") { guard let number = Int(after.dropFirst()) else { return nil }; port = number }
        } else if let colon = authority.lastIndex(of: ":") {
            guard let number = Int(authority[authority.index(after: colon)...]) else { return nil }
            host = authority[..<colon]
            port = number
        }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
        self.baseURL = baseURL
        self.pathPrefix = String(rest.dropFirst(authority.count))
        self.pool = HTTP1Pool(host: String(host), port: port, group: HTTPClient.defaultEventLoopGroup,
                              maxConnections: maxConnections, connectTimeout: connectTimeout)
    }

    /// The request path for `url` when it is this server's, else nil.
    func path(for url: String) -> String? {
        guard url.hasPrefix(baseURL) else { return nil }
        let rest = url.dropFirst(baseURL.count)
        guard rest.isEmpty || rest.hasPrefix("/") || rest.hasPrefix("?") else { return nil }
        let path = pathPrefix + rest
        return path.hasPrefix("/") ? path : "/" + path
    }
}
