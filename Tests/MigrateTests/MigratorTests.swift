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
