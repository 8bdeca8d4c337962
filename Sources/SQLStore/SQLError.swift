import Core

/// A driver failure, classified so the store can retry or explain it.
public enum SQLError: Error, CustomStringConvertible {
    /// A unique constraint was violated; carries the constraint or index name when known.
    case uniqueViolation(String)
    /// A deadlock, serialization failure or lock timeout: the transaction may be run again.
    case retryable(String)
    /// The connection is gone or could not be made. Redacted: no password in the text.
    case connectionFailed(String)
    /// Every pooled connection stayed busy for the whole wait.
    case poolExhausted(String)
    /// A result column did not hold what the code expected.
    case decoding(String)
    /// Anything else the database reported.
    case other(String)

    public var description: String {
        switch self {
        case .uniqueViolation(let s): "unique violation: \(s)"
        case .retryable(let s): "transient: \(s)"
        case .connectionFailed(let s): "connection failed: \(s)"
        case .poolExhausted(let s): "database busy: \(s)"
        case .decoding(let s): "unexpected result: \(s)"
        case .other(let s): s
        }
    }

    /// The store-level error a caller sees.
    public var storeError: StoreError {
        switch self {
        case .uniqueViolation(let s): .duplicate(s)
        case .retryable(let s): .busy("gave up after repeated conflicts: \(s)")
        case .connectionFailed(let s): .unavailable(s)
        case .poolExhausted: .poolExhausted
        case .decoding(let s): .failed(s)
        case .other(let s): .failed(s)
        }
    }
}
