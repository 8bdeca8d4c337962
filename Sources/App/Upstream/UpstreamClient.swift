import AsyncHTTPClient
import Core
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// The gateway's HTTP client to its upstreams, with a connection pool sized for a gateway (the
/// shared client allows only 8 connections per host) and the configured timeouts. The read
/// timeout is an idle timeout: it fires when the upstream is silent that long, before the first
/// byte or between chunks, never on a long stream that keeps talking.
public final class UpstreamClient: Sendable {
    public let http: HTTPClient

    public init(configuration: Configuration) {
        var config = HTTPClient.Configuration(
            timeout: .init(connect: .seconds(Int64(configuration.upstreamConnectTimeoutSeconds)),
                           read: .seconds(Int64(configuration.upstreamReadTimeoutSeconds))))
        config.connectionPool = .init(idleTimeout: .seconds(60),
                                      concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.upstreamMaxConnections)
        // A refused connection means the upstream is down: answer 502 at once rather than retry
        // until the connect timeout (clients and their SDKs retry on their own terms).
        config.connectionPool.retryConnectionEstablishment = false
        config.decompression = .disabled
        config.httpVersion = .http1Only
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// Sends a request and returns the response head with its body still streaming.
    func send(method: HTTPMethod, url: String, headers: [(String, String)] = [], body: ByteBuffer? = nil) async throws(GatewayError) -> HTTPClientResponse {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.replaceOrAdd(name: "content-type", value: "application/json")
            request.body = .bytes(body)
        }
        do {
            // No overall deadline: streams may run long; the idle read timeout guards silence.
            return try await http.execute(request, timeout: .hours(24))
        } catch {
            throw Self.classify(error)
        }
    }

    /// Reads a whole (non-streaming) body, refusing more than `limit` bytes.
    static func collect(_ response: HTTPClientResponse, limit: Int = 64 << 20) async throws(GatewayError) -> ByteBuffer {
        do {
            return try await response.body.collect(upTo: limit)
        } catch {
            throw classify(error)
        }
    }

    /// Maps client failures to gateway errors: silence is a timeout (504), everything else that
    /// stops us from getting an answer is an unreachable upstream (502).
    static func classify(_ error: Error) -> GatewayError {
        if let error = error as? GatewayError { return error }
        if let error = error as? HTTPClientError {
            switch error {
            case .readTimeout, .deadlineExceeded: return .upstreamTimeout
            case .connectTimeout: return .upstreamUnreachable("connection timed out")
            case .remoteConnectionClosed: return .upstreamInvalid("the upstream closed the connection")
            default: return .upstreamUnreachable(String(describing: error))
            }
        }
        if error is NIOTooManyBytesError { return .upstreamInvalid("response too large") }
        let text = String(describing: error)
        if text.contains("connectTimeout") { return .upstreamUnreachable("connection timed out") }
        if text.contains("refused") || text.contains("ECONNREFUSED") { return .upstreamUnreachable("connection refused") }
        return .upstreamUnreachable(text)
    }
}

extension HTTPClientResponse {
    /// The response's content type, or JSON.
    var contentType: String { headers.first(name: "content-type") ?? "application/json; charset=utf-8" }
}
