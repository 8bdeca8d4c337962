/// The SQL dialects lmsvr speaks. The schema and statements are shared; only a few details differ.
public enum SQLDialect: Sendable {
    case sqlite
    case postgres
}

/// One open database connection. Blocking: only ever used on a store thread, never on an event
/// loop, and never by two threads at once (the pool lends it to one closure at a time).
///
/// Statements use `$1`, `$2`, … placeholders on both backends.
public protocol SQLConnection: AnyObject {
    var dialect: SQLDialect { get }
    /// Runs one statement with bound parameters and returns all its rows.
    @discardableResult
    func execute(_ sql: String, _ binds: [SQLValue]) throws(SQLError) -> [SQLRow]
    /// Runs one statement and hands rows to `body` one at a time, without collecting them.
    func forEachRow(_ sql: String, _ binds: [SQLValue], _ body: (SQLRow) throws -> Void) throws
    /// Runs several statements without parameters (a migration file).
    func executeScript(_ sql: String) throws(SQLError)
    /// Tells other processes that something changed (PostgreSQL NOTIFY, inside the current
    /// transaction so it is delivered only on commit). A no-op where nobody can listen.
    func notifyChange(_ payload: String) throws(SQLError)
}

extension SQLConnection {
    @discardableResult
    public func execute(_ sql: String, _ binds: SQLValue...) throws(SQLError) -> [SQLRow] {
        try execute(sql, binds)
    }

    /// Runs `body` in a write transaction: committed when it returns, rolled back when it throws.
    ///
    /// SQLite starts with `BEGIN IMMEDIATE` so the write lock is taken up front (no lock-upgrade
    /// deadlocks between processes); PostgreSQL uses READ COMMITTED with row locks taken by the
    /// statements themselves.
    public func inTransaction<T>(_ body: (Self) throws -> T) throws -> T {
        try executeScript(dialect == .sqlite ? "BEGIN IMMEDIATE" : "BEGIN")
        do {
            let result = try body(self)
            try executeScript("COMMIT")
            return result
        } catch {
            try? executeScript("ROLLBACK")
            throw error
        }
    }
}
