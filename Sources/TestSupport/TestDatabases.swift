import Core
import Foundation
import Migrate
import PGStore
import SQLStore
import SQLiteStore

/// Fresh databases for tests: a new SQLite file, or a new database on the PostgreSQL that
/// `scripts/test.sh` starts. PostgreSQL tests never skip: without the server they fail.
public enum TestDatabases {
    public struct MissingPostgres: Error, CustomStringConvertible {
        public var description: String {
            "LMSVR_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL"
        }
    }

    /// The admin URL of the test PostgreSQL server.
    public static func postgresAdminURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["LMSVR_TEST_POSTGRES_URL"], !url.isEmpty else {
            throw MissingPostgres()
        }
        return url
    }

    /// Creates an empty database and returns its URL.
    public static func freshPostgresURL() async throws -> String {
        let admin = try postgresAdminURL()
        let name = "lmsvr_t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        let database = try await PGDatabase.connect(conninfo: admin, size: 1)
        defer { Task { await database.shutdown() } }
        _ = try await database.withConnection { try $0.executeScript("CREATE DATABASE \(name)") }
        await database.shutdown()
        guard let slash = admin.lastIndex(of: "/") else { return admin }
        return admin[..<slash] + "/" + name
    }

    /// A path for a new SQLite database in a fresh temporary directory.
    public static func freshSQLitePath() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lmsvr-test-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent("lmsvr.db").path
    }
}

/// The two store backends, for tests that must pass on both.
public enum Backend: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite
    case postgres

    public var description: String { rawValue }

    /// A migrated, empty store and the raw database under it.
    public func makeStore(poolSize: Int = 20, sqliteBusyTimeoutMillis: Int = 10_000) async throws
        -> (store: any Store, database: any SQLDatabase, url: String)
    {
        switch self {
        case .sqlite:
            let path = TestDatabases.freshSQLitePath()
            let database = try await SQLiteDatabase.open(path: path, busyTimeoutMillis: sqliteBusyTimeoutMillis)
            try await Migrator(database: database).migrate()
            return (SQLiteStore(database: database), database, "sqlite:///" + path)
        case .postgres:
            let url = try await TestDatabases.freshPostgresURL()
            let database = try await PGDatabase.connect(conninfo: url, size: poolSize, waitMillis: 30_000)
            try await Migrator(database: database).migrate()
            return (PGStore(database: database), database, url)
        }
    }
}
