/// An API key as stored: never the key itself, only its hash and display prefix.
public struct KeyRecord: Sendable, Hashable, Codable {
    public var id: Int64
    public var customerId: Int64
    public var name: String?
    public var displayPrefix: String
    public var createdAtMicros: Int64
    public var revokedAtMicros: Int64?
    /// When the key stops working (`nil`: never).
    public var expiresAtMicros: Int64?
    /// After `rotate-key`, the previous secret keeps working until then.
    public var previousExpiresAtMicros: Int64?
    /// When it was last used, to within the gateway's flush interval (`nil`: never, or not yet written).
    public var lastUsedAtMicros: Int64?
    public var scope: KeyScope
    public var limits: RateLimits
    /// The key's own monthly budget, inside its customer's (`nil`: only the customer's applies).
    public var monthlyBudget: Money?

    public init(id: Int64, customerId: Int64, name: String?, displayPrefix: String, createdAtMicros: Int64,
                revokedAtMicros: Int64?, expiresAtMicros: Int64? = nil, previousExpiresAtMicros: Int64? = nil,
                lastUsedAtMicros: Int64? = nil, scope: KeyScope = .everything, limits: RateLimits = .none,
                monthlyBudget: Money? = nil) {
        self.id = id
        self.customerId = customerId
        self.name = name
        self.displayPrefix = displayPrefix
        self.createdAtMicros = createdAtMicros
        self.revokedAtMicros = revokedAtMicros
        self.expiresAtMicros = expiresAtMicros
        self.previousExpiresAtMicros = previousExpiresAtMicros
        self.lastUsedAtMicros = lastUsedAtMicros
        self.scope = scope
        self.limits = limits
        self.monthlyBudget = monthlyBudget
    }

    public var isRevoked: Bool { revokedAtMicros != nil }

    public func isExpired(atMicros now: Int64) -> Bool { expiresAtMicros.map { $0 <= now } ?? false }
}

/// A key that was just created, with the plaintext that is shown exactly once.
public struct NewKey: Sendable {
    public var record: KeyRecord
    public var plaintext: String

    public init(record: KeyRecord, plaintext: String) {
        self.record = record
        self.plaintext = plaintext
    }
}

/// What a new key is created with, beyond its customer.
public struct KeyOptions: Sendable, Hashable {
    public var name: String?
    public var expiresAtMicros: Int64?
    public var scope: KeyScope

    public init(name: String? = nil, expiresAtMicros: Int64? = nil, scope: KeyScope = .everything) {
        self.name = name
        self.expiresAtMicros = expiresAtMicros
        self.scope = scope
    }
}

/// Who a request's key belongs to, as authentication resolves it.
public struct Principal: Sendable, Hashable {
    public var keyId: Int64
    public var customerId: Int64
    public var revoked: Bool
    /// When the presented secret stops working: the key's expiry, or the end of a rotated-out
    /// secret's grace, whichever is first.
    public var expiresAtMicros: Int64?
    public var scope: KeyScope

    public init(keyId: Int64, customerId: Int64, revoked: Bool, expiresAtMicros: Int64? = nil, scope: KeyScope = .everything) {
        self.keyId = keyId
        self.customerId = customerId
        self.revoked = revoked
        self.expiresAtMicros = expiresAtMicros
        self.scope = scope
    }

    public func isExpired(atMicros now: Int64) -> Bool { expiresAtMicros.map { $0 <= now } ?? false }
}

/// A key's or customer's use of its limits right now, for `/v1/usage` and `check-budget`.
public struct LimitUse: Sendable, Hashable, Codable {
    public var limits: RateLimits
    /// Requests and tokens taken in the bucket now (they drain at the limit's rate).
    public var requests: Int64
    public var tokens: Int64
    public var inFlight: Int64

    public init(limits: RateLimits, requests: Int64, tokens: Int64, inFlight: Int64) {
        self.limits = limits
        self.requests = requests
        self.tokens = tokens
        self.inFlight = inFlight
    }
}

/// A key's standing this month: its spend against its own budget, and its limits in use.
public struct KeyStanding: Sendable, Hashable, Codable {
    public var key: KeyRecord
    public var period: BudgetPeriod
    /// What the key spent and holds this month: kept only while it has its own budget (`nil`
    /// without one; the customer's figures count every key).
    public var spent: Money?
    public var held: Money?
    public var use: LimitUse

    public init(key: KeyRecord, period: BudgetPeriod, spent: Money?, held: Money?, use: LimitUse) {
        self.key = key
        self.period = period
        self.spent = spent
        self.held = held
        self.use = use
    }
}
