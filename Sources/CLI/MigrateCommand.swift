import ArgumentParser
import Core
import Migrate
import PGStore
import SQLStore
import SQLiteStore

struct Migrate: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending schema migrations (safe to run concurrently), or list them with --status.")

    @Flag(help: "List applied and pending migrations without changing anything.") var status = false
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let configuration = try database.configuration()
        switch configuration.database {
        case .sqlite(let path):
            try await run(on: try await SQLiteDatabase.open(path: path, fullSync: configuration.sqliteSynchronous == .full,
                                                 busyTimeoutMillis: configuration.sqliteBusyTimeoutMillis))
        case .postgres:
            // The advisory lock that keeps concurrent migrations apart lives in a session, so
            // the migration runs on the server itself, never through a transaction-mode pooler.
            if !status, let missing = configuration.missingDirectURL {
                throw ConfigurationError(variable: "DATABASE_DIRECT_URL", message: missing)
            }
            try await run(on: try await PGDatabase.connect(conninfo: configuration.directConninfo!, size: 1, waitMillis: 60_000,
                                                           preparesStatements: configuration.databaseDirectURL != nil
                                                               || configuration.databasePoolMode == .session))
        }
    }

    /// Runs the migrator on `database` and closes it, whatever happens.
    private func run<D: SQLDatabase>(on database: D) async throws {
        do {
            try await run(Migrator(database: database))
        } catch {
            await database.shutdown()
            throw error
        }
        await database.shutdown()
    }

    private func run<D: SQLDatabase>(_ migrator: Migrator<D>) async throws {
        if status {
            let states = try await migrator.status()
            if output.json {
                return try Output.printJSON(states.map {
                    MigrationStateView(version: $0.version, name: $0.name, state: $0.state.rawValue,
                         applied_at: $0.appliedAtMicros.map { Timestamp.iso8601(micros: $0) })
                })
            }
            Output.printTable(["VERSION", "NAME", "STATE", "APPLIED (UTC)"], states.map {
                [String(format4($0.version)), $0.name, $0.state.rawValue, $0.appliedAtMicros.map { Timestamp.short(micros: $0) } ?? ""]
            })
            return
        }
        let applied = try await migrator.migrate()
        if output.json {
            return try Output.printJSON(MigrationRunView(applied: applied.map(\.name), current: true))
        }
        if applied.isEmpty {
            print("Schema is up to date; nothing to apply.")
        } else {
            for m in applied { print("Applied \(m.name)") }
        }
    }
}

private func format4(_ n: Int) -> String {
    let s = String(n)
    return String(repeating: "0", count: max(0, 4 - s.count)) + s
}

struct MigrationStateView: Encodable {
    var version: Int
    var name: String
    var state: String
    var applied_at: String?
}

struct MigrationRunView: Encodable {
    var applied: [String]
    var current: Bool
}
