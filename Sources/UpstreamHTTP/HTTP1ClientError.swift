/// Why an exchange with an HTTP/1.1 upstream failed.
public enum HTTP1ClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No connection could be made (refused, unreachable, no such host).
    case connectFailed(String)
    /// The connection was not made within the connect timeout.
    case connectTimeout
    /// The connection closed before the request was all sent: the upstream cannot have acted on it.
    case closedBeforeSending
    /// The upstream closed the connection after the request and before the response head.
    case closedBeforeHead
    /// The upstream closed the connection before the response body's end.
    case closedMidBody
    /// The response head did not arrive in time.
    case headTimeout
    /// The upstream stayed silent longer than the idle timeout while the body was awaited.
    case idleTimeout
    /// The upstream's bytes are not an HTTP/1.1 response.
    case invalidResponse(String)
    /// Every connection stayed busy until the deadline.
    case noConnection
    /// The pool is shut down.
    case shutDown

    public var description: String {
        switch self {
        case .connectFailed(let reason): "connection failed: \(reason)"
        case .connectTimeout: "connection timed out"
        case .closedBeforeSending: "the connection closed before the request was sent"
        case .closedBeforeHead: "the upstream closed the connection before answering"
        case .closedMidBody: "the upstream closed the connection before the end of its answer"
        case .headTimeout: "no answer within the timeout"
        case .idleTimeout: "the upstream was silent for longer than the timeout"
        case .invalidResponse(let reason): "invalid response: \(reason)"
        case .noConnection: "every connection to the upstream stayed busy"
        case .shutDown: "the client is shut down"
        }
    }
}
