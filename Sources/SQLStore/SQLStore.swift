import Core

/// The `Store` over any `SQLDatabase`: the same statements run on SQLite and PostgreSQL, so the
/// two backends behave identically by construction (and one contract suite checks both).
///
/// Row locks: a hold locks its customer's period row (the conditional `UPDATE`); settle and
/// release lock the hold row (`DELETE … RETURNING`) and then the period row. Every transaction
/// takes them in that order, so they cannot deadlock each other; the retry in
/// `SQLDatabase.transaction` covers what is left.
public struct SQLStore<Database: SQLDatabase>: Store {
    public let database: Database
    /// PostgreSQL's coalesced single-statement holds and settles (nil on SQLite, whose group
    /// commit already shares one fsync among the writes that arrive together).
    let batching: PostgresBatching<Database>?

    public init(database: Database) {
        self.database = database
        self.batching = database.dialect == .postgres ? PostgresBatching(database: database) : nil
    }

    /// Runs a transaction and turns driver errors into `StoreError`s.
    func write<T: Sendable>(durable: Bool = true, priority: SQLPriority = .normal, attempts: Int = 10,
                            _ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        do {
            return try await database.transaction(maxAttempts: attempts, durable: durable, priority: priority, body)
        } catch let error as SQLError {
            throw error.storeError
        }
    }

    /// Runs reads outside an explicit transaction and turns driver errors into `StoreError`s.
    func read<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        do {
            return try await database.withConnection(body)
        } catch let error as SQLError {
            throw error.storeError
        }
    }

    public func ping() async throws {
        _ = try await read { try $0.execute("SELECT 1") }
    }

    public func sendChangeMarker(_ token: String) async throws -> Bool {
        guard database.dialect == .postgres else { return false }
        // One statement (its own transaction, committed without waiting for the WAL flush: its
        // place in the notice queue is fixed when it is queued), and only while all five of
        // migration 0008's triggers are there and enabled: a marker must not vouch for changes
        // that no longer announce themselves.
        return try await read { c in
            try c.execute(
                """
                SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2) \
                WHERE (SELECT count(*) FROM pg_trigger WHERE tgenabled IN ('O', 'A') AND \
                tgrelid IN ('api_keys'::regclass, 'model_prices'::regclass) AND tgname IN ('api_keys_notify_update', \
                'api_keys_notify_delete', 'api_keys_notify_truncate', 'model_prices_notify', 'model_prices_notify_truncate')) = 5
                """, .text(ChangeNotice.channel), .text(ChangeNotice.sync(token).payload)).count == 1
        }
    }

    public func close() async {
        await database.shutdown()
    }

    public var poolStatistics: PoolStatistics? { database.poolStatistics }

    // MARK: Customers

    static var customerColumns: String { "id, name, email, monthly_budget_nanos, created_us, rpm, tpm, concurrency" }

    static func customer(from row: SQLRow) throws -> Customer {
        Customer(id: try row.int(0), name: try row.text(1), email: try row.text(2),
                 monthlyBudget: try row.optionalInt(3).map(Money.init(nanos:)), createdAtMicros: try row.int(4),
                 limits: RateLimits(requestsPerMinute: try row.optionalInt(5), tokensPerMinute: try row.optionalInt(6),
                                    concurrency: try row.optionalInt(7)))
    }

    public func createCustomer(name: String, email: String, monthlyBudget: Money?, nowMicros: Int64) async throws -> Customer {
        do {
            return try await write { c in
                let rows = try c.execute(
                    "INSERT INTO customers (name, email, monthly_budget_nanos, created_us) VALUES ($1, $2, $3, $4) RETURNING \(Self.customerColumns)",
                    .text(name), .text(email), .optional(monthlyBudget?.nanos), .int(nowMicros))
                return try Self.customer(from: rows[0])
            }
        } catch StoreError.duplicate {
            throw StoreError.duplicate("a customer with email \(email) already exists")
        }
    }

    public func customer(id: Int64) async throws -> Customer? {
        try await read { c in
            try c.execute("SELECT \(Self.customerColumns) FROM customers WHERE id = $1", .int(id)).first.map(Self.customer)
        }
    }

    public func listCustomers() async throws -> [Customer] {
        try await read { c in
            try c.execute("SELECT \(Self.customerColumns) FROM customers ORDER BY id").map(Self.customer)
        }
    }

    public func setBudget(customerId: Int64, monthlyBudget: Money?) async throws -> Customer? {
        try await write { c in
            let rows = try c.execute(
                "UPDATE customers SET monthly_budget_nanos = $2 WHERE id = $1 RETURNING \(Self.customerColumns)",
                .int(customerId), .optional(monthlyBudget?.nanos))
            guard let row = rows.first else { return nil }
            try c.notifyChange(ChangeNotice.customer(customerId).payload)
            return try Self.customer(from: row)
        }
    }
}

/// What a NOTIFY on `ChangeNotice.channel` says changed, so listeners evict the right cache.
/// (Migration 0008's triggers also send `key:ID` and `price:MODEL`, and `flush` on a TRUNCATE.)
public enum ChangeNotice: Sendable, Hashable {
    case key(Int64)
    case customer(Int64)
    case price(String)
    /// Changes nothing: a marker a replica sends to see it come back (`ChangeConfirmer`).
    case sync(String)

    /// The PostgreSQL channel every change is announced on.
    public static let channel = "lmsvr_changes"

    public var payload: String {
        switch self {
        case .key(let id): "key:\(id)"
        case .customer(let id): "customer:\(id)"
        case .price(let model): "price:\(model)"
        case .sync(let token): "sync:\(token)"
        }
    }
}
