import CLibPQ
import Core
import Foundation
import SQLStore

/// One libpq connection, with its prepared statements.
///
/// `@unchecked Sendable`: the pool lends a connection to exactly one closure at a time, which runs
/// on one of the pool's threads, so the handle is never used concurrently.
final class PGConnection: SQLConnection, @unchecked Sendable {
    let dialect = SQLDialect.postgres
    private let handle: OpaquePointer
    private var prepared: [String: String] = [:]
    /// False behind a transaction-mode pooler: a named statement prepared in one transaction may
    /// be on another server connection in the next, so each is sent unnamed (parsed every time).
    private let preparesStatements: Bool

    /// Connects, giving up after `connectTimeoutSeconds` unless the connection string sets its own.
    init(conninfo: String, preparesStatements: Bool = true, connectTimeoutSeconds: Int = 10) throws(SQLError) {
        self.preparesStatements = preparesStatements
        guard let conn = Self.connect(conninfo, connectTimeoutSeconds: connectTimeoutSeconds) else {
            throw .connectionFailed("out of memory")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            defer { PQfinish(conn) }
            throw .connectionFailed(Self.connectFailure(conn, conninfo: conninfo))
        }
        self.handle = conn
        // libpq prints server NOTICEs to stderr by default; they are not for operators' terminals.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
    }

    deinit { PQfinish(handle) }

    /// `PQconnectdbParams` with lmsvr's defaults under the operator's string. Keywords are
    /// processed in order, later ones override: our defaults first, then the operator's string
    /// (URI or key=value) expanded through `dbname`. TCP keepalives and a user timeout, so a
    /// connection to a server that vanished without a word (a partition, a dead host) fails in
    /// about half a minute instead of hanging. The caller checks the status.
    static func connect(_ conninfo: String, connectTimeoutSeconds: Int) -> OpaquePointer? {
        let keywords = ["connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                        "tcp_user_timeout", "dbname"]
        let values = [String(connectTimeoutSeconds), "1", "15", "5", "3", "30000", conninfo]
        return withCStrings(keywords) { k in
            withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
    }

    /// Whether the connection is still usable; a broken one is discarded by the pool.
    var isHealthy: Bool { PQstatus(handle) == CONNECTION_OK }

    /// Whether the connection is idle (not inside a transaction), as it must be when returned.
    var isIdle: Bool { PQtransactionStatus(handle) == PQTRANS_IDLE }

    func execute(_ sql: String, _ binds: [SQLValue]) throws(SQLError) -> [SQLRow] {
        let result: OpaquePointer?
        if preparesStatements {
            let name = try preparedName(for: sql)
            result = withParameters(binds) { params in PQexecPrepared(handle, name, Int32(binds.count), params, nil, nil, 0) }
        } else {
            result = withParameters(binds) { params in PQexecParams(handle, sql, Int32(binds.count), nil, params, nil, nil, 0) }
        }
        defer { PQclear(result) }
        try check(result)
        return rows(of: result)
    }

    /// Streams a query's rows through a cursor, 10,000 rows a round trip: a ledger of millions of
    /// rows exports in constant memory without paying for one result (and its allocations) per
    /// row, as single-row mode does. The next batch is asked for before this one is handed out,
    /// so the server reads it while the caller writes this one. Runs in its own transaction unless
    /// one is open; the cursor is gone when that ends, also on an error.
    func forEachRow(_ sql: String, _ binds: [SQLValue], _ body: (SQLRow) throws -> Void) throws {
        let ownTransaction = PQtransactionStatus(handle) == PQTRANS_IDLE
        if ownTransaction { try executeScript("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY") }
        var fetching = false
        do {
            let declared = withParameters(binds) { params in
                PQexecParams(handle, "DECLARE lmsvr_rows NO SCROLL CURSOR FOR " + sql, Int32(binds.count), nil, params,
                             nil, nil, 0)
            }
            defer { PQclear(declared) }
            try check(declared)
            try sendFetch()
            fetching = true
            while true {
                let batch = try awaitFetch()
                fetching = false
                defer { PQclear(batch) }
                let count = PQntuples(batch)
                if count == Self.fetchSize {
                    try sendFetch()
                    fetching = true
                }
                let integers = integerColumns(of: batch)
                for r in 0..<count { try body(row(r, of: batch, integers: integers)) }
                if count < Self.fetchSize { break }
            }
            try executeScript(ownTransaction ? "COMMIT" : "CLOSE lmsvr_rows")
        } catch {
            // A fetch still under way is read to its end first: libpq takes no new command before.
            if fetching { while let result = PQgetResult(handle) { PQclear(result) } }
            if ownTransaction, isHealthy { PQclear(PQexec(handle, "ROLLBACK")) }
            throw error
        }
    }

    private static let fetchSize: Int32 = 10_000

    private func sendFetch() throws(SQLError) {
        guard PQsendQuery(handle, "FETCH FORWARD \(Self.fetchSize) FROM lmsvr_rows") == 1 else { throw failure(nil) }
    }

    /// The fetch's result; libpq's end-of-command marker (a null result) is read too.
    private func awaitFetch() throws(SQLError) -> OpaquePointer {
        guard let result = PQgetResult(handle) else { throw failure(nil) }
        while let extra = PQgetResult(handle) { PQclear(extra) }
        do { try check(result) } catch {
            PQclear(result)
            throw error
        }
        return result
    }

    func executeScript(_ sql: String) throws(SQLError) {
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        try check(result)
    }

    func notifyChange(_ payload: String) throws(SQLError) {
        try execute("SELECT pg_notify($1, $2)", .text(ChangeNotice.channel), .text(payload))
    }

    // MARK: Helpers

    private func preparedName(for sql: String) throws(SQLError) -> String {
        if let name = prepared[sql] { return name }
        let name = "lmsvr_\(prepared.count + 1)"
        let result = PQprepare(handle, name, sql, 0, nil)
        defer { PQclear(result) }
        try check(result)
        prepared[sql] = name
        return name
    }

    private func check(_ result: OpaquePointer?) throws(SQLError) {
        let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_SINGLE_TUPLE
            || status == PGRES_EMPTY_QUERY {
            return
        }
        throw failure(result)
    }

    private func failure(_ result: OpaquePointer?) -> SQLError {
        let message: String
        if let result, let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))) {
            message = String(cString: primary)
        } else {
            message = Self.firstLine(String(cString: PQerrorMessage(handle)))
        }
        let state = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) } ?? ""
        // Connection failures, a server shutting down or out of resources (class 53), a read-only
        // server (a failover in progress) and cancelled statements all mean "not now": the caller
        // may try again later (the settle journal does).
        if PQstatus(handle) != CONNECTION_OK || state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57")
            || state.hasPrefix("58") || state == "25006" {
            return .connectionFailed(message.isEmpty ? "connection lost" : message)
        }
        switch state {
        case "23505": return .uniqueViolation(message)
        case "26000", "42P05":
            // A named statement missing, or already there: this connection's transactions land on
            // different server sessions, which is a transaction-mode pooler.
            return .other("\(message) (SQLSTATE \(state)); behind a transaction-mode pooler, set DATABASE_POOL_MODE=transaction")
        case "40001", "40P01", "55P03": return .retryable(message)
        default: return .other(state.isEmpty ? message : "\(message) (SQLSTATE \(state))")
        }
    }

    private func rows(of result: OpaquePointer?) -> [SQLRow] {
        guard let result else { return [] }
        let count = PQntuples(result)
        guard count > 0 else { return [] }
        let integers = integerColumns(of: result)
        return (0..<count).map { row($0, of: result, integers: integers) }
    }

    /// Which columns are int2/int4/int8, read as integers; the rest is text.
    private func integerColumns(of result: OpaquePointer) -> [Bool] {
        (0..<PQnfields(result)).map { [20, 21, 23].contains(PQftype(result, $0)) }
    }

    private func row(_ r: Int32, of result: OpaquePointer, integers: [Bool]) -> SQLRow {
        var values: [SQLValue] = []
        values.reserveCapacity(integers.count)
        for c in 0..<Int32(integers.count) {
            guard PQgetisnull(result, r, c) == 0, let value = PQgetvalue(result, r, c) else {
                values.append(.null)
                continue
            }
            let bytes = UnsafeRawBufferPointer(start: value, count: Int(PQgetlength(result, r, c)))
            if integers[Int(c)], let v = Self.integer(bytes) {
                values.append(.int(v))
            } else {
                values.append(.text(String(decoding: bytes, as: UTF8.self)))
            }
        }
        return SQLRow(values: values)
    }

    /// An integer column's text (`-?[0-9]+`) without making a `String` of it first.
    private static func integer(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        var digits = bytes[...]
        let negative = digits.first == UInt8(ascii: "-")
        if negative { digits = digits.dropFirst() }
        guard !digits.isEmpty else { return nil }
        var value: Int64 = 0
        for byte in digits {
            guard byte &- UInt8(ascii: "0") < 10 else { return nil }
            // Accumulated negatively so that Int64.min parses too.
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = times10.subtractingReportingOverflow(Int64(byte &- UInt8(ascii: "0")))
            guard !o1, !o2 else { return nil }
            value = next
        }
        if negative { return value }
        return value == .min ? nil : -value
    }

    /// Why a connection failed, safe to log: libpq's message without the password. libpq may
    /// quote the connection string it could not parse (a `%` in a password not written `%25`
    /// yields `invalid percent-encoded token: "secret"`), where nothing marks the password as
    /// one, so an unparsable string gets a fixed text; otherwise the password's text (as written
    /// and percent-decoded) is masked wherever it appears, then URLs and `password=` as usual.
    static func connectFailure(_ connection: OpaquePointer, conninfo: String) -> String {
        var parseError: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &parseError) else {
            PQfreemem(parseError)
            return "the connection string cannot be parsed (write special characters in the password percent-encoded: % as %25)"
        }
        defer { PQconninfoFree(options) }
        var message = firstLine(String(cString: PQerrorMessage(connection)))
        var option = options
        while let keyword = option.pointee.keyword {
            if String(cString: keyword) == "password", let value = option.pointee.val {
                let password = String(cString: value)
                for form in Set([password, password.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? password])
                where !form.isEmpty {
                    message = message.replacingOccurrences(of: form, with: "***")
                }
            }
            option += 1
        }
        return DatabaseLocation.redact(message)
    }

    /// The lines of a libpq message joined into one, empty ones dropped.
    static func firstLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
            .joined(separator: "; ")
    }
}

/// Calls `body` with the values as NUL-terminated C strings (NULL for SQL NULL), in text format.
private func withParameters<T>(_ binds: [SQLValue], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
    let owned: [UnsafeMutablePointer<CChar>?] = binds.map { value in
        switch value {
        case .null: nil
        case .int(let v): strdup(String(v))
        case .text(let s): strdup(s)
        }
    }
    defer { for pointer in owned { free(pointer) } }
    return body(owned.map { $0.map { UnsafePointer($0) } })
}

private func withCStrings<T>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
    let owned = strings.map { strdup($0) }
    defer { for pointer in owned { free(pointer) } }
    return body(owned.map { $0.map { UnsafePointer($0) } } + [nil])
}

extension Substring {
    func trimmingCharacters() -> String {
        String(self.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

#if canImport(Glibc)
import Glibc
#endif
