import Core
import SQLStore

/// One numbered schema change, as shipped inside the binary.
public struct Migration: Sendable, Hashable {
    public var version: Int
    public var name: String
    public var sql: String
    /// SHA-256 of the file, recorded when applied so later edits are caught.
    public var checksum: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
        self.checksum = sha256Hex(sql)
    }
}

/// The migrations compiled into this binary, per dialect (same numbering in both).
public enum MigrationCatalog {
    public static func migrations(for dialect: SQLDialect) -> [Migration] {
        let files = dialect == .sqlite ? sqliteFiles : postgresFiles
        return files.map { file in
            let stem = file.file.dropLast(4) // ".sql"
            let version = Int(stem.prefix(4))!
            return Migration(version: version, name: String(stem), sql: file.sql + "\n")
        }
    }
}

/// Where one migration stands in a database.
public struct MigrationState: Sendable, Codable, Hashable {
    public enum State: String, Sendable, Codable { case applied, pending, modified }
    public var version: Int
    public var name: String
    public var state: State
    public var appliedAtMicros: Int64?
}

/// Why migrating cannot go on.
public enum MigrationError: Error, CustomStringConvertible {
    case modified(name: String)
    case unknownApplied(version: Int)
    case failed(name: String, reason: String)

    public var description: String {
        switch self {
        case .modified(let name):
            "migration \(name) was edited after it was applied (checksum mismatch); restore the original file and add a new migration instead"
        case .unknownApplied(let version):
            "the database has migration \(version) applied, which this lmsvr does not know; run a newer lmsvr"
        case .failed(let name, let reason):
            "migration \(name) failed and was rolled back: \(reason)"
        }
    }
}
