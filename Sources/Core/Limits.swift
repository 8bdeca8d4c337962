/// Rate limits of a key or a customer: each `nil` for none.
public struct RateLimits: Sendable, Hashable, Codable {
    /// Requests admitted per minute.
    public var requestsPerMinute: Int64?
    /// Tokens per minute: a request takes its token bound (prompt bound plus output bound) at
    /// admission and gets back, at settle, what it did not use.
    public var tokensPerMinute: Int64?
    /// Requests in flight at once.
    public var concurrency: Int64?

    public init(requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil, concurrency: Int64? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.concurrency = concurrency
    }

    public static let none = RateLimits()
    public var isEmpty: Bool { self == .none }
    /// The largest limit accepted, so that bucket arithmetic stays far inside 64 bits.
    public static let maximum: Int64 = 10_000_000_000
}

/// A change to limits asked for on the command line: each field is left alone (`nil`), cleared
/// (`.some(nil)`, typed `none`) or set.
public struct LimitChange: Sendable, Hashable {
    public var requestsPerMinute: Int64??
    public var tokensPerMinute: Int64??
    public var concurrency: Int64??
    /// Only for keys: the key's own monthly budget, within its customer's.
    public var monthlyBudget: Money??

    public init(requestsPerMinute: Int64?? = nil, tokensPerMinute: Int64?? = nil, concurrency: Int64?? = nil,
                monthlyBudget: Money?? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.concurrency = concurrency
        self.monthlyBudget = monthlyBudget
    }

    public var isEmpty: Bool { requestsPerMinute == nil && tokensPerMinute == nil && concurrency == nil && monthlyBudget == nil }
}

/// The token bucket behind requests and tokens per minute, in exact integers.
///
/// A level counts `unit` (60,000,000) per request or token taken and drains by the limit per
/// microsecond, so a limit of N per minute holds N × unit when full and is empty after a minute of
/// quiet: a burst of N is admitted, then one more every 60/N seconds. The same arithmetic runs in
/// SQL on PostgreSQL (`lmsvr_drain` and `lmsvr_admit_many`), and the store contract tests hold
/// both backends to it.
public enum RateBucket {
    public static let unit: Int64 = 60_000_000

    /// The level after `elapsed` microseconds at `limit` per minute (0 without a limit, and after
    /// a minute or more), never above the bucket's capacity: a level left above it (the limit
    /// was lowered, a settle used more than it held) waits at most a minute, never longer.
    public static func drain(_ level: Int64, elapsed: Int64, limit: Int64?) -> Int64 {
        guard let limit, elapsed < unit else { return 0 }
        return min(max(0, level - max(elapsed, 0) * limit), limit * unit)
    }

    /// Whether `amount` more fits a drained `level`; if not, the microseconds until it would
    /// (-1: never, `amount` alone is over the limit). `amount` is at most `RateLimits.maximum + 1`.
    public static func wait(level: Int64, amount: Int64, limit: Int64) -> Int64? {
        if amount > limit { return -1 }
        let over = level + amount * unit - limit * unit
        guard over > 0 else { return nil }
        return (over + limit - 1) / limit
    }

    /// What a settle gives back to a bucket: the tokens held but not used (negative: used beyond
    /// the bound, taken now), scaled by how much of the minute the hold is still in the bucket
    /// for. A hold a minute old has drained away already; giving its tokens back would let the
    /// same minute admit them twice. Clamped, so no count can overflow the arithmetic.
    public static func giveBack(held: Int64, used: Int64, heldForMicros age: Int64) -> Int64 {
        let unused = max(-RateLimits.maximum, min(RateLimits.maximum, held - min(used, RateLimits.maximum)))
        guard unused > 0 else { return unused }
        return unused * max(0, unit - max(age, 0)) / unit
    }

    /// How many requests or tokens a drained level stands for (rounded up).
    public static func used(level: Int64) -> Int64 { (level + unit - 1) / unit }
}

/// Why a request was refused by a rate or concurrency limit.
public struct LimitRefusal: Sendable, Hashable {
    public enum Subject: Sendable, Hashable {
        case key(Int64)
        case customer(Int64)
    }

    public enum Kind: String, Sendable, Hashable {
        case requestsPerMinute = "rpm"
        case tokensPerMinute = "tpm"
        case concurrency
    }

    public var subject: Subject
    public var kind: Kind
    public var limit: Int64
    /// Microseconds until the request would fit; -1 when it never can (more tokens than the limit).
    public var retryAfterMicros: Int64
    /// The tokens the request asked for (its bound), for the message of a token refusal.
    public var requestedTokens: Int64

    public init(subject: Subject, kind: Kind, limit: Int64, retryAfterMicros: Int64, requestedTokens: Int64) {
        self.subject = subject
        self.kind = kind
        self.limit = limit
        self.retryAfterMicros = retryAfterMicros
        self.requestedTokens = requestedTokens
    }

    /// From the outcome code the stores return (`key_rpm`, `customer_concurrency`, …).
    public init?(code: String, customerId: Int64, keyId: Int64?, limit: Int64, retryAfterMicros: Int64, requestedTokens: Int64) {
        let parts = code.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, let kind = Kind(rawValue: String(parts[1])) else { return nil }
        switch parts[0] {
        case "key": guard let keyId else { return nil }; subject = .key(keyId)
        case "customer": subject = .customer(customerId)
        default: return nil
        }
        self.kind = kind
        self.limit = limit
        self.retryAfterMicros = retryAfterMicros
        self.requestedTokens = requestedTokens
    }

    public var message: String {
        let whose = switch subject {
        case .key: "this API key's"
        case .customer: "this account's"
        }
        switch kind {
        case .requestsPerMinute:
            return "rate limit reached: \(whose) limit of \(limit) requests per minute; try again in \(Self.seconds(retryAfterMicros))"
        case .tokensPerMinute where retryAfterMicros < 0:
            return "request too large: it may use up to \(requestedTokens) tokens, over \(whose) limit of \(limit) tokens per minute; lower max_tokens or shorten the prompt"
        case .tokensPerMinute:
            return "rate limit reached: \(whose) limit of \(limit) tokens per minute (this request may use up to \(requestedTokens)); try again in \(Self.seconds(retryAfterMicros))"
        case .concurrency:
            return "too many requests in flight: \(whose) limit is \(limit) at once; try again when one finishes"
        }
    }

    /// `Retry-After` in whole seconds (at least 1).
    public var retryAfterSeconds: Int64 { max(1, (max(retryAfterMicros, 0) + 999_999) / 1_000_000) }

    public static func seconds(_ micros: Int64) -> String {
        let tenths = (max(micros, 0) + 99_999) / 100_000
        return "\(tenths / 10).\(tenths % 10)s"
    }
}
