import Core
import SQLStore

/// Applies the shipped migrations to a database, each in its own transaction, exactly once.
///
/// On PostgreSQL the whole run holds a session advisory lock, so several `lmsvr migrate`
/// processes (or replicas starting together) apply each step once; on SQLite each step runs under
/// `BEGIN IMMEDIATE` and re-checks what is applied inside the transaction.
public struct Migrator<Database: SQLDatabase>: Sendable {
    public let database: Database
    public let migrations: [Migration]

    /// An arbitrary constant naming lmsvr's advisory lock.
    static var advisoryLockKey: Int64 { 7_245_019_338 }

    public init(database: Database, migrations: [Migration]? = nil) {
        self.database = database
        self.migrations = migrations ?? MigrationCatalog.migrations(for: database.dialect)
    }

    static var createTable: String {
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
        checksum TEXT NOT NULL, applied_us BIGINT NOT NULL)
        """
    }

    /// Every known migration with its state, plus an error for applied versions this binary lacks.
    ///
    /// Read-only, one statement or two, without the advisory lock: every command checks this, and
    /// through a pooler in transaction mode a session lock taken and released in separate
    /// statements can land on different server connections, leaving it held for good.
    public func status() async throws -> [MigrationState] {
        let migrations = self.migrations
        let dialect = database.dialect
        do {
            return try await database.withConnection { c in
                let exists = dialect == .postgres
                    ? try c.execute("SELECT 1 WHERE to_regclass('schema_migrations') IS NOT NULL").isEmpty == false
                    : try c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").isEmpty == false
                return try Self.states(exists ? try Self.applied(c) : [:], migrations)
            }
        } catch let error as SQLError {
            throw error.storeError
        }
    }

    static func states(_ applied: [Int: (checksum: String, at: Int64)], _ migrations: [Migration]) throws -> [MigrationState] {
        if let unknown = applied.keys.first(where: { v in !migrations.contains { $0.version == v } }) {
            throw MigrationError.unknownApplied(version: unknown)
        }
        return migrations.map { m in
            guard let row = applied[m.version] else {
                return MigrationState(version: m.version, name: m.name, state: .pending, appliedAtMicros: nil)
            }
            return MigrationState(version: m.version, name: m.name,
                                  state: row.checksum == m.checksum ? .applied : .modified, appliedAtMicros: row.at)
        }
    }

    /// Applies what is pending, in order. Returns the migrations this call applied (empty when the
    /// schema was current). Refuses to run at all when an applied migration was edited.
    @discardableResult
    public func migrate(nowMicros: @escaping @Sendable () -> Int64 = Core.nowMicros) async throws -> [Migration] {
        let migrations = self.migrations
        return try await run { c in
            try Self.verify(try Self.applied(c), against: migrations)
            var done: [Migration] = []
            for m in migrations {
                let didApply = try c.inTransaction { c -> Bool in
                    guard try c.execute("SELECT 1 FROM schema_migrations WHERE version = $1", .int(Int64(m.version))).isEmpty
                    else { return false }
                    do {
                        try c.executeScript(m.sql)
                    } catch {
                        throw MigrationError.failed(name: m.name, reason: "\(error)")
                    }
                    try c.execute("INSERT INTO schema_migrations (version, name, checksum, applied_us) VALUES ($1, $2, $3, $4)",
                                  .int(Int64(m.version)), .text(m.name), .text(m.checksum), .int(nowMicros()))
                    return true
                }
                if didApply { done.append(m) }
            }
            return done
        }
    }

    /// Throws `StoreError.schemaBehind` unless every shipped migration is applied unchanged.
    public func requireCurrent() async throws {
        let states = try await status()
        if let modified = states.first(where: { $0.state == .modified }) {
            throw MigrationError.modified(name: modified.name)
        }
        let pending = states.filter { $0.state == .pending }
        if !pending.isEmpty {
            throw StoreError.schemaBehind(
                "the database schema is behind this lmsvr (\(pending.count) pending migration(s), first \(pending[0].name)); run `lmsvr migrate`")
        }
    }

    /// Runs `body` on one connection, under the advisory lock on PostgreSQL. The lock comes
    /// first: even `CREATE TABLE IF NOT EXISTS` collides when two sessions run it at once.
    private func run<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        let dialect = database.dialect
        do {
            return try await database.withConnection { c in
                if dialect == .postgres {
                    try c.execute("SELECT pg_advisory_lock($1)", .int(Self.advisoryLockKey))
                }
                defer {
                    if dialect == .postgres { _ = try? c.execute("SELECT pg_advisory_unlock($1)", .int(Self.advisoryLockKey)) }
                }
                try c.executeScript(Self.createTable)
                return try body(c)
            }
        } catch let error as SQLError {
            throw error.storeError
        }
    }

    static func applied(_ c: any SQLConnection) throws -> [Int: (checksum: String, at: Int64)] {
        var result: [Int: (checksum: String, at: Int64)] = [:]
        for row in try c.execute("SELECT version, checksum, applied_us FROM schema_migrations") {
            result[Int(try row.int(0))] = (try row.text(1), try row.int(2))
        }
        return result
    }

    static func verify(_ applied: [Int: (checksum: String, at: Int64)], against migrations: [Migration]) throws {
        for (version, row) in applied {
            guard let m = migrations.first(where: { $0.version == version }) else {
                throw MigrationError.unknownApplied(version: version)
            }
            if m.checksum != row.checksum { throw MigrationError.modified(name: m.name) }
        }
    }
}
