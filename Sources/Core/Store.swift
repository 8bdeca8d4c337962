/// Everything lmsvr keeps, behind one protocol with a SQLite and a PostgreSQL implementation.
///
/// Methods speak the domain: `nil` means "not found", and the caller (CLI or HTTP layer) decides
/// what that means. Errors are `StoreError`. Implementations run every blocking database call off
/// the caller's thread and retry deadlocks and serialization failures themselves.
public protocol Store: Sendable {
    // MARK: Customers
    func createCustomer(name: String, email: String, monthlyBudget: Money?, nowMicros: Int64) async throws -> Customer
    func customer(id: Int64) async throws -> Customer?
    func listCustomers() async throws -> [Customer]
    /// Changes a customer's monthly budget (`nil`: unlimited). Returns the updated customer.
    func setBudget(customerId: Int64, monthlyBudget: Money?) async throws -> Customer?

    // MARK: Keys
    /// Stores a new key's hash; `nil` when the customer does not exist.
    func createKey(customerId: Int64, options: KeyOptions, nowMicros: Int64) async throws -> NewKey?
    /// Gives a key a new secret; the current one keeps working for `graceMicros` more (a secret
    /// rotated out before stops now). Scopes, limits, budget and ledger stay with the key.
    /// `nil` when there is no such key or it is revoked.
    func rotateKey(id: Int64, graceMicros: Int64, nowMicros: Int64) async throws -> NewKey?
    /// Revokes a key; returns it (already revoked keys keep their first revocation time), or `nil`.
    func revokeKey(id: Int64, nowMicros: Int64) async throws -> KeyRecord?
    func key(id: Int64) async throws -> KeyRecord?
    func listKeys(customerId: Int64) async throws -> [KeyRecord]
    /// Changes what a key may call: each argument left alone when `nil`, cleared when `.some(nil)`.
    func setKeyScope(id: Int64, apis: Set<APIFamily>??, models: [String]??) async throws -> KeyRecord?
    func setLimits(keyId: Int64, _ change: LimitChange) async throws -> KeyRecord?
    /// Changes a customer's rate limits (`change.monthlyBudget` is ignored: see `setBudget`).
    func setLimits(customerId: Int64, _ change: LimitChange) async throws -> Customer?
    /// Resolves a key hash (current or rotated-out secret) to its owner; revoked keys are
    /// returned with `revoked` set, expired ones with their expiry.
    func principal(forKeyHash hash: String) async throws -> Principal?
    /// Records when keys were last used (key id → time), never moving a time back.
    func recordKeyUse(_ lastUse: [Int64: Int64]) async throws
    /// A key's spend this month and its limits in use.
    func keyStanding(keyId: Int64, nowMicros: Int64) async throws -> KeyStanding?
    /// A customer's rate limits in use.
    func customerLimitUse(customerId: Int64, nowMicros: Int64) async throws -> LimitUse?

    // MARK: Pricing and models
    /// Adds a price row effective from `effectiveFromMicros`; older rows stay for history.
    func setPrice(model: String, price: ModelPrice, effectiveFromMicros: Int64) async throws -> PriceRecord
    /// In one read: the row in force at an instant for the first of `models` that has one, and
    /// when the next row of any of them comes into force (until then the answer stands, unless
    /// a row is written).
    func priceInForce(models: [String], atMicros: Int64) async throws -> PriceInForce
    /// The row in force now for every model that has one.
    func currentPrices(atMicros: Int64) async throws -> [PriceRecord]
    func upsertModelMetadata(_ models: [ModelMetadata]) async throws
    func modelMetadata() async throws -> [ModelMetadata]

    // MARK: Budgets
    /// Sets `request.amount` aside if it fits the customer's budget and the key's, and the
    /// request fits every rate and concurrency limit of both, atomically under the customer's
    /// period row lock: all or nothing.
    func hold(_ request: HoldRequest) async throws -> HoldDecision
    /// Drops the hold, adds the actual cost to spent and writes the usage row, in one
    /// transaction. Idempotent by request id: a second settle changes nothing. A settle that
    /// finds its hold gone (released as expired, or never written) still charges and writes
    /// its row, replacing a `hold_expired` row.
    func settle(holdId: String, usage: UsageRecord) async throws -> SettleResult
    /// Moves the expiry of these open holds to `untilMicros` (the holds of requests still
    /// running, so that no replica releases them). Returns how many were extended.
    func extendHolds(ids: [String], untilMicros: Int64) async throws -> Int
    /// Writes a usage row for a request that never held anything (e.g. refused with 402).
    func recordUnheld(_ usage: UsageRecord) async throws
    /// Releases holds whose expiry has passed, each once, with a `hold_expired` usage row.
    /// Returns how many this call released.
    func releaseExpiredHolds(nowMicros: Int64, limit: Int) async throws -> Int
    func budgetStatus(customerId: Int64, period: BudgetPeriod) async throws -> BudgetStatus?

    // MARK: Reports
    /// The per-day rollups by model over whole UTC days: one customer's, or (nil) everyone's
    /// summed. A month is a few rows per model and day whatever the ledger holds.
    func dailyUsage(customerId: Int64?, range: DayRange) async throws -> [DailyModelUsage]
    /// Every customer with their month's budget, spent and held, in id order (one query).
    func customerMonths(period: BudgetPeriod) async throws -> [CustomerMonth]
    /// A customer's latest ledger rows, newest first (the `(customer_id, created_us)` index).
    func latestUsage(customerId: Int64, limit: Int) async throws -> [UsageRecord]
    /// Every price row ever set, by model then from when it applies: the history of prices.
    func priceHistory() async throws -> [PriceRecord]
    /// Totals per model over whole UTC days, from the per-day rollups (never a ledger scan).
    func usageReport(customerId: Int64, range: DayRange) async throws -> UsageReport
    /// Calls `body` once per usage row in time order, streaming: never the whole set in memory.
    /// `body` runs on the store's thread and may block (it writes the export).
    func exportUsage(customerId: Int64, range: DayRange,
                     _ body: @escaping @Sendable (UsageRecord) throws -> Void) async throws -> Int

    /// Makes sure the ledger is ready for the months around `nowMicros` (on PostgreSQL, the
    /// month partitions of this month and the next). Cheap when they exist; run periodically.
    func prepareLedger(nowMicros: Int64) async throws
    /// Hands every ledger row of the months before `period` to `body` (in time order), calls
    /// `keep` (which must make them durable: the archive file is complete and on disk), and only
    /// then removes those months from the ledger (PostgreSQL drops their partitions whole).
    /// Rollups and budgets stay, so reports and spent do not change. Returns how many rows went.
    func archiveUsage(before period: BudgetPeriod, _ body: @escaping @Sendable (UsageRecord) throws -> Void,
                      keep: @escaping @Sendable () async throws -> Void) async throws -> Int

    // MARK: Health and lifecycle
    /// Runs a trivial query; throws `StoreError.unavailable` when the database cannot be reached.
    func ping() async throws
    /// Commits a change notice `sync:TOKEN` through the writers' own path, for `ChangeConfirmer`
    /// (PostgreSQL: NOTIFY on the change channel, only while the change triggers are in place;
    /// SQLite, which has no notices: nothing). Returns whether it was sent.
    func sendChangeMarker(_ token: String) async throws -> Bool
    func close() async
    /// The connection pool's use, where there is a pool (PostgreSQL).
    var poolStatistics: PoolStatistics? { get }
}

/// What can go wrong in a store, in terms a caller can act on.
public enum StoreError: Error, CustomStringConvertible, Equatable {
    /// The database cannot be reached or refused the connection. The message is redacted.
    case unavailable(String)
    /// A uniqueness rule was broken (e.g. a second customer with the same email).
    case duplicate(String)
    /// The schema is older than this binary; `lmsvr migrate` is needed.
    case schemaBehind(String)
    /// Any other database failure, already redacted.
    case failed(String)
    /// The pool had no free connection within its wait limit.
    case poolExhausted
    /// Locks or serialization conflicts outlasted every retry (SQLite's busy timeout, say).
    case busy(String)

    /// Whether this passes when the database is back (or has room again): worth retrying
    /// without limit, unlike a refusal of the data itself.
    public var isOutage: Bool {
        switch self {
        case .unavailable, .poolExhausted, .busy: true
        case .failed, .duplicate, .schemaBehind: false
        }
    }

    public var description: String {
        switch self {
        case .unavailable(let s): "database unavailable: \(s)"
        case .duplicate(let s): s
        case .schemaBehind(let s): s
        case .failed(let s): "database error: \(s)"
        case .poolExhausted: "database busy: no connection free in time"
        case .busy(let s): "database busy: \(s)"
        }
    }
}

/// How a connection pool is used right now, for metrics.
public struct PoolStatistics: Sendable, Hashable {
    public var open: Int
    public var idle: Int
    public var waiting: Int

    public init(open: Int, idle: Int, waiting: Int) {
        self.open = open
        self.idle = idle
        self.waiting = waiting
    }
}

extension Store {
    /// A key with a name and no expiry or scope.
    public func createKey(customerId: Int64, name: String?, nowMicros: Int64) async throws -> NewKey? {
        try await createKey(customerId: customerId, options: KeyOptions(name: name), nowMicros: nowMicros)
    }
}
