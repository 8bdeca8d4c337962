/// How a request ended, as the ledger records it.
public enum Outcome: String, Sendable, Codable, CaseIterable {
    case ok
    case upstreamError = "upstream_error"
    case clientCancelled = "client_cancelled"
    /// The gateway ended a stream when the delivered output reached the bound it held (the
    /// upstream did not stop at the limit it was given).
    case outputLimit = "output_limit"
    case budgetExceeded = "budget_exceeded"
    /// Refused by a rate or concurrency limit (429), at no cost.
    case rateLimited = "rate_limited"
    case invalidRequest = "invalid_request"
    case holdExpired = "hold_expired"
    case gatewayError = "gateway_error"
}

/// Where a row's token counts came from.
public enum TokenSource: String, Sendable, Codable {
    case provider
    case estimated
    case none
}

/// One line of the usage ledger: a request that reached the budget step.
///
/// No prompt or completion text is ever part of it.
public struct UsageRecord: Sendable, Hashable, Codable {
    public var requestId: String
    public var customerId: Int64
    public var keyId: Int64?
    public var endpoint: String
    public var dialect: String
    public var provider: String
    public var model: String
    public var httpStatus: Int
    public var outcome: Outcome
    public var promptTokens: Int64
    public var completionTokens: Int64
    public var cachedTokens: Int64
    public var tokenSource: TokenSource
    public var cost: Money
    /// The prices the cost was computed with, kept so history is never re-priced.
    public var price: ModelPrice
    public var priceSource: PriceSource
    /// The amount held for this request before the upstream was called.
    public var held: Money
    public var latencyMicros: Int64
    public var timeToFirstByteMicros: Int64?
    public var createdAtMicros: Int64
    /// The Ollama server that answered (its URL without credentials); nil for OpenAI and
    /// Anthropic calls and for requests refused before any call. After a failover it is the
    /// server the call ended on.
    public var server: String?

    public init(requestId: String, customerId: Int64, keyId: Int64?, endpoint: String, dialect: String,
                provider: String, model: String, httpStatus: Int, outcome: Outcome, promptTokens: Int64 = 0,
                completionTokens: Int64 = 0, cachedTokens: Int64 = 0, tokenSource: TokenSource = .none,
                cost: Money = .zero, price: ModelPrice, priceSource: PriceSource, held: Money = .zero,
                latencyMicros: Int64 = 0, timeToFirstByteMicros: Int64? = nil, createdAtMicros: Int64,
                server: String? = nil) {
        self.requestId = requestId
        self.customerId = customerId
        self.keyId = keyId
        self.endpoint = endpoint
        self.dialect = dialect
        self.provider = provider
        self.model = model
        self.httpStatus = httpStatus
        self.outcome = outcome
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.tokenSource = tokenSource
        self.cost = cost
        self.price = price
        self.priceSource = priceSource
        self.held = held
        self.latencyMicros = latencyMicros
        self.timeToFirstByteMicros = timeToFirstByteMicros
        self.createdAtMicros = createdAtMicros
        self.server = server
    }
}

/// Totals of a customer's usage over a date range, with a per-model breakdown.
public struct UsageReport: Sendable, Codable {
    public struct Line: Sendable, Codable, Hashable {
        public var model: String
        public var requests: Int64
        public var promptTokens: Int64
        public var completionTokens: Int64
        public var cost: Money

        public init(model: String, requests: Int64, promptTokens: Int64, completionTokens: Int64, cost: Money) {
            self.model = model
            self.requests = requests
            self.promptTokens = promptTokens
            self.completionTokens = completionTokens
            self.cost = cost
        }
    }

    /// One UTC day's totals over all models.
    public struct Day: Sendable, Codable, Hashable {
        public var day: UTCDay
        public var requests: Int64
        public var cost: Money

        public init(day: UTCDay, requests: Int64, cost: Money) {
            self.day = day
            self.requests = requests
            self.cost = cost
        }
    }

    public var customerId: Int64
    public var range: DayRange
    public var byModel: [Line]
    public var byDay: [Day]

    public init(customerId: Int64, range: DayRange, byModel: [Line], byDay: [Day] = []) {
        self.customerId = customerId
        self.range = range
        self.byModel = byModel
        self.byDay = byDay
    }

    public var totalRequests: Int64 { byModel.reduce(0) { $0 + $1.requests } }
    public var totalPromptTokens: Int64 { byModel.reduce(0) { $0 + $1.promptTokens } }
    public var totalCompletionTokens: Int64 { byModel.reduce(0) { $0 + $1.completionTokens } }
    public var totalCost: Money { byModel.reduce(.zero) { $0 + $1.cost } }
}
