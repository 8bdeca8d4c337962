import Core
import Migrate
import PGStore
import SQLStore
import SQLiteStore

/// Opens the configured store. SQLite is created and migrated on the spot (zero setup); on
/// PostgreSQL only `lmsvr migrate` changes the schema, so a schema that is behind is refused.
enum StoreOpener {
    static func open(_ configuration: Configuration, migrateSQLite: Bool = true) async throws -> any Store {
        switch configuration.database {
        case .sqlite(let path):
            let database = try await SQLiteDatabase.open(path: path, fullSync: configuration.sqliteSynchronous == .full,
                                                 busyTimeoutMillis: configuration.sqliteBusyTimeoutMillis)
            do {
                if migrateSQLite { try await Migrator(database: database).migrate() }
                else { try await Migrator(database: database).requireCurrent() }
            } catch {
                await database.shutdown()
                throw error
            }
            return SQLiteStore(database: database)
        case .postgres(let conninfo):
            let database = try await PGDatabase.connect(conninfo: conninfo, size: configuration.databasePoolSize,
                                                        waitMillis: configuration.databasePoolWaitMillis,
                                                        preparesStatements: configuration.databasePoolMode == .session)
            do {
                try await Migrator(database: database).requireCurrent()
            } catch {
                await database.shutdown()
                throw error
            }
            return PGStore(database: database)
        }
    }

    /// Runs `body` with the store and closes it afterwards, whatever happens.
    static func with<T>(_ configuration: Configuration, _ body: (any Store) async throws -> T) async throws -> T {
        let store = try await open(configuration)
        do {
            let result = try await body(store)
            await store.close()
            return result
        } catch {
            await store.close()
            throw error
        }
    }
}
