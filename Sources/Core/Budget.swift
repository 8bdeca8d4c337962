/// A customer's standing in one budget period (a UTC calendar month).
public struct BudgetStatus: Sendable, Hashable, Codable {
    public var customerId: Int64
    public var period: BudgetPeriod
    /// `nil` means unlimited.
    public var budget: Money?
    public var spent: Money
    public var held: Money
    /// Set when these figures are a key's own budget (which refused a request), not its customer's.
    public var keyId: Int64?

    public init(customerId: Int64, period: BudgetPeriod, budget: Money?, spent: Money, held: Money, keyId: Int64? = nil) {
        self.customerId = customerId
        self.period = period
        self.budget = budget
        self.spent = spent
        self.held = held
        self.keyId = keyId
    }

    /// What can still be spent or held; `nil` when unlimited.
    public var remaining: Money? { budget.map { $0 - spent - held } }
}

/// What a request asks the store to set aside before the upstream is called.
public struct HoldRequest: Sendable, Hashable {
    public var holdId: String
    public var customerId: Int64
    public var keyId: Int64?
    public var amount: Money
    /// The most tokens the request can use (prompt bound plus output bound): what it takes from
    /// tokens-per-minute limits until its settle gives back the unused part.
    public var tokens: Int64
    public var nowMicros: Int64
    public var expiresAtMicros: Int64
    /// What the request is, so that a hold released after a crash leaves a meaningful usage row.
    public var endpoint: String
    public var dialect: String
    public var provider: String
    public var model: String

    public init(holdId: String, customerId: Int64, keyId: Int64?, amount: Money, tokens: Int64 = 0, nowMicros: Int64,
                expiresAtMicros: Int64, endpoint: String = "", dialect: String = "", provider: String = "",
                model: String = "") {
        self.holdId = holdId
        self.customerId = customerId
        self.keyId = keyId
        self.amount = amount
        self.tokens = tokens
        self.nowMicros = nowMicros
        self.expiresAtMicros = expiresAtMicros
        self.endpoint = endpoint
        self.dialect = dialect
        self.provider = provider
        self.model = model
    }
}

/// The answer to a hold.
public enum HoldDecision: Sendable, Hashable {
    /// The amount is set aside in this period.
    case admitted(period: BudgetPeriod)
    /// spent + held + amount would exceed the budget (the customer's, or the key's own when
    /// `keyId` is set); nothing was changed.
    case refused(BudgetStatus)
    /// A rate or concurrency limit of the key or the customer is reached; nothing was changed.
    case limited(LimitRefusal)
}

/// What a settle did.
public enum SettleResult: Sendable, Hashable {
    /// The hold was dropped, the cost charged and the row written.
    case settled
    /// The hold was gone (released as expired, or never written), yet the cost was charged and
    /// the row written: delivered service is paid for even then.
    case settledWithoutHold
    /// This request was settled before; nothing changed.
    case alreadySettled
}

/// A budget period: one UTC calendar month, written `YYYY-MM`.
public struct BudgetPeriod: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    public var year: Int
    public var month: Int

    public init(year: Int, month: Int) {
        self.year = year
        self.month = month
    }

    /// The month that contains an instant.
    public init(containingMicros micros: Int64) {
        let day = UTCDay(containingMicros: micros)
        self.init(year: day.year, month: day.month)
    }

    public var description: String {
        (year < 1000 ? String(repeating: "0", count: 4 - String(year).count) : "") + "\(year)-" + (month < 10 ? "0" : "") + "\(month)"
    }

    public static func < (lhs: BudgetPeriod, rhs: BudgetPeriod) -> Bool {
        (lhs.year, lhs.month) < (rhs.year, rhs.month)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        let parts = text.split(separator: "-")
        guard parts.count == 2, let y = Int(parts[0]), let m = Int(parts[1]) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad period"))
        }
        self.init(year: y, month: m)
    }
}
