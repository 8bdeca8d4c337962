import Foundation
import SQLStore
import SQLiteStore

/// A second, independent connection to a SQLite file, standing in for another process.
struct SQLiteTestConnection {
    let database: SQLiteDatabase

    static func open(url: String) async throws -> SQLiteTestConnection {
        SQLiteTestConnection(database: try await SQLiteDatabase.open(path: String(url.dropFirst("sqlite:///".count))))
    }

    /// Takes the write lock now and gives it back after `seconds`.
    func holdWriteLock(seconds: Double) async throws {
        _ = try await database.withConnection { try $0.executeScript("BEGIN IMMEDIATE") }
        let database = self.database
        Task {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            _ = try await database.withConnection { try $0.executeScript("COMMIT") }
        }
    }

    func release() async throws {
        await database.shutdown()
    }
}
