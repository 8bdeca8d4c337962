/// The prices that apply to one model, all as exact money.
///
/// Token prices are per one million tokens. `cachedInputPer1M`, when set, prices the cached part
/// of the prompt (OpenAI and Anthropic report it); otherwise cached tokens cost the input price.
public struct ModelPrice: Sendable, Hashable, Codable {
    public var perRequest: Money
    public var perModel: Money
    public var inputPer1M: Money
    public var outputPer1M: Money
    public var cachedInputPer1M: Money?

    public init(perRequest: Money, perModel: Money = .zero, inputPer1M: Money = .zero,
                outputPer1M: Money = .zero, cachedInputPer1M: Money? = nil) {
        self.perRequest = perRequest
        self.perModel = perModel
        self.inputPer1M = inputPer1M
        self.outputPer1M = outputPer1M
        self.cachedInputPer1M = cachedInputPer1M
    }

    /// The cost of one request: flat fees plus token charges, rounded half-up once.
    ///
    /// `cachedTokens` is the part of `promptTokens` that was served from a cache. `cacheWrites`
    /// is the part written to a prompt cache, which Anthropic bills above the input price:
    /// 1.25× for a 5-minute entry, 2× for a 1-hour one.
    public func cost(promptTokens: Int64, completionTokens: Int64, cachedTokens: Int64 = 0,
                     cacheWrites: CacheWrites = .none) -> Money {
        let cached = Int128(max(0, min(cachedTokens, promptTokens)))
        let uncached = Int128(max(0, promptTokens)) - cached
        let cachedPrice = Int128((cachedInputPer1M ?? inputPer1M).nanos)
        let input = Int128(inputPer1M.nanos)
        // Sum in quarter nano-dollars × 10⁶ (Int128 cannot overflow here), then divide once:
        // written tokens are already in the prompt at 1×; a 5-minute write adds ¼, an hour 1×.
        let tokenQuarterMicroNanos = 4 * (uncached * input + cached * cachedPrice
            + Int128(max(0, completionTokens)) * Int128(outputPer1M.nanos))
            + Int128(max(0, cacheWrites.fiveMinute)) * input + 4 * Int128(max(0, cacheWrites.oneHour)) * input
        let tokenNanos = (tokenQuarterMicroNanos + 2_000_000) / 4_000_000
        let total = Int128(perRequest.nanos) + Int128(perModel.nanos) + tokenNanos
        return Money(nanos: Int64(clamping: total))
    }
}

/// Prompt tokens written to a provider's prompt cache, by how long the entry lives.
public struct CacheWrites: Sendable, Hashable {
    public var fiveMinute: Int64
    public var oneHour: Int64

    public init(fiveMinute: Int64 = 0, oneHour: Int64 = 0) {
        self.fiveMinute = fiveMinute
        self.oneHour = oneHour
    }

    public static let none = CacheWrites()
}

/// What `Store.priceInForce` finds: the row in force (nil when none of the names has one) and
/// when the answer changes by the calendar alone.
public struct PriceInForce: Sendable, Hashable {
    public var record: PriceRecord?
    /// Microseconds since the Unix epoch when the next scheduled row comes into force, if any.
    public var nextChangeMicros: Int64?

    public init(record: PriceRecord?, nextChangeMicros: Int64?) {
        self.record = record
        self.nextChangeMicros = nextChangeMicros
    }
}

/// A price row as stored: a model's prices from a moment on, until a newer row replaces it.
public struct PriceRecord: Sendable, Hashable, Codable {
    public var model: String
    public var price: ModelPrice
    /// Microseconds since the Unix epoch from which this row applies.
    public var effectiveFromMicros: Int64

    public init(model: String, price: ModelPrice, effectiveFromMicros: Int64) {
        self.model = model
        self.price = price
        self.effectiveFromMicros = effectiveFromMicros
    }
}

/// Where the price applied to a request came from.
public enum PriceSource: String, Sendable, Codable {
    /// A row written by `set-pricing`.
    case configured
    /// The price table shipped with lmsvr (OpenAI and Anthropic models).
    case catalog
    /// No row: the default price per request.
    case fallback = "default"
}
