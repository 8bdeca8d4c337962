import Core
import Foundation
import Migrate
import PGStore
import SQLStore
import SQLiteStore
import TestSupport
import Testing

/// The repository root, from this file's location.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

func openDatabase(_ backend: Backend) async throws -> any SQLDatabase {
    switch backend {
    case .sqlite: return try await SQLiteDatabase.open(path: TestDatabases.freshSQLitePath())
    case .postgres: return try await PGDatabase.connect(conninfo: try await TestDatabases.freshPostgresURL(), size: 2)
    }
}

func migrate(_ database: any SQLDatabase) async throws -> [Migration] {
    if let db = database as? SQLiteDatabase { return try await Migrator(database: db).migrate() }
    return try await Migrator(database: database as! PGDatabase).migrate()
}

func status(_ database: any SQLDatabase) async throws -> [MigrationState] {
    if let db = database as? SQLiteDatabase { return try await Migrator(database: db).status() }
    return try await Migrator(database: database as! PGDatabase).status()
}

// MARK: Tests

struct MigratorTests {
    @Test(arguments: [SQLDialect.sqlite, .postgres])
    func embeddedMigrationsMatchTheFilesUnderSql(dialect: SQLDialect) throws {
        let folder = repositoryRoot.appendingPathComponent("sql/\(dialect == .sqlite ? "sqlite" : "postgres")")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".sql") }.sorted()
        let embedded = MigrationCatalog.migrations(for: dialect)
        #expect(embedded.map { $0.name + ".sql" } == files, "run scripts/embed-data.py")
        for (file, migration) in zip(files, embedded) {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            #expect(sha256Hex(text) == migration.checksum, "\(file) differs from the embedded copy: run scripts/embed-data.py")
        }
    }

    @Test func bothDialectsHaveTheSameNumbering() {
        #expect(MigrationCatalog.migrations(for: .sqlite).map(\.version) == MigrationCatalog.migrations(for: .postgres).map(\.version))
    }

    @Test(arguments: Backend.allCases)
    func migrateAppliesOnceAndIsThenANoOp(backend: Backend) async throws {
        let database = try await openDatabase(backend)
        defer { Task { await database.shutdown() } }
        let before = try await status(database)
        #expect(before.allSatisfy { $0.state == .pending })
        let first = try await migrate(database)
        #expect(first.count == MigrationCatalog.migrations(for: database.dialect).count)
        #expect(try await migrate(database).isEmpty)
        #expect(try await status(database).allSatisfy { $0.state == .applied && $0.appliedAtMicros != nil })
    }

    @Test(arguments: Backend.allCases)
    func anEditedMigrationIsRefused(backend: Backend) async throws {
        let database = try await openDatabase(backend)
        defer { Task { await database.shutdown() } }
        _ = try await migrate(database)
        _ = try await database.withConnection { try $0.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1") }
        await #expect(throws: MigrationError.self) { _ = try await migrate(database) }
        #expect(try await status(database).first?.state == .modified)
    }

    @Test func aFailingMigrationRollsBackWhole() async throws {
        let database = try await SQLiteDatabase.open(path: TestDatabases.freshSQLitePath())
        defer { Task { await database.shutdown() } }
        let broken = [Migration(version: 1, name: "0001_broken", sql: "CREATE TABLE t (x INTEGER); CREATE TABLE t (y INTEGER);")]
        await #expect(throws: MigrationError.self) { try await Migrator(database: database, migrations: broken).migrate() }
        let tables = try await database.withConnection {
            try $0.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 't'")[0].int(0)
        }
        #expect(tables == 0)
        #expect(try await Migrator(database: database, migrations: broken).status().first?.state == .pending)
    }

    /// 0007 rebuilds SQLite's holds keyed by their id, without the expiry index: holds open
    /// during the upgrade (a server still running, its requests in flight) are carried over whole.
    @Test func sqliteHoldsRebuiltWithoutRowidKeepOpenHolds() async throws {
        let database = try await SQLiteDatabase.open(path: TestDatabases.freshSQLitePath())
        defer { Task { await database.shutdown() } }
        let all = MigrationCatalog.migrations(for: .sqlite)
        let before = Array(all.prefix { $0.version < 7 })
        #expect(before.count == 6)
        try await Migrator(database: database, migrations: before).migrate()
        _ = try await database.withConnection { c in
            try c.executeScript("""
                INSERT INTO customers (name, email, created_us) VALUES ('c', 'c@example.com', 1);
                INSERT INTO holds (id, customer_id, key_id, period, amount_nanos, created_us, expires_us, endpoint, dialect,
                                   provider, model, tokens, key_nanos)
                VALUES ('req-1', 1, 7, '2026-11', 1234, 10, 20, '/api/chat', 'ollama', 'ollama', 'llama3', 99, 1000),
                       ('req-2', 1, NULL, '2026-11', 5, 11, 21, '/v1/messages', 'anthropic', 'ollama', 'qwen', 0, 0);
                """)
        }
        let applied = try await Migrator(database: database, migrations: Array(all.prefix { $0.version <= 7 })).migrate()
        #expect(applied.map(\.version) == [7])
        let rows = try await database.withConnection { c in
            try c.execute("""
                SELECT id, customer_id, key_id, period, amount_nanos, created_us, expires_us, endpoint, dialect, provider, \
                model, tokens, key_nanos FROM holds ORDER BY id
                """).map { row in (0..<13).map { row.values[$0] } }
        }
        #expect(rows == [
            [.text("req-1"), .int(1), .int(7), .text("2026-11"), .int(1234), .int(10), .int(20), .text("/api/chat"),
             .text("ollama"), .text("ollama"), .text("llama3"), .int(99), .int(1000)],
            [.text("req-2"), .int(1), .null, .text("2026-11"), .int(5), .int(11), .int(21), .text("/v1/messages"),
             .text("anthropic"), .text("ollama"), .text("qwen"), .int(0), .int(0)],
        ])
        let schema = try await database.withConnection { c in
            try c.execute("SELECT type, name, COALESCE(sql, '') FROM sqlite_master WHERE tbl_name = 'holds' ORDER BY name")
                .map { "\(try $0.text(0)) \(try $0.text(1)) \(try $0.text(2))" }
        }
        #expect(schema.count == 2, "\(schema)") // the table and holds_customer_key: no expiry index, no rowid index
        #expect(schema.contains { $0.hasPrefix("table holds ") && $0.contains("WITHOUT ROWID") })
        #expect(schema.contains { $0.hasPrefix("index holds_customer_key ") })
        // A duplicate hold id is still refused (the key is the primary key).
        await #expect(throws: (any Error).self) {
            try await database.withConnection { c in
                try c.executeScript("""
                    INSERT INTO holds (id, customer_id, period, amount_nanos, created_us, expires_us, endpoint, dialect, provider, model)
                    VALUES ('req-1', 1, '2026-11', 1, 1, 1, 'e', 'd', 'p', 'm')
                    """)
            }
        }
    }

    @Test func postgresHoldsLoseTheirExpiryIndex() async throws {
        let database = try await PGDatabase.connect(conninfo: try await TestDatabases.freshPostgresURL(), size: 1)
        defer { Task { await database.shutdown() } }
        try await Migrator(database: database).migrate()
        let indexes = try await database.withConnection { c in
            try c.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'holds' ORDER BY indexname").map { try $0.text(0) }
        }
        #expect(indexes == ["holds_customer_key", "holds_pkey"])
    }

    @Test func postgresServeRefusesASchemaThatIsBehind() async throws {
        let database = try await PGDatabase.connect(conninfo: try await TestDatabases.freshPostgresURL(), size: 1)
        defer { Task { await database.shutdown() } }
        await #expect(throws: StoreError.self) { try await Migrator(database: database).requireCurrent() }
        try await Migrator(database: database).migrate()
        try await Migrator(database: database).requireCurrent()
    }

    @Test func concurrentMigratorsOnPostgresApplyEachStepOnce() async throws {
        let url = try await TestDatabases.freshPostgresURL()
        let applied = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    let database = try await PGDatabase.connect(conninfo: url, size: 1)
                    let count = try await Migrator(database: database).migrate().count
                    await database.shutdown()
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(applied == MigrationCatalog.migrations(for: .postgres).count)
    }
}
