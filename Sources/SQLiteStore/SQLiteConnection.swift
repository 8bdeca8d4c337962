import CSQLite
import Foundation
import SQLStore

/// One SQLite connection in WAL mode with a busy timeout (other processes, such as the CLI next
/// to a running server, wait for the write lock instead of failing).
///
/// `@unchecked Sendable`: the handle is only touched by the single thread of its
/// `SQLiteDatabase`'s pool, one closure at a time, so there is never concurrent access.
final class SQLiteConnection: SQLConnection, @unchecked Sendable {
    let dialect = SQLDialect.sqlite
    private let handle: OpaquePointer
    /// Prepared once per SQL text, with what each `$n` placeholder binds (read once, not per call).
    private var statements: [String: PreparedStatement] = [:]
    /// FULL unless the operator chose NORMAL for every commit.
    private let fullSync: Bool
    /// What `PRAGMA synchronous` is set to now.
    private var syncingEveryCommit: Bool

    /// `synchronous`: `FULL` fsyncs every commit, `NORMAL` only WAL checkpoints.
    /// `busyTimeoutMillis`: how long a writer waits for another process's lock before giving up.
    init(path: String, fullSync: Bool = true, busyTimeoutMillis: Int = 10_000) throws(SQLError) {
        _ = Self.memoryStatisticsOff
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw .connectionFailed("cannot create directory \(directory) for the SQLite database: \(error.localizedDescription)")
            }
        }
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw .connectionFailed("cannot open SQLite database \(path): \(message)")
        }
        self.handle = db
        self.fullSync = fullSync
        self.syncingEveryCommit = fullSync
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, Int32(clamping: busyTimeoutMillis))
        // WAL lets the CLI read while the server writes; FULL sync (the default) makes every
        // settled charge durable before the response is sent.
        let level = fullSync ? "FULL" : "NORMAL"
        try executeScript("PRAGMA journal_mode = WAL; PRAGMA synchronous = \(level); PRAGMA foreign_keys = ON;")
    }

    /// Once per process, before the first open: lmsvr never reads SQLite's memory statistics,
    /// and keeping them costs a global mutex around every allocation SQLite makes.
    private static let memoryStatisticsOff: Void = { _ = lmsvr_sqlite3_disable_memory_statistics() }()

    deinit {
        for prepared in statements.values { sqlite3_finalize(prepared.handle) }
        sqlite3_close_v2(handle)
    }

    func execute(_ sql: String, _ binds: [SQLValue]) throws(SQLError) -> [SQLRow] {
        let prepared = try cachedStatement(sql)
        let statement = prepared.handle
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        try bind(binds, to: statement, numbers: prepared.parameterNumbers)
        var rows: [SQLRow] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_ROW {
                rows.append(readRow(statement))
            } else if rc == SQLITE_DONE {
                return rows
            } else {
                throw error(rc)
            }
        }
    }

    func forEachRow(_ sql: String, _ binds: [SQLValue], _ body: (SQLRow) throws -> Void) throws {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc) }
        defer { sqlite3_finalize(statement) }
        try bind(binds, to: statement, numbers: try Self.parameterNumbers(of: statement))
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_ROW {
                try body(readRow(statement))
            } else if rc == SQLITE_DONE {
                return
            } else {
                throw error(rc)
            }
        }
    }

    func executeScript(_ sql: String) throws(SQLError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(message)
            throw classify(rc, text)
        }
    }

    /// Nobody listens on SQLite: servers notice other processes' commits through
    /// Whether a transaction is open. SQLite ends one by itself on some errors (a full disk,
    /// an I/O error, no memory), whatever the statements after it expect.
    var isInTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// `PRAGMA data_version` (`SQLiteChangeWatcher`).
    func notifyChange(_ payload: String) throws(SQLError) {}

    /// Switches between FULL (fsync at commit) and NORMAL (the WAL is synced by the next FULL
    /// commit or checkpoint) around a transaction. In WAL mode a NORMAL commit survives a crash
    /// of this process, not a power loss.
    func setCommitDurability(_ durable: Bool) throws(SQLError) {
        let wanted = durable && fullSync
        guard wanted != syncingEveryCommit else { return }
        _ = try execute(wanted ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", [])
        syncingEveryCommit = wanted
    }

    /// Changes to the file committed by other connections (other processes) since this
    /// connection last asked; its own commits do not count.
    func dataVersion() throws(SQLError) -> Int64 {
        guard let row = try execute("PRAGMA data_version", []).first else { throw .other("PRAGMA data_version returned nothing") }
        return try row.int(0)
    }

    // MARK: Helpers

    private func cachedStatement(_ sql: String) throws(SQLError) -> PreparedStatement {
        if let prepared = statements[sql] { return prepared }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc) }
        do {
            let prepared = PreparedStatement(handle: statement, parameterNumbers: try Self.parameterNumbers(of: statement))
            statements[sql] = prepared
            return prepared
        } catch {
            sqlite3_finalize(statement)
            throw error
        }
    }

    /// For each of the statement's parameters (SQLite counts them from 1, in order of first
    /// appearance), the `n` of its `$n` name: the statements bind by name, so the order of the
    /// placeholders in the SQL text does not matter.
    private static func parameterNumbers(of statement: OpaquePointer) throws(SQLError) -> [Int] {
        let count = sqlite3_bind_parameter_count(statement)
        guard count > 0 else { return [] }
        return try (1...count).map { (index: Int32) throws(SQLError) -> Int in
            guard let cName = sqlite3_bind_parameter_name(statement, index), cName[0] == CChar(UInt8(ascii: "$")),
                  let number = Int(String(cString: cName + 1)), number >= 1
            else { throw .other("statement parameter \(index) is not named $1, $2, ...") }
            return number
        }
    }

    private func bind(_ binds: [SQLValue], to statement: OpaquePointer, numbers: [Int]) throws(SQLError) {
        for (offset, number) in numbers.enumerated() {
            guard number <= binds.count else { throw .other("statement parameter $\(number) has no value") }
            let index = Int32(offset + 1)
            let rc: Int32
            switch binds[number - 1] {
            case .null: rc = sqlite3_bind_null(statement, index)
            case .int(let v): rc = sqlite3_bind_int64(statement, index, v)
            case .text(let s): rc = Self.bindText(s, at: index, to: statement)
            }
            guard rc == SQLITE_OK else { throw error(rc) }
        }
    }

    /// Binds a string's UTF-8 bytes as they are stored (no NUL-terminated copy: passing the
    /// String where SQLite takes a C string copied it into a new array on every bind).
    private static func bindText(_ text: String, at index: Int32, to statement: OpaquePointer) -> Int32 {
        var text = text
        return text.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { chars in
                // An empty string has no address, and a NULL pointer would bind SQL NULL, not ''.
                sqlite3_bind_text(statement, index, chars.baseAddress ?? emptyText, Int32(chars.count), transient)
            }
        }
    }

    /// A static, never written C string `""`.
    nonisolated(unsafe) private static let emptyText = UnsafeRawPointer(("" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)

    private func readRow(_ statement: OpaquePointer) -> SQLRow {
        let columns = sqlite3_column_count(statement)
        var values: [SQLValue] = []
        values.reserveCapacity(Int(columns))
        for i in 0..<columns {
            switch sqlite3_column_type(statement, i) {
            case SQLITE_NULL: values.append(.null)
            case SQLITE_INTEGER: values.append(.int(sqlite3_column_int64(statement, i)))
            default:
                if let text = sqlite3_column_text(statement, i) {
                    values.append(.text(String(cString: text)))
                } else {
                    values.append(.null)
                }
            }
        }
        return SQLRow(values: values)
    }

    private func error(_ rc: Int32) -> SQLError {
        classify(rc, String(cString: sqlite3_errmsg(handle)))
    }

    private func classify(_ rc: Int32, _ message: String) -> SQLError {
        switch rc {
        // Extended codes are macros Swift cannot import: SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY.
        case SQLITE_CONSTRAINT | (8 << 8), SQLITE_CONSTRAINT | (6 << 8): .uniqueViolation(message)
        case let code where code & 0xff == SQLITE_BUSY || code & 0xff == SQLITE_LOCKED: .retryable(message)
        // Not now: the file cannot be opened or written (a full or read-only disk included).
        case let code where [SQLITE_CANTOPEN, SQLITE_NOTADB, SQLITE_IOERR, SQLITE_FULL, SQLITE_READONLY].contains(code & 0xff):
            .connectionFailed(message)
        default: .other(message)
        }
    }

    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}

/// A statement prepared once and kept for the connection's life, with the `$n` each of its
/// parameters binds.
private struct PreparedStatement {
    let handle: OpaquePointer
    let parameterNumbers: [Int]
}
